"""The test rows through the trained model into ``predictions.parquet``, with their errors."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from bonmf_pipe.featurestore.io import atomic_path
from bonmf_pipe.featurestore.runs import PREDICTIONS
from bonmf_pipe.trainer import data
from bonmf_pipe.trainer.epoch import diverged
from bonmf_pipe.trainer.setup import Context

# Rows read per chunk, and rows per forward pass: the network's intermediates (for bonmf
# with text and poster vectors ~7 KB a row) stay a few tens of MB whatever the test rows.
READ_ROWS = 1 << 16
FORWARD_ROWS = 1 << 12

SCHEMA = pa.schema([("run_id", pa.string()), ("user_id", pa.int64()), ("item_id", pa.int64()),
                    ("rating", pa.float32()), ("prediction", pa.float32())])


def write_predictions(ctx: Context, model: nn.Module, folder: Path, run_id: str) -> dict[str, float]:
    """Stream the test rows through the model into predictions.parquet; MSE, RMSE, MAE, rows.

    Memory is bounded by ``READ_ROWS`` (a chunk of test rows) and ``FORWARD_ROWS`` (one
    forward pass), not by the number of test rows."""
    se = ae = 0.0
    n = 0
    model.eval()
    with atomic_path(folder / PREDICTIONS) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for table in data.stream_part(ctx.dataset, "test", None, READ_ROWS):
            users = table.column("user_id").to_numpy()
            items = table.column("item_id").to_numpy()
            u, i, p, r = (torch.from_numpy(a).to(ctx.device) for a in data.to_indices(ctx.maps, table))
            with torch.no_grad():
                pred = torch.cat([
                    model(u[lo : lo + FORWARD_ROWS], i[lo : lo + FORWARD_ROWS], p[lo : lo + FORWARD_ROWS])[0]
                    for lo in range(0, len(u), FORWARD_ROWS)
                ]).clamp(ctx.lo, ctx.hi) if len(u) else r.clone()
            err = pred - r
            se += float(err.pow(2).sum())
            ae += float(err.abs().sum())
            n += len(pred)
            writer.write_table(pa.table({
                "run_id": pa.array([run_id] * len(users), pa.string()), "user_id": users, "item_id": items,
                "rating": r.cpu().numpy(), "prediction": pred.cpu().numpy(),
            }, schema=SCHEMA))
        if n and not math.isfinite(se):
            raise diverged(ctx.settings, "the test predictions are not finite")
    mse = se / n if n else float("nan")
    return {"mse": mse, "rmse": mse**0.5, "mae": ae / n if n else float("nan"), "rows": n}
