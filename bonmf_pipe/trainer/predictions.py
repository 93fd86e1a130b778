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

SCHEMA = pa.schema([("run_id", pa.string()), ("user_id", pa.int64()), ("item_id", pa.int64()),
                    ("rating", pa.float32()), ("prediction", pa.float32())])


def write_predictions(ctx: Context, model: nn.Module, folder: Path, run_id: str) -> dict[str, float]:
    """Stream the test rows through the model into predictions.parquet; MSE, RMSE, MAE, rows."""
    se = ae = 0.0
    n = 0
    model.eval()
    with atomic_path(folder / PREDICTIONS) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for table in data.stream_part(ctx.dataset, "test", None, 1 << 16):
            users = table.column("user_id").to_numpy()
            items = table.column("item_id").to_numpy()
            u, i, p, r = (torch.from_numpy(a).to(ctx.device) for a in data.to_indices(ctx.maps, table))
            with torch.no_grad():
                pred = model(u, i, p)[0].clamp(ctx.lo, ctx.hi)
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
