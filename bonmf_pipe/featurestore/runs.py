"""The layout of training runs in the store: ``runs/<run-id>/`` and what each file holds.

A run folder holds ``config.json`` (settings, environment, status), ``epochs.parquet`` (one
row per epoch), ``checkpoint.safetensors`` (weights; never pickle), ``predictions.parquet``
(test rows) and ``summary.parquet`` (one row, for the ``runs`` view). The trainer writes
them; evaluation, the views and the CLI read them through this module, never through the
trainer. Every file is written atomically.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore.io import atomic_write_json
from bonmf_pipe.featurestore.store import Store, write_parquet_atomic

BEST = "best.safetensors"  # the best epoch's weights, while training with early stopping
CHECKPOINT = "checkpoint.safetensors"
CONFIG = "config.json"
EPOCHS = "epochs.parquet"
PREDICTIONS = "predictions.parquet"
SUMMARY = "summary.parquet"

# A run's life: running (written before the first epoch; a run that stays "running" with no
# live process was killed), done, failed (the reason is recorded), killed (interrupted).
STATUSES = ("running", "done", "failed", "killed")
LABEL_CHARS = 40

EPOCH_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("epoch", pa.int32()),
        pa.field("train_loss", pa.float64()),  # mean MSE over the epoch's training batches
        pa.field("valid_rmse", pa.float64()),  # null without a valid slice
        pa.field("lr", pa.float64()),  # the learning rate of the epoch (lr_at)
        pa.field("seconds", pa.float64()),
        pa.field("ratings_per_s", pa.float64()),
    ]
)

SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("created_at", pa.timestamp("ms", tz="UTC")),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),  # why a failed or killed run stopped
        pa.field("model", pa.string()),
        pa.field("features", pa.string()),
        pa.field("paper", pa.bool_()),
        pa.field("text_encoder", pa.string()),
        pa.field("image_encoder", pa.string()),
        pa.field("split", pa.string()),
        pa.field("split_id", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("epochs_run", pa.int32()),
        pa.field("best_epoch", pa.int32()),
        pa.field("mode", pa.string()),
        pa.field("device", pa.string()),
        pa.field("threads", pa.int32()),
        pa.field("test_mse", pa.float64()),
        pa.field("test_rmse", pa.float64()),
        pa.field("test_mae", pa.float64()),
        pa.field("test_rows", pa.int64()),
        pa.field("seconds", pa.float64()),
    ]
)


def label(text: str) -> str:
    """A run (or ablation) label safe in a folder name and a SQL literal: letters, digits,
    ``-`` and ``_`` kept, anything else turned into ``-``, at most 40 characters."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in text)[:LABEL_CHARS]


def new_run_id(text: str) -> str:
    """``<UTC yyyymmdd-hhmmss>-<label>-<6 hex>``: sorts by time, names what ran, never collides."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{label(text)}-{uuid.uuid4().hex[:6]}"


def run_dir(store: Store, run_id: str) -> Path:
    """The folder of run ``run_id`` (a full id or a unique prefix)."""
    exact = store.runs_dir / run_id
    if (exact / CONFIG).exists():
        return exact
    runs = _run_folders(store)
    matches = [p for p in runs if p.name.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(p.name for p in runs[-5:])
    what = "matches several runs" if matches else "is not a run"
    raise StoreError(
        f"'{run_id}' {what} in {store.runs_dir}. `bonmf-pipe sql \"SELECT run_id FROM runs\"` lists them"
        + (f" (latest: {known})." if known else "; train one with `bonmf-pipe train`.")
    )


def read_run_config(store: Store, run_id: str) -> dict:
    """The ``config.json`` of a run (id or unique prefix)."""
    return read_config(run_dir(store, run_id))


def read_config(folder: Path) -> dict:
    path = folder / CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable run config ({exc}); remove the folder or train the run again.") from exc


def list_runs(store: Store) -> list[dict]:
    """Every run's config (any status), oldest first."""
    configs = [read_config(folder) for folder in _run_folders(store)]
    return sorted(configs, key=lambda c: (c.get("created_at", 0), c.get("run_id", "")))


def run_files(store: Store, name: str) -> list[Path]:
    """The file ``name`` (one of the constants above) of every run that has it, by run id."""
    return [folder / name for folder in _run_folders(store) if (folder / name).exists()]


def _run_folders(store: Store) -> list[Path]:
    if not store.runs_dir.exists():
        return []
    return sorted(p for p in store.runs_dir.iterdir() if (p / CONFIG).exists())


# -- writing (the trainer's side) ----------------------------------------------------------------


def write_config(folder: Path, config: dict) -> None:
    atomic_write_json(folder / CONFIG, config)


def write_epochs(folder: Path, rows: list[dict]) -> None:
    write_parquet_atomic(folder / EPOCHS, pa.Table.from_pylist(rows, schema=EPOCH_SCHEMA))


def write_summary(folder: Path, row: dict[str, Any]) -> None:
    """The one-row ``summary.parquet`` that the ``runs`` view reads (``created_at`` in epoch
    seconds becomes a UTC timestamp)."""
    row = dict(row)
    if isinstance(row.get("created_at"), (int, float)):
        row["created_at"] = int(row["created_at"] * 1000)
    table = pa.Table.from_pylist([{f.name: row.get(f.name) for f in SUMMARY_SCHEMA}], schema=SUMMARY_SCHEMA)
    write_parquet_atomic(folder / SUMMARY, table)
