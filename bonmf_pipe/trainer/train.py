"""The ``train`` stage: one run from settings to checkpoint, predictions and metrics."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from bonmf_pipe.featurestore.store import Store, settings_dict
from bonmf_pipe.progress import ProgressCallback, Reporter
from bonmf_pipe.trainer import runs
from bonmf_pipe.trainer.loop import (
    Context,
    new_model,
    new_optimizer,
    prepare,
    settings_from_json,
    train_epoch,
    valid_rmse,
    write_predictions,
)
from bonmf_pipe.trainer.model import Recommender
from bonmf_pipe.trainer.settings import TrainSettings
from bonmf_pipe.trainer.splits import split_counts


@dataclasses.dataclass
class EarlyStop:
    """Best valid RMSE so far, its epoch and weights, and epochs since it improved."""

    best_rmse: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, rmse: float | None, model: Recommender) -> None:
        if rmse is None:
            self.best_epoch = epoch
            return
        if self.best_rmse is None or rmse < self.best_rmse - 1e-7:
            self.best_rmse, self.best_epoch, self.bad_epochs = rmse, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1

    def should_stop(self, patience: int) -> bool:
        return patience > 0 and self.bad_epochs >= patience

    def meta(self) -> dict[str, Any]:
        return {"best_rmse": self.best_rmse, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}


def _config(run_id: str, requested: TrainSettings, ctx: Context, created_at: float) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "name": requested.name,
        "created_at": created_at,
        "status": "running",
        "settings": settings_dict(requested),
        "effective": settings_dict(ctx.settings),
        "split_id": ctx.split_id,
        "split_rows": split_counts(ctx.store, ctx.split_id),
        "seed": ctx.settings.seed,
        "device": str(ctx.device),
        "mode": ctx.mode,
        "n_users": len(ctx.maps.user_ids),
        "n_items": len(ctx.maps.item_ids),
        "n_items_trained": ctx.maps.n_item_embeddings - 1,
        "rating_mean": ctx.mean,
        "rating_range": [ctx.lo, ctx.hi],
        "features": {
            m: {"key": f.key, "dim": f.dim, "items_with_vector": int(f.found[:-1].sum())} for m, f in ctx.sides.items()
        },
        "environment": runs.environment(),
    }


def _checkpoint(folder: Path, ctx: Context, model: Recommender, opt, epoch: int, early: EarlyStop, rows, config) -> None:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if early.best_state is not None:
        tensors.update({f"best/{k}": v for k, v in early.best_state.items()})
    opt_tensors, groups = runs.optimizer_tensors(opt)
    tensors.update(opt_tensors)
    for k in ("user_ids", "item_ids", "item_index"):
        tensors[f"maps/{k}"] = torch.from_numpy(getattr(ctx.maps, k))
    for m, f in ctx.sides.items():
        tensors[f"side/{m}/mean"] = torch.from_numpy(f.mean)
        tensors[f"side/{m}/std"] = torch.from_numpy(f.std)
    meta = {"epoch": epoch, "early": early.meta(), "param_groups": groups, "settings": config["settings"],
            "config": config, "epochs": rows}
    runs.save_checkpoint(folder, tensors, meta)


def _restore(ctx: Context, model: Recommender, opt, tensors: dict, meta: dict) -> tuple[EarlyStop, list[dict], int]:
    """Model, optimiser and early-stopping state of the last completed epoch of a checkpoint."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    runs.restore_optimizer(opt, tensors, meta["param_groups"])
    early = EarlyStop(**meta["early"])
    best = {k[5:]: v.to(ctx.device) for k, v in tensors.items() if k.startswith("best/")}
    early.best_state = best or None
    return early, list(meta["epochs"]), meta["epoch"] + 1


def train(
    store: Store, settings: TrainSettings, progress: ProgressCallback | None = None, *, resume: str | None = None
) -> runs.RunResult:
    """Train one model (``settings.model``) on the split ``settings.split`` and record the run.

    With ``resume`` (a run id), continue that run from its last completed epoch instead; the
    run then ends with the metrics an uninterrupted run would have had.
    """
    report = Reporter(progress)
    started = time.perf_counter()
    ckpt_tensors, meta = None, None
    if resume is not None:
        folder = runs.run_dir(store, resume)
        ckpt_tensors, meta = runs.load_checkpoint(folder)
        settings = settings_from_json(meta["settings"])
        run_id = folder.name
    else:
        run_id = runs.new_run_id(settings.model, settings.name)
        folder = store.runs_dir / run_id
        folder.mkdir(parents=True, exist_ok=False)
    ctx = prepare(store, settings.effective(), progress, ckpt_tensors)
    s = ctx.settings
    config = meta["config"] if meta else _config(run_id, settings, ctx, time.time())
    config["mode"] = ctx.mode
    runs.write_run_config(folder, config)
    model = new_model(ctx)
    opt = new_optimizer(model, s)
    early, rows, start = EarlyStop(), [], 1
    if meta is not None:
        early, rows, start = _restore(ctx, model, opt, ckpt_tensors, meta)
        report.note(f"resuming run {run_id} at epoch {start}")
    report.note(
        f"run {run_id}: {s.model} features={','.join(s.features) or 'none'} on {ctx.device}, "
        f"{ctx.n_train:,} train / {ctx.n_valid:,} valid ratings, {ctx.mode} mode"
    )
    # -- epochs: shuffle, forward/backward, validate, checkpoint --------------------------
    for epoch in range(start, s.epochs + 1):
        if early.should_stop(s.early_stopping_patience):
            break
        task = f"epoch {epoch}/{s.epochs}"
        report.begin(task, total=ctx.n_train, unit="ratings")
        t0 = time.perf_counter()
        loss = train_epoch(ctx, model, opt, epoch, report, task)
        seconds = time.perf_counter() - t0
        rmse = valid_rmse(ctx, model)
        report.end(task)
        early.update(epoch, rmse, model)
        rows.append({"run_id": run_id, "epoch": epoch, "train_loss": loss, "valid_rmse": rmse,
                     "seconds": seconds, "ratings_per_s": ctx.n_train / max(seconds, 1e-9)})
        runs.write_epochs(folder, rows)
        _checkpoint(folder, ctx, model, opt, epoch, early, rows, config)
        report.note(f"epoch {epoch}: train MSE {loss:.4f}" + (f", valid RMSE {rmse:.4f}" if rmse is not None else ""))
    # -- finish: best weights, test predictions, summary, evaluation ------------------------
    if s.early_stopping_patience > 0 and early.best_state is not None:
        model.load_state_dict(early.best_state)  # restore the best epoch (without early stopping: the last)
    test = write_predictions(ctx, model, folder, run_id)
    last_epoch = rows[-1]["epoch"] if rows else 0
    _checkpoint(folder, ctx, model, opt, last_epoch, early, rows, config)
    kept = early.best_epoch if s.early_stopping_patience > 0 else last_epoch
    config.update(status="done", best_epoch=kept, epochs_run=last_epoch, test=test,
                  seconds=time.perf_counter() - started)
    runs.write_run_config(folder, config)
    runs.write_summary(folder, _summary(config))
    report.note(f"test RMSE {test['rmse']:.4f}, MAE {test['mae']:.4f} ({test['rows']:,} ratings); weights of epoch {kept}")
    result = runs.RunResult(
        run_id=run_id, run_dir=folder, epochs=rows, best_epoch=kept, mode=ctx.mode,
        test_mse=test["mse"], test_rmse=test["rmse"], test_mae=test["mae"], test_rows=test["rows"],
        seconds=time.perf_counter() - started,
    )
    result.evaluation = _evaluate(store, run_id, progress)
    return result


def _summary(config: dict) -> dict[str, Any]:
    eff, test = config["effective"], config.get("test", {})
    return {
        "run_id": config["run_id"], "name": config.get("name"), "created_at": config["created_at"],
        "status": config["status"], "model": eff["model"], "features": ",".join(eff["features"]) or "none",
        "paper": eff["paper"], "text_encoder": config["features"].get("text", {}).get("key"),
        "image_encoder": config["features"].get("image", {}).get("key"), "split": eff["split"],
        "split_id": config["split_id"], "seed": eff["seed"], "epochs_run": config.get("epochs_run"),
        "best_epoch": config.get("best_epoch"), "mode": config["mode"], "device": config["device"],
        "test_mse": test.get("mse"), "test_rmse": test.get("rmse"), "test_mae": test.get("mae"),
        "test_rows": test.get("rows"), "seconds": config.get("seconds"),
    }


def _evaluate(store: Store, run_id: str, progress: ProgressCallback | None) -> Any:
    """The evaluation stage's full metrics, when that package provides ``evaluate_run``."""
    try:
        from bonmf_pipe.evaluation import evaluate_run  # type: ignore[attr-defined]
    except ImportError:
        return None
    return evaluate_run(store, run_id, progress=progress)
