"""A run's record as the trainer writes it: the config.json it starts with, the summary row
of the ``runs`` view, status changes, and the ``RunResult`` that ``train`` returns. The folder
layout itself (file names, ids, reading runs back) is ``featurestore.runs``."""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonmf_pipe import runtime
from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore import runs as layout
from bonmf_pipe.featurestore.store import settings_dict
from bonmf_pipe.trainer.settings import TrainSettings
from bonmf_pipe.trainer.setup import Context
from bonmf_pipe.trainer.splits import split_counts

# Settings a resumed run may change: where it runs, not what it computes.
RESUMABLE_CHANGES = ("device",)


@dataclass
class RunResult:
    """What ``train`` returns: where the run lives, its epochs and its test metrics."""

    run_id: str
    run_dir: Path
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    mode: str = ""  # "resident" or "streaming"
    test_mse: float = float("nan")
    test_rmse: float = float("nan")
    test_mae: float = float("nan")
    test_rows: int = 0
    seconds: float = 0.0
    stopped_by: str | None = None  # "early_stopping", "on_epoch" or None (ran every epoch)
    evaluation: Any = None  # filled by callers that also evaluate (pipeline's train_and_evaluate)

    @property
    def metrics(self) -> dict[str, float]:
        return {"mse": self.test_mse, "rmse": self.test_rmse, "mae": self.test_mae}


def environment() -> dict[str, Any]:
    """Package versions and the git commit, recorded with every run."""
    from bonmf_pipe import __version__

    env: dict[str, Any] = {"bonmf_pipe": __version__, **runtime.library_versions(), "git_commit": None}
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            env["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def run_config(run_id: str, requested: TrainSettings, ctx: Context, created_at: float) -> dict[str, Any]:
    """The config.json a run starts with (status ``running``)."""
    return {
        "run_id": run_id,
        "name": requested.name,
        "created_at": created_at,
        "status": "running",
        "error": None,
        "settings": settings_dict(requested),
        "effective": settings_dict(ctx.settings),
        "split_id": ctx.split_id,
        "split_rows": split_counts(ctx.store, ctx.split_id),
        "seed": ctx.settings.seed,
        "device": str(ctx.device),
        "threads": ctx.settings.threads,
        "mode": ctx.mode,
        "n_users": len(ctx.maps.user_ids),
        "n_items": len(ctx.maps.item_ids),
        "n_items_trained": ctx.maps.n_item_embeddings - 1,
        "rating_mean": ctx.mean,
        "rating_range": [ctx.lo, ctx.hi],
        "features": {
            m: {"key": f.key, "dim": f.dim, "items_with_vector": int(f.found[:-1].sum())} for m, f in ctx.sides.items()
        },
        "runtime": runtime.describe(ctx.device, ctx.settings.threads or runtime.default_threads()),
        "environment": environment(),
    }


def summary_row(config: dict) -> dict[str, Any]:
    """The run's row of the ``runs`` view."""
    eff, test = config["effective"], config.get("test") or {}
    return {
        "run_id": config["run_id"], "name": config.get("name"), "created_at": config["created_at"],
        "status": config["status"], "error": config.get("error"), "model": eff["model"],
        "features": ",".join(eff["features"]) or "none", "paper": eff["paper"],
        "text_encoder": config["features"].get("text", {}).get("key"),
        "image_encoder": config["features"].get("image", {}).get("key"), "split": eff["split"],
        "split_id": config["split_id"], "seed": eff["seed"], "epochs_run": config.get("epochs_run"),
        "best_epoch": config.get("best_epoch"), "mode": config["mode"], "device": config["device"],
        "threads": config.get("threads"), "test_mse": test.get("mse"), "test_rmse": test.get("rmse"),
        "test_mae": test.get("mae"), "test_rows": test.get("rows"), "seconds": config.get("seconds"),
    }


def record(folder: Path, config: dict) -> None:
    """Write config.json and the summary row (in that order: the view follows the config)."""
    layout.write_config(folder, config)
    layout.write_summary(folder, summary_row(config))


def mark(folder: Path, config: dict, status: str, error: str | None = None) -> None:
    """Record a status change (``failed`` / ``killed`` with the reason)."""
    config.update(status=status, error=error)
    record(folder, config)


def check_resume(run_id: str, recorded: TrainSettings, given: TrainSettings, explicit: frozenset[str] | None) -> None:
    """Refuse settings that contradict the run being resumed.

    ``explicit`` names the fields the caller set on purpose (the CLI's options given on the
    command line); None = every field whose value differs from the ``TrainSettings``
    default. Each of them must equal the run's own value, except ``RESUMABLE_CHANGES``.
    """
    default = TrainSettings()
    names = [f.name for f in dataclasses.fields(TrainSettings)]
    asked = explicit if explicit is not None else {n for n in names if getattr(given, n) != getattr(default, n)}
    unknown = sorted(set(asked) - set(names))
    if unknown:
        raise ConfigError(f"resume: unknown setting(s) {', '.join(unknown)}.")
    rec_eff, given_eff = recorded.effective(), given.effective()
    clashes = [  # a value differs, and so does what it resolves to (epochs None vs 30 is no clash)
        f"{n} {getattr(given, n)!r} (the run has {getattr(recorded, n)!r})"
        for n in names
        if n in asked and n not in RESUMABLE_CHANGES
        and getattr(given, n) != getattr(recorded, n) and getattr(given_eff, n) != getattr(rec_eff, n)
    ]
    if clashes:
        raise ConfigError(
            f"--resume {run_id}: a resumed run keeps its own settings, but these contradict it: "
            f"{'; '.join(clashes)}. Drop those options to resume, or start a new run without --resume."
        )


def resumed_settings(recorded: TrainSettings, given: TrainSettings, explicit: frozenset[str] | None) -> TrainSettings:
    """The run's settings with the allowed changes (``RESUMABLE_CHANGES``) applied."""
    default = TrainSettings()
    changes = {
        n: getattr(given, n) for n in RESUMABLE_CHANGES
        if (n in explicit if explicit is not None else getattr(given, n) != getattr(default, n))
    }
    return dataclasses.replace(recorded, **changes)
