"""THE real-data check: on ml-latest-small (random 70/30, seed 42, CPU), BoNMF with text and
poster vectors beats the project's own svd and nmf on test RMSE and on cold-item RMSE."""

from __future__ import annotations

import json

import pytest

from bonmf_pipe.pipeline.ablate import AblateSettings, ablate
from bonmf_pipe.trainer import TrainSettings, read_run_config


@pytest.mark.slow
def test_bonmf_text_image_beats_svd_and_nmf(encoded_small_store):
    store = encoded_small_store
    settings = AblateSettings(
        train=TrainSettings(split="random:0.7", seed=42, device="cpu"), name="real-small"
    )
    result = ablate(store, settings)
    rows = {(r["model"], r["features"]): r for r in result.table.to_pylist()}
    assert set(rows) == {("svd", "none"), ("nmf", "none"), ("bonmf", "none"), ("bonmf", "text"),
                         ("bonmf", "image"), ("bonmf", "text+image")}
    # one split, one test set: every run saw the same test rows
    assert {read_run_config(store, r["run_id"])["split_id"] for r in rows.values()} == {result.split_id}
    assert len({r["cold_rows"] for r in rows.values()}) == 1 and len({r["unseen_rows"] for r in rows.values()}) == 1
    test_rows = {read_run_config(store, r["run_id"])["test"]["rows"] for r in rows.values()}
    assert len(test_rows) == 1 and 0.27 * 100_836 < test_rows.pop() < 0.33 * 100_836
    best = rows[("bonmf", "text+image")]
    table = result.markdown  # shown when the assertion fails
    for baseline in (rows[("svd", "none")], rows[("nmf", "none")]):
        assert best["rmse"] < baseline["rmse"], table
        assert best["cold_rmse"] < baseline["cold_rmse"], table
    for r in rows.values():
        assert 0.7 < r["rmse"] < 1.1 and 0 < r["ndcg_at_10"] <= 1
    assert json.loads((result.folder / "results.json").read_text())["split_id"] == result.split_id
    assert result.plot is not None and result.plot.exists()
