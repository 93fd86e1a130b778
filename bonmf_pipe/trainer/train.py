"""The ``train`` stage: one run from settings to checkpoint, predictions and test errors.

Reads top to bottom like nanoGPT's train.py: resolve the settings, load once, then per
epoch (learning rate, forward/backward/step, validate, checkpoint, log), then the kept
weights predict the test rows. Ranking metrics are the evaluation stage's job: callers
that want them (the CLI's ``train``) run ``evaluation.evaluate_run`` afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Collection
from pathlib import Path

from bonmf_pipe import runtime
from bonmf_pipe.featurestore import runs as layout
from bonmf_pipe.featurestore.store import Store
from bonmf_pipe.progress import ProgressCallback, Reporter
from bonmf_pipe.trainer import checkpoint, distributed, runs
from bonmf_pipe.trainer.epoch import EarlyStop, train_epoch, valid_rmse
from bonmf_pipe.trainer.predictions import write_predictions
from bonmf_pipe.trainer.settings import TrainSettings
from bonmf_pipe.trainer.setup import new_model, new_optimizer, prepare

# on_epoch(epoch, valid RMSE or None) -> True to stop now (e.g. an Optuna pruner).
EpochHook = Callable[[int, "float | None"], bool]


def lr_at(epoch: int, s: TrainSettings) -> float:
    """The learning rate of ``epoch`` (1-based): pure, so a resumed run gets the same one.

    constant: ``s.lr``; cosine: from ``s.lr`` at epoch 1 down to ``s.lr / 10`` at the last.
    """
    if s.lr_schedule == "constant":
        return s.lr
    last = max((s.epochs or 1) - 1, 1)
    floor = s.lr / 10
    return floor + (s.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(epoch - 1, last) / last))


def train(
    store: Store,
    settings: TrainSettings,
    progress: ProgressCallback | None = None,
    *,
    resume: str | None = None,
    on_epoch: EpochHook | None = None,
    given: Collection[str] | None = None,
) -> runs.RunResult:
    """Train one model (``settings.model``) on the split ``settings.split`` and record the run.

    ``resume`` (a run id or prefix) continues that run from its last completed epoch with its
    own settings; ``settings`` may then only repeat them (a contradiction is a ConfigError;
    ``given`` names the fields the caller set on purpose, default: those that differ from
    the ``TrainSettings`` defaults). ``on_epoch(epoch, valid_rmse)`` is called after each
    epoch's checkpoint; returning True ends training there (the run still finishes: best
    weights, test predictions). A non-finite loss stops the run with a ConfigError and
    status ``failed``; an interrupt leaves status ``killed``.

    Under ``torchrun`` (WORLD_SIZE > 1) every process calls this with the same arguments: the
    model trains under DistributedDataParallel (``trainer.distributed``) on each rank's share
    of every global batch of ``batch_size``; rank 0 alone writes the run folder, checkpoints
    and predictions, and every rank returns the same ``RunResult``. ``resume`` works with any
    number of processes (the checkpoint holds the unwrapped model).
    """
    started = time.perf_counter()
    wanted = frozenset(given) if given is not None else None
    # -- resolve the settings (a resumed run keeps its own) ----------------------------------
    ckpt_tensors, meta = None, None
    if resume is not None:
        folder = layout.run_dir(store, resume)
        ckpt_tensors, meta = checkpoint.load_checkpoint(folder)
        recorded = TrainSettings.from_dict(meta["settings"])
        runs.check_resume(folder.name, recorded, settings, wanted)
        settings = runs.resumed_settings(recorded, settings, wanted)
        if settings.threads is None:  # the thread count the run started with (sums depend on it)
            settings = dataclasses.replace(settings, threads=meta["config"].get("threads"))
        # the batch size and lr the run resolved for its device: a resume elsewhere keeps them
        ran = meta["config"].get("effective", {})
        settings = dataclasses.replace(settings, **{k: ran[k] for k in ("batch_size", "lr")
                                                    if getattr(settings, k) is None and ran.get(k) is not None})
    s = settings.effective()
    # -- under torchrun: join the process group; rank 0 alone reports and writes ---------------
    with distributed.session(runtime.resolve_device(s.device)) as dist, runtime.deterministic(s.threads):
        if not dist.is_main:
            progress = None
        report = Reporter(progress)
        if resume is not None:
            run_id = folder.name
        else:
            run_id = dist.from_main(layout.new_run_id(settings.name or settings.model))
            folder = store.runs_dir / run_id
        # -- load once: split, id maps, side vectors, ratings; model and optimiser ---------
        ctx = prepare(store, s, progress, ckpt_tensors, dist)
        fitted = settings.effective(ctx.n_train)  # the default batch size of a GPU grows with the split
        if fitted != s:
            ctx.settings = s = fitted
        model = new_model(ctx)
        opt = new_optimizer(model, s)
        early, rows, start = EarlyStop(), [], 1
        if meta is not None:
            early, rows, start = checkpoint.restore(folder, model, opt, ckpt_tensors, meta, writes=dist.is_main)
            ckpt_tensors = None  # the model and the optimiser hold their own copies now
            config = meta["config"]
            config.update(device=str(ctx.device), runtime=runtime.describe(ctx.device, s.threads),
                          distributed=dist.describe())
        else:
            config = runs.run_config(run_id, settings, ctx, time.time())
            config["distributed"] = dist.describe()
        # everything is validated: only now does the run get its folder (status "running")
        if dist.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            runs.mark(folder, config, "running")
        try:
            result = _epochs_and_finish(ctx, model, opt, early, rows, start, folder, config, report, on_epoch)
        except KeyboardInterrupt:
            if dist.is_main:
                runs.mark(folder, config, "killed", "interrupted (KeyboardInterrupt); resume with --resume")
            raise
        except Exception as exc:
            if dist.is_main:
                runs.mark(folder, config, "failed", str(exc) or type(exc).__name__)
            raise
    result.seconds = time.perf_counter() - started
    return result


def _epochs_and_finish(ctx, model, opt, early: EarlyStop, rows: list[dict], start: int, folder: Path, config: dict,
                       report: Reporter, on_epoch: EpochHook | None) -> runs.RunResult:
    s, dist = ctx.settings, ctx.dist
    run_id = config["run_id"]
    started = time.perf_counter()
    net = dist.wrap(model)  # DDP under torchrun (gradients all-reduced); the model itself otherwise
    if start > 1:
        report.note(f"resuming run {run_id} at epoch {start}")
    report.note(
        f"run {run_id}: {s.model} features={','.join(s.features) or 'none'} on {ctx.device} ({s.threads} threads), "
        f"{ctx.n_train:,} train / {ctx.n_valid:,} valid ratings, {ctx.mode} mode"
        + (f", {dist.size} processes ({dist.backend})" if dist.active else "")
    )
    stopped_by = None
    for epoch in range(start, s.epochs + 1):
        if early.should_stop(s.early_stopping_patience):
            stopped_by = "early_stopping"
            break
        # -- learning rate of this epoch --------------------------------------------------
        lr = lr_at(epoch, s)
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lr / s.lr
        # -- forward, backward, step over the shuffled training rows -----------------------
        task = f"epoch {epoch}/{s.epochs}"
        report.begin(task, total=ctx.n_train, unit="ratings")
        t0 = time.perf_counter()
        loss = train_epoch(ctx, net, opt, epoch, report, task)
        seconds = time.perf_counter() - t0
        # -- validate, checkpoint, log ---------------------------------------------------------
        rmse = valid_rmse(ctx, model)
        report.end(task)
        improved = early.update(epoch, rmse)
        rows.append({"run_id": run_id, "epoch": epoch, "train_loss": loss, "valid_rmse": rmse, "lr": lr,
                     "seconds": seconds, "ratings_per_s": ctx.n_train / max(seconds, 1e-9)})
        if dist.is_main:  # the checkpoint holds the unwrapped model: resumable with any world size
            layout.write_epochs(folder, rows)
            if improved and s.early_stopping_patience > 0:  # before the checkpoint that names it best
                checkpoint.save_best(folder, model)
            checkpoint.save(folder, ctx, model, opt, epoch, early, rows, config)
        report.note(f"epoch {epoch}: train MSE {loss:.4f}" + (f", valid RMSE {rmse:.4f}" if rmse is not None else ""))
        # -- the caller's hook (pruning; rank 0 calls it and its answer holds for all) ------------
        if on_epoch is not None and dist.from_main(on_epoch(epoch, rmse) if dist.is_main else None):
            stopped_by = "on_epoch"
            report.note(f"stopped after epoch {epoch} by the on_epoch hook")
            break
    # -- finish: the kept weights predict the test rows; record the run -----------------------------
    last_epoch = rows[-1]["epoch"] if rows else 0
    kept = early.best_epoch if s.early_stopping_patience > 0 else last_epoch  # without early stopping: the last
    _drop_gradients(opt)
    if dist.is_main:  # the kept weights into the final checkpoint; then the optimiser's moments go too
        if kept != last_epoch:
            checkpoint.load_best(folder, model)
        checkpoint.save(folder, ctx, model, opt, last_epoch, early, rows, config)
    opt.state.clear()
    test = None
    if dist.is_main:  # rank 0 alone scores the test rows and writes; the others wait for its figures
        test = write_predictions(ctx, model, folder, run_id)
        config.update(best_epoch=kept, epochs_run=last_epoch, stopped_by=stopped_by, test=test,
                      seconds=config.get("seconds", 0.0) + time.perf_counter() - started)
        runs.mark(folder, config, "done")
    test = dist.from_main(test)
    report.note(f"test RMSE {test['rmse']:.4f}, MAE {test['mae']:.4f} ({test['rows']:,} ratings); weights of epoch {kept}")
    return runs.RunResult(
        run_id=run_id, run_dir=folder, epochs=rows, best_epoch=kept, mode=ctx.mode, test_mse=test["mse"],
        test_rmse=test["rmse"], test_mae=test["mae"], test_rows=test["rows"], stopped_by=stopped_by,
    )


def _drop_gradients(opt) -> None:
    """Free every gradient (kept ones too): training is over, and the test predictions and the
    evaluation after them should not carry a copy of the weights they do not need."""
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = None
