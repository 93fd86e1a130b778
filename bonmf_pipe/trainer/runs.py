"""Run folders: ``runs/<run-id>/`` with config.json, epochs.parquet, checkpoint.safetensors,
predictions.parquet and summary.parquet (one row for the ``runs`` view). Every file is
written atomically; the checkpoint is safetensors (never pickle)."""

from __future__ import annotations

import json
import platform
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore.io import atomic_path, atomic_write_json
from bonmf_pipe.featurestore.store import Store, write_parquet_atomic

CHECKPOINT = "checkpoint.safetensors"
CONFIG = "config.json"
EPOCHS = "epochs.parquet"
PREDICTIONS = "predictions.parquet"
SUMMARY = "summary.parquet"
FORMAT = "bonmf-checkpoint-1"

EPOCH_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("epoch", pa.int32()),
        pa.field("train_loss", pa.float64()),  # mean MSE over the epoch's training batches
        pa.field("valid_rmse", pa.float64()),  # null without a valid slice
        pa.field("seconds", pa.float64()),
        pa.field("ratings_per_s", pa.float64()),
    ]
)


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
    evaluation: Any = None  # what bonmf_pipe.evaluation.evaluate_run returned, when available

    @property
    def metrics(self) -> dict[str, float]:
        return {"mse": self.test_mse, "rmse": self.test_rmse, "mae": self.test_mae}


def new_run_id(model: str, name: str | None) -> str:
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in (name or model))[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{label}-{uuid.uuid4().hex[:6]}"


def run_dir(store: Store, run_id: str) -> Path:
    """The folder of run ``run_id`` (a full id or a unique prefix)."""
    exact = store.runs_dir / run_id
    if (exact / CONFIG).exists():
        return exact
    matches = sorted(p for p in store.runs_dir.glob(f"{run_id}*") if (p / CONFIG).exists()) if store.runs_dir.exists() else []
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(p.name for p in sorted(store.runs_dir.iterdir())[-5:]) if store.runs_dir.exists() else ""
    what = "matches several runs" if matches else "is not a run"
    raise StoreError(
        f"'{run_id}' {what} in {store.runs_dir}. `bonmf-pipe sql \"SELECT run_id FROM runs\"` lists them"
        + (f" (latest: {known})." if known else "; train one with `bonmf-pipe train`.")
    )


def read_run_config(store: Store, run_id: str) -> dict:
    path = run_dir(store, run_id) / CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable run config ({exc}).") from exc


def write_run_config(folder: Path, config: dict) -> None:
    atomic_write_json(folder / CONFIG, config)


def list_runs(store: Store) -> list[dict]:
    """Every run's config, oldest first."""
    if not store.runs_dir.exists():
        return []
    out = []
    for folder in sorted(store.runs_dir.iterdir()):
        if (folder / CONFIG).exists():
            out.append(json.loads((folder / CONFIG).read_text()))
    return sorted(out, key=lambda c: c.get("created_at", 0))


def environment() -> dict[str, Any]:
    """Package versions and the git commit, recorded with every run."""
    import duckdb
    import safetensors

    from bonmf_pipe import __version__

    env = {
        "bonmf_pipe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__,
        "safetensors": safetensors.__version__,
        "git_commit": None,
    }
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            env["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def write_epochs(folder: Path, rows: list[dict]) -> None:
    write_parquet_atomic(folder / EPOCHS, pa.Table.from_pylist(rows, schema=EPOCH_SCHEMA))


def write_summary(folder: Path, row: dict) -> None:
    write_parquet_atomic(folder / SUMMARY, pa.Table.from_pylist([row]))


# -- checkpoints -----------------------------------------------------------------------------


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Model, optimiser and best-epoch tensors plus JSON metadata, in one safetensors file."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(folder / CHECKPOINT) as tmp:
        save_file(flat, str(tmp), metadata={"format": FORMAT, "bonmf": json.dumps(meta, default=str)})


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    path = folder / CHECKPOINT
    if not path.exists():
        raise StoreError(f"{path} is missing: the run stopped before its first epoch ended. Train it again.")
    with safe_open(str(path), framework="pt") as fh:
        md = fh.metadata() or {}
    if md.get("format") != FORMAT:
        raise StoreError(f"{path}: not a bonmf-pipe checkpoint (format {md.get('format')!r}).")
    return load_file(str(path)), json.loads(md["bonmf"])


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optim/{idx}/{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    return tensors, sd["param_groups"]


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})
