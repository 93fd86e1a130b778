"""The test predictions stream: bounded forward passes, the same file and errors whatever the bound."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest

from bonmf_pipe.featurestore.runs import PREDICTIONS
from bonmf_pipe.trainer import TrainSettings, train
from bonmf_pipe.trainer import predictions as P
from bonmf_pipe.trainer.models.bonmf import BoNMF


def test_forward_passes_are_bounded_and_do_not_change_the_predictions(small_store, monkeypatch):
    """Each forward pass sees at most FORWARD_ROWS test rows (the network's intermediates are
    bounded by it, not by the number of test rows), and the bound changes no prediction bit."""
    settings = TrainSettings(model="bonmf", features=("text", "image"), epochs=1, batch_size=256, device="cpu", seed=3)
    whole = train(small_store, settings)
    seen: list[int] = []
    real_forward, real_write = BoNMF.forward, P.write_predictions
    writing = []

    def recording(self, users, items, item_pos):
        if writing:
            seen.append(len(users))
        return real_forward(self, users, items, item_pos)

    def write(*args, **kwargs):
        writing.append(True)
        try:
            return real_write(*args, **kwargs)
        finally:
            writing.clear()

    monkeypatch.setattr(BoNMF, "forward", recording)
    monkeypatch.setattr(sys.modules["bonmf_pipe.trainer.train"], "write_predictions", write)
    monkeypatch.setattr(P, "FORWARD_ROWS", 37)
    monkeypatch.setattr(P, "READ_ROWS", 100)
    bounded = train(small_store, settings)
    assert bounded.test_rows > 37 * 5 and max(seen) <= 37 and sum(seen) == bounded.test_rows
    a = pq.read_table(whole.run_dir / PREDICTIONS).drop_columns(["run_id"])
    b = pq.read_table(bounded.run_dir / PREDICTIONS).drop_columns(["run_id"])
    assert a.num_rows == whole.test_rows and a.equals(b)
    assert bounded.test_rmse == pytest.approx(whole.test_rmse, rel=1e-12)
