"""``tune``: hyper-parameter search on the validation slice of the train part, with Optuna.

Each trial trains one run (``trainer.train``) with settings drawn by a seeded TPE sampler
and is scored by its best per-epoch **valid RMSE** (the slice carved by hash from the
train part; the test rows never reach the objective). A median pruner stops trials whose
valid RMSE at an epoch is worse than the median of earlier trials at that epoch; the
number of epochs is chosen by early stopping inside each run.

The study lives in Optuna's own RDB storage, a SQLite file ``<store>/tuning/<study>.db``:
a killed ``tune`` continues from the trials already stored (trials left ``RUNNING`` by the
kill are marked failed and re-drawn). After every trial the ``tuning`` table (one row per
trial of every study in the store: study, trial, state, valid RMSE, params JSON, run id)
is rewritten atomically, so ``bonmf-pipe sql "SELECT * FROM tuning"`` shows it.

Under ``torchrun`` (``torchrun --nproc-per-node N -m bonmf_pipe.cli tune ...``) every trial
trains with DistributedDataParallel on all N processes, as PyTorch's and Optuna's documentation
recommend: rank 0 alone owns the study (its SQLite storage, the sampler and the pruner), asks
for each trial and broadcasts its parameters; every rank trains the trial together (the
``train`` stage, which reports each epoch's all-reduced valid RMSE to rank 0's pruner and
broadcasts the verdict, so all ranks stop a pruned trial together); rank 0 alone writes the
study, the ``tuning`` table and the run folders, and says when the search is over.

``load_params`` turns the best trial of a study (or a JSON file) into ``TrainSettings``
overrides and ``record_params`` writes where they came from into the run's folder
(``runs/<id>/params.json``), so a run trained with tuned parameters says which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pyarrow as pa

from bonmf_pipe.errors import BonmfError, ConfigError, StoreError
from bonmf_pipe.featurestore.io import atomic_write_json
from bonmf_pipe.featurestore.store import Store, settings_dict
from bonmf_pipe.progress import ProgressCallback, ProgressEvent, Reporter
from bonmf_pipe.runtime import resolve_device, world
from bonmf_pipe.trainer import TrainSettings, model_settings, read_run_config, run_dir

if TYPE_CHECKING:
    from bonmf_pipe.trainer import Dist

TABLE = "tuning"
PARAMS_FILE = "params.json"
TUNING_SCHEMA = pa.schema(
    [
        pa.field("study", pa.string()),
        pa.field("trial", pa.int64()),
        pa.field("state", pa.string()),  # COMPLETE, PRUNED, FAIL, RUNNING
        pa.field("valid_rmse", pa.float64()),  # best per-epoch valid RMSE of the trial's run
        pa.field("best_epoch", pa.int64()),
        pa.field("epochs_run", pa.int64()),
        pa.field("params", pa.string()),  # JSON object of TrainSettings overrides
        pa.field("run_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("features", pa.string()),
        pa.field("split", pa.string()),
        pa.field("split_id", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("is_best", pa.bool_()),
    ]
)


# -- the search space ----------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One searchable TrainSettings field: its range and when it matters (``scope``):
    ``train`` = every model (the loop reads it); ``model`` = models whose config has the field
    (``trainer.model_settings``); ``sides`` = those, with side vectors; ``mlp`` = models with
    dense hidden layers. Nothing is searched that ``--paper`` fixes."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()
    scope: str = "train"

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def applies(self, s: TrainSettings) -> bool:
        """Whether this field changes anything for the (effective) settings ``s``."""
        reads = model_settings(s.model)
        if s.paper and self.name in PAPER_FIXED:
            return False
        if self.scope == "train":
            return True
        if self.scope == "mlp":
            return "hidden" in reads
        if self.name not in reads:
            return False
        if self.name == "projection_dim" and s.dot:  # the dot product projects to embedding_dim
            return False
        return self.scope == "model" or bool(s.features)


# what --paper fixes (TrainSettings.effective), so a paper study never searches it
PAPER_FIXED = ("l2", "dropout", "weight_decay", "projection_dim", "side_weight_decay", "side_lr_scale", "side_dropout")

SPACE: tuple[Param, ...] = (
    Param("embedding_dim", "int", 8, 128, log=True, scope="model"),
    Param("l2", "float", 1e-3, 1.0, log=True),
    Param("lr", "float", 3e-4, 3e-2, log=True),  # svd's CPU default (1e-2) inside, not at the edge
    Param("batch_size", "choice", choices=(512, 1024, 2048, 4096)),  # around the CPU defaults (1,024-2,048)
    Param("dropout", "float", 0.0, 0.5, scope="model"),
    Param("weight_decay", "float", 1e-6, 1e-2, log=True, scope="mlp"),
    Param("projection_dim", "int", 8, 128, log=True, scope="sides"),
    Param("side_weight_decay", "float", 1e-6, 1e-1, log=True, scope="sides"),
    Param("side_lr_scale", "float", 0.05, 1.0, log=True, scope="sides"),
    Param("side_dropout", "float", 0.0, 0.5, scope="sides"),
)


def search_space(s: TrainSettings, names: tuple[str, ...] | None = None) -> list[Param]:
    """The parameters searched for the (effective) settings ``s``: those that exist in
    TrainSettings and matter for its model and features; ``names`` narrows the list."""
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    eff = s.effective()
    chosen = [p for p in SPACE if p.name in fields and p.applies(eff)]
    if names is not None:
        unknown = sorted(set(names) - {p.name for p in SPACE if p.name in fields})
        if unknown:
            known = ", ".join(p.name for p in SPACE if p.name in fields)
            raise ConfigError(f"--space: {', '.join(unknown)} cannot be searched; choose from {known}.")
        chosen = [p for p in chosen if p.name in names]
    return chosen


# -- settings and results --------------------------------------------------------------------
@dataclass(frozen=True)
class TuneSettings:
    """A search: which model, how many trials, on which split (serialised into the study)."""

    model: str = TrainSettings.model
    """The model to tune: bonmf, nmf or svd."""
    features: tuple[str, ...] = TrainSettings.features
    """Side information of bonmf (a subset of text, image; () = none)."""
    trials: int = 20
    """Trials to have in the study (COMPLETE or PRUNED); a resumed study runs only the missing ones."""
    timeout: float | None = None
    """Stop starting new trials after this many seconds (None = no limit)."""
    seed: int = TrainSettings.seed
    """Seeds the split, every trial's run (all trials train with the same seed) and the sampler."""
    split: str = TrainSettings.split
    """The split whose validation slice scores the trials (its test rows are never used)."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """Base settings of every trial (max epochs, early stopping, encoders, device, ...); model,
    features, seed and split come from the fields above, searched fields from the sampler."""
    study: str | None = None
    """Study name (its SQLite file is ``<store>/tuning/<study>.db``); None = derived from model,
    features, split and seed, which is what ``load_params(store, 'best', ...)`` looks for."""
    space: tuple[str, ...] | None = None
    """Names of the TrainSettings fields to search (None = every field that matters)."""
    startup_trials: int = 5
    """Random trials before TPE models the results (and before the pruner prunes)."""
    warmup_epochs: int = 1
    """Epochs every trial runs before it may be pruned."""

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1 (got {self.trials}).")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be positive seconds (got {self.timeout}).")
        if self.startup_trials < 0 or self.warmup_epochs < 0:
            raise ConfigError("startup_trials and warmup_epochs must be >= 0.")
        if self.study is not None and _safe(self.study) != self.study:
            raise ConfigError(f"--study {self.study!r}: use letters, digits, '-', '_', '.' or '+' (at most 100).")
        s = self.base()
        if s.valid_fraction <= 0:
            raise ConfigError("tune scores trials on the validation slice: valid_fraction must be above 0.")
        search_space(s, self.space)  # checks --space names

    def base(self) -> TrainSettings:
        """The trials' settings before the sampler's choices."""
        return dataclasses.replace(self.train, model=self.model, features=tuple(self.features), seed=self.seed,
                                   split=self.split)

    def study_name(self) -> str:
        return self.study or default_study_name(self.model, self.features, self.split, self.seed)


def default_study_name(model: str, features: tuple[str, ...], split: str, seed: int) -> str:
    """``bonmf-text+image-random0.7-s42``: the study ``tune`` creates unless named."""
    parts = [model, "+".join(features) or "none"] if model == "bonmf" else [model]
    return _safe("-".join([*parts, split.replace(":", ""), f"s{seed}"]))


def _safe(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_.+" else "-" for c in name).strip(".-")
    if not out:
        raise ConfigError(f"--study {name!r}: use letters, digits, '-', '_', '.' or '+'.")
    return out[:100]


@dataclass(frozen=True)
class BestTrial:
    """The best COMPLETE trial of a study."""

    study: str
    trial: int
    valid_rmse: float
    params: dict[str, Any]
    run_id: str | None
    split_id: str | None
    model: str | None = None
    features: tuple[str, ...] = ()


@dataclass
class TuneResult:
    """What ``tune`` did: the study, its trials (TUNING_SCHEMA rows) and the best one."""

    study: str
    storage: Path
    trials: list[dict]
    best: BestTrial | None
    already_done: int  # finished trials found in the study when this call started
    ran: int  # trials this call ran
    seconds: float
    notes: list[str] = field(default_factory=list)


# -- the search --------------------------------------------------------------------------------
def tuning_dir(store: Store) -> Path:
    return store.root / "tuning"


def storage_path(store: Store, study: str) -> Path:
    return tuning_dir(store) / f"{_safe(study)}.db"


def tune(store: Store, settings: TuneSettings, progress: ProgressCallback | None = None) -> TuneResult | None:
    """Run (or continue) the study of ``settings`` until it has ``settings.trials`` finished trials.

    Under torchrun (WORLD_SIZE > 1) every process calls this with the same arguments and the
    trials train on all of them (see the module's docstring); rank 0 returns the result, the
    other ranks None.
    """
    if world().size == 1:
        return _search(store, settings, progress)
    from bonmf_pipe.trainer import distributed_session  # torch: imported when tuning runs

    with distributed_session(resolve_device(settings.train.device)) as dist:
        if not dist.is_main:
            _follow(store, settings, dist)
            return None
        try:
            result = _search(store, settings, progress, dist)
        except BaseException as exc:  # the others wait for rank 0's next word, unless they failed with it in a trial
            if not getattr(exc, "in_trial", False):
                dist.from_main(("error", exc if isinstance(exc, BonmfError) else ConfigError(
                    f"tune stopped on rank 0 ({type(exc).__name__}: {exc}); see its output.")))
            raise
        dist.from_main(("done", None))
        return result


def _follow(store: Store, s: TuneSettings, dist: Dist) -> None:
    """Ranks other than 0: train each trial rank 0 broadcasts, until it says the search is over."""
    from bonmf_pipe.trainer import train  # torch: imported when tuning runs

    name = s.study_name()
    while True:
        word, what = dist.from_main(None)
        if word == "done":
            return
        if word == "error":
            raise what
        number, params = what
        # on_epoch: rank 0's pruner decides for every rank (train broadcasts its verdict)
        train(store, _trial_settings(s, name, number, params), None, on_epoch=lambda epoch, rmse: False)


def _trial_settings(s: TuneSettings, study: str, number: int, params: dict[str, Any]) -> TrainSettings:
    return dataclasses.replace(s.base(), **params, name=f"tune-{study}-t{number}")


def _search(store: Store, settings: TuneSettings, progress: ProgressCallback | None, dist: Dist | None = None) -> TuneResult:
    """The study on rank 0 (or the one process): Optuna asks, each trial trains, Optuna is told."""
    s = settings
    report = Reporter(progress)
    started = time.perf_counter()
    name = s.study_name()
    path = storage_path(store, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    space = search_space(s.base(), s.space)
    with _optuna_quiet(), store.lock(f"tune-{name}", what=f"tune {name}", progress=progress):
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
        probe = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
        _check_same_study(probe, s, name)
        _fail_leftovers(probe, storage)
        done = sum(t.state in _FINISHED for t in probe.get_trials(deepcopy=False))
        study = optuna.create_study(
            study_name=name, storage=storage, direction="minimize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=_sampler_seed(s.seed, len(probe.trials)),
                                               n_startup_trials=s.startup_trials),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=s.startup_trials, n_warmup_steps=s.warmup_epochs),
        )
        todo = max(0, s.trials - done)
        report.note(f"study {name}: {done} trials stored, {todo} to run; searching {', '.join(p.name for p in space)}")
        report.begin(f"tune {name}", total=s.trials, unit="trials")
        report.advance(f"tune {name}", done)
        objective = _Objective(store, s, space, progress, dist)
        try:
            if todo:
                study.optimize(objective, n_trials=todo, timeout=s.timeout,
                               callbacks=[_TrialLine(store, report, name)])
        finally:
            rows = write_tuning_table(store, name, study)
            report.end(f"tune {name}")
    best = _best(study, name)
    notes = []
    if best is None:
        notes.append(f"study {name} has no completed trial yet; run tune again to continue it.")
    else:
        notes.append(f"best: trial {best.trial}, valid RMSE {best.valid_rmse:.4f}, {_params_text(best.params)}")
    for n in notes:
        report.note(n)
    return TuneResult(name, path, rows, best, done, objective.ran, time.perf_counter() - started, notes)


_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class _Objective:
    """Train one run with the trial's settings; its value is the run's best valid RMSE."""

    def __init__(self, store: Store, s: TuneSettings, space: list[Param], progress: ProgressCallback | None,
                 dist: Dist | None = None):
        self.store, self.s, self.space, self.progress, self.dist = store, s, space, progress, dist
        self.ran = 0

    def __call__(self, trial: optuna.Trial) -> float:
        from bonmf_pipe.trainer import train  # torch: imported when a trial runs

        self.ran += 1
        params = {p.name: p.suggest(trial) for p in self.space}
        settings = _trial_settings(self.s, trial.study.study_name, trial.number, params)
        if self.dist is not None:  # under torchrun: every rank trains this trial with rank 0
            self.dist.from_main(("trial", (trial.number, params)))
        pruned = False

        def on_epoch(epoch: int, valid_rmse: float | None) -> bool:
            nonlocal pruned
            if valid_rmse is None:
                return False
            trial.report(valid_rmse, epoch)
            pruned = trial.should_prune()
            return pruned

        t0 = time.perf_counter()
        try:
            result = train(self.store, settings, _bars_only(self.progress), on_epoch=on_epoch)
        except BaseException as exc:
            exc.in_trial = self.dist is not None  # the other ranks failed with it (or torchrun stops them)
            raise
        valid = [e["valid_rmse"] for e in result.epochs if e.get("valid_rmse") is not None]
        if not valid:
            raise ConfigError("The split has no validation rows, so trials cannot be scored; raise valid_fraction.")
        best = min(valid)
        trial.set_user_attr("run_id", result.run_id)
        trial.set_user_attr("split_id", str(read_run_config(self.store, result.run_id)["split_id"]))
        trial.set_user_attr("best_epoch", int(result.epochs[valid.index(best)]["epoch"]))
        trial.set_user_attr("epochs_run", len(result.epochs))
        trial.set_user_attr("valid_rmse", best)
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        if pruned:
            raise optuna.TrialPruned(f"valid RMSE {valid[-1]:.4f} at epoch {len(valid)} is above the median")
        return best


class _TrialLine:
    """After each trial: one progress line and the ``tuning`` table rewritten."""

    def __init__(self, store: Store, report: Reporter, name: str):
        self.store, self.report, self.name = store, report, name

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        write_tuning_table(self.store, self.name, study)
        self.report.advance(f"tune {self.name}", 1)
        rmse = trial.user_attrs.get("valid_rmse")
        best = _best(study, self.name)
        best_text = f"best {best.valid_rmse:.4f} (trial {best.trial})" if best else "no best yet"
        self.report.note(
            f"trial {trial.number} {trial.state.name.lower()}: valid RMSE "
            f"{'-' if rmse is None else f'{rmse:.4f}'} after {trial.user_attrs.get('epochs_run', 0)} epochs, "
            f"{trial.user_attrs.get('seconds', 0.0):.1f} s; {best_text}; {_params_text(trial.params)}"
        )


def _bars_only(progress: ProgressCallback | None) -> ProgressCallback | None:
    """The trials' epoch bars without the trainer's per-run notes (one line per trial instead)."""
    if progress is None:
        return None

    def forward(event: ProgressEvent) -> None:
        if event.kind != "note" or event.level == "warning":
            progress(event)

    return forward


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _sampler_seed(seed: int, trials_so_far: int) -> int:
    """A resumed study gets a fresh sampler stream (the same seed again would repeat the
    random start-up draws of the trials already stored)."""
    digest = hashlib.sha256(f"{seed}:tune:{trials_so_far}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _identity(s: TuneSettings) -> dict[str, Any]:
    """What must not change when a study is resumed: the trials' base settings (but the
    device), the searched names, the sampler and pruner settings."""
    base = {k: v for k, v in settings_dict(s.base()).items() if k not in ("name", "device")}
    base["features"] = list(s.base().effective().features)  # svd and nmf read none
    d = {"base": base, "space": [p.name for p in search_space(s.base(), s.space)],
         "startup_trials": s.startup_trials, "warmup_epochs": s.warmup_epochs}
    return json.loads(json.dumps(d, sort_keys=True, default=str))


def _check_same_study(study: optuna.Study, s: TuneSettings, name: str) -> None:
    mine = _identity(s)
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", mine)
        return
    if stored != mine:
        flat_old, flat_new = {**stored.get("base", {}), **stored}, {**mine["base"], **mine}
        diff = sorted(k for k in set(flat_old) | set(flat_new) if k != "base" and flat_old.get(k) != flat_new.get(k))
        raise ConfigError(
            f"Study {name!r} exists in this store with other settings ({', '.join(diff)} differ); "
            "resume it with the same options, or start another with --study NAME."
        )


def _fail_leftovers(study: optuna.Study, storage: optuna.storages.RDBStorage) -> None:
    """Trials a killed tune left RUNNING are marked FAIL (they are not counted, and re-drawn)."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)


def _best(study: optuna.Study, name: str) -> BestTrial | None:
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return None
    t = min(done, key=lambda t: (t.value, t.number))
    base = study.user_attrs.get("settings", {}).get("base", {})
    return BestTrial(name, t.number, float(t.value), dict(t.params), t.user_attrs.get("run_id"),
                     t.user_attrs.get("split_id"), base.get("model"), tuple(base.get("features") or ()))


@contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna logs every trial to stderr; the library reports through the progress callback."""
    logger = logging.getLogger("optuna")
    old = logger.level
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


# -- the tuning table ---------------------------------------------------------------------------
def _rows(study: optuna.Study, name: str) -> list[dict]:
    base = study.user_attrs.get("settings", {}).get("base", {})
    best = _best(study, name)
    rows = []
    for t in study.get_trials(deepcopy=False):
        rmse = t.user_attrs.get("valid_rmse")
        rows.append({
            "study": name, "trial": t.number, "state": t.state.name,
            "valid_rmse": None if rmse is None or not math.isfinite(rmse) else float(rmse),
            "best_epoch": t.user_attrs.get("best_epoch"), "epochs_run": t.user_attrs.get("epochs_run"),
            "params": json.dumps(t.params, sort_keys=True), "run_id": t.user_attrs.get("run_id"),
            "model": base.get("model"), "features": "+".join(base.get("features") or []) or "none",
            "split": base.get("split"), "split_id": t.user_attrs.get("split_id"), "seed": base.get("seed"),
            "seconds": t.user_attrs.get("seconds"), "is_best": best is not None and t.number == best.trial,
        })
    return rows


def write_tuning_table(store: Store, name: str, study: optuna.Study) -> list[dict]:
    """Rewrite the ``tuning`` table with ``study``'s trials (other studies' rows are kept)."""
    rows = _rows(study, name)
    with store.lock(TABLE, what="the tuning table"):
        store.refresh()  # another study's tune may have committed rows since
        others = []
        if store.has_table(TABLE):
            others = [r for r in store.read_table(TABLE).to_pylist() if r["study"] != name]
        table = pa.Table.from_pylist(others + rows, schema=TUNING_SCHEMA)
        with store.writer(TABLE, TUNING_SCHEMA, {"studies": sorted({r["study"] for r in others + rows})}) as w:
            w.write(table)
            w.commit()
    return rows


# -- using the result: train --params best|best:STUDY|FILE.json -----------------------------------
def best_trial(store: Store, study: str) -> BestTrial:
    """The best completed trial of ``study`` in this store."""
    path = storage_path(store, study)
    if not path.exists():
        have = sorted(p.stem for p in tuning_dir(store).glob("*.db")) if tuning_dir(store).exists() else []
        raise ConfigError(
            f"No study {study!r} in the store {store.root} (studies: {', '.join(have) or 'none'}). "
            "Run `bonmf-pipe tune` with the same --model, --features, --split and --seed first, "
            "or name one with --params best:STUDY."
        )
    with _optuna_quiet():
        found = _best(optuna.load_study(study_name=study, storage=f"sqlite:///{path}"), study)
    if found is None:
        raise ConfigError(f"Study {study!r} has no completed trial yet; run `bonmf-pipe tune` to continue it.")
    return found


@dataclass(frozen=True)
class ParamsChoice:
    """TrainSettings overrides and where they came from (recorded with the run)."""

    params: dict[str, Any]
    source: dict[str, Any]

    def apply(self, settings: TrainSettings) -> TrainSettings:
        return dataclasses.replace(settings, **self.params)


def load_params(store: Store, spec: str, settings: TrainSettings) -> ParamsChoice:
    """``best`` (the default study of ``settings``' model, features, split and seed),
    ``best:STUDY``, or the path of a JSON file: ``{"params": {...}}`` or a flat object of
    TrainSettings fields (what ``write_params_file`` writes)."""
    if spec == "best" or spec.startswith("best:"):
        study = spec[5:] or default_study_name(settings.model, settings.features, settings.split, settings.seed)
        best = best_trial(store, study)
        if best.model is not None and best.model != settings.model:
            raise ConfigError(
                f"--params {spec}: study {best.study!r} tuned {best.model}, not {settings.model}; "
                f"train with --model {best.model}, or tune {settings.model} first."
            )
        return ParamsChoice(_checked(best.params, spec), {
            "source": "study", "spec": spec, "study": best.study, "trial": best.trial, "valid_rmse": best.valid_rmse,
            "tuned_run_id": best.run_id, "split_id": best.split_id, "storage": str(storage_path(store, study)),
            "tuned_model": best.model, "tuned_features": list(best.features),
        })
    path = Path(spec).expanduser()
    try:
        raw = path.read_bytes()
        obj = json.loads(raw)
    except OSError as exc:
        raise ConfigError(f"--params {spec!r}: cannot read it ({exc.strerror}); give best, best:STUDY or a JSON file.") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params {spec!r} is not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
    params = obj.get("params", obj) if isinstance(obj, dict) else None
    if not isinstance(params, dict):
        raise ConfigError(f"--params {spec!r}: expected a JSON object of TrainSettings fields (or {{\"params\": {{...}}}}).")
    return ParamsChoice(_checked(params, spec), {
        "source": "file", "spec": spec, "path": str(path.resolve()), "sha256": hashlib.sha256(raw).hexdigest(),
        "study": obj.get("study"), "trial": obj.get("trial"),
    })


_NOT_PARAMS = ("model", "features", "seed", "split", "name", "device", "text_encoder", "image_encoder")


def _checked(params: dict[str, Any], spec: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    bad = sorted(k for k in params if k not in fields or k in _NOT_PARAMS)
    if bad:
        raise ConfigError(
            f"--params {spec!r}: {', '.join(bad)} cannot be set from a params file "
            f"(allowed: {', '.join(sorted(fields - set(_NOT_PARAMS)))})."
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def write_params_file(best: BestTrial, path: Path) -> Path:
    """The best trial's params as a JSON file that ``--params FILE.json`` reads."""
    atomic_write_json(Path(path), {"study": best.study, "trial": best.trial, "valid_rmse": best.valid_rmse,
                                   "params": best.params})
    return Path(path)


def record_params(store: Store, run_id: str, choice: ParamsChoice, overridden: Collection[str] = ()) -> Path:
    """Write ``runs/<id>/params.json``: the overrides the run was trained with, their source,
    and (``overridden``: fields the user set explicitly) the tuned values it did not use."""
    folder = run_dir(store, run_id)
    if not folder.exists():
        raise StoreError(f"No run {run_id!r} in {store.root}; cannot record its params.")
    skipped = set(overridden) & set(choice.params)
    path = folder / PARAMS_FILE
    atomic_write_json(path, {**choice.source, "params": {k: v for k, v in choice.params.items() if k not in skipped},
                             "not_used": {k: choice.params[k] for k in sorted(skipped)}})
    return path

