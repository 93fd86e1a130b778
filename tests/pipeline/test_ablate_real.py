"""THE real-data check, on effects that hold across seeds rather than one seed's ordering:
on ml-latest-small (random 70/30, CPU), BoNMF with text and poster vectors predicts cold
items (fewer than 5 training ratings) at least 3% better than the project's svd on every
seed, and has a lower mean test RMSE than svd over the seeds (issue 8's target). Measured
with the default settings on seeds 42 and 43 (``python -m benchmarks --suite accuracy
--quick``): cold RMSE 9.0% and 7.5% below svd, test RMSE 0.024 and 0.029 below, with a seed
standard deviation of 0.004 for svd. (The earlier BoNMF was 0.0004-0.010 below svd on all
rows: a single-seed ordering at that margin was noise, so none is asserted.)

Kept cheap for CI (2 cores): two seeds, two variants, the default settings (so that neither
model is cut short: early stopping ends each run).
"""

from __future__ import annotations

import json

import pytest

from bonmf_pipe.pipeline.ablate import AblateSettings, ablate
from bonmf_pipe.trainer import TrainSettings, read_run_config

SEEDS = 2
COLD_GAIN = 0.03  # issue 8: cold-item RMSE at least 3% below svd


@pytest.fixture(scope="module")
def real_ablation(encoded_small_store):
    settings = AblateSettings(
        train=TrainSettings(split="random:0.7", seed=42, device="cpu"),
        features=("text+image",), baselines=("svd",), seeds=SEEDS, name="real-small",
    )
    return encoded_small_store, ablate(encoded_small_store, settings)


@pytest.mark.slow
def test_every_seed_compares_models_on_one_test_set(real_ablation):
    store, result = real_ablation
    rows = result.table.to_pylist()
    assert sorted({r["seed"] for r in rows}) == [42, 43] and len(rows) == 2 * SEEDS
    assert len(set(result.split_ids.values())) == SEEDS  # each seed its own split
    for seed, split_id in result.split_ids.items():
        mine = [r for r in rows if r["seed"] == seed]
        assert {read_run_config(store, r["run_id"])["split_id"] for r in mine} == {split_id}
        assert len({r["cold_rows"] for r in mine}) == 1 and len({r["unseen_rows"] for r in mine}) == 1
        test_rows = {read_run_config(store, r["run_id"])["test"]["rows"] for r in mine}
        assert len(test_rows) == 1 and 0.27 * 100_836 < test_rows.pop() < 0.33 * 100_836
    for r in rows:
        assert 0.7 < r["rmse"] < 1.1 and 0 < r["ndcg_at_10"] <= 1 and r["cold_rows"] > 1000
    meta = json.loads((result.folder / "results.json").read_text())
    assert meta["split_ids"] == {str(k): v for k, v in result.split_ids.items()}
    assert result.plot is not None and result.plot.exists()


@pytest.mark.slow
def test_text_and_posters_help_cold_items_on_every_seed(real_ablation):
    _, result = real_ablation
    table = result.markdown  # shown when an assertion fails
    for seed in result.split_ids:
        svd, bonmf = result.row("svd", seed=seed), result.row("bonmf", "text+image", seed=seed)
        assert bonmf["cold_rmse"] <= (1 - COLD_GAIN) * svd["cold_rmse"], table
    [c] = result.comparisons
    assert (c["variant"], c["reference"]) == ("bonmf text+image", "svd")
    svd = result.summary_row("svd")
    assert c["cold_rmse"]["mean"] <= -COLD_GAIN * svd["cold_rmse_mean"], table


@pytest.mark.slow
def test_text_and_posters_lower_the_mean_test_rmse(real_ablation):
    _, result = real_ablation
    svd, bonmf = result.summary_row("svd"), result.summary_row("bonmf", "text+image")
    assert bonmf["seeds"] == svd["seeds"] == SEEDS
    assert bonmf["rmse_mean"] <= svd["rmse_mean"], result.markdown
    d = result.comparisons[0]["rmse"]
    assert d["low"] <= d["mean"] <= d["high"] and d["mean"] == pytest.approx(bonmf["rmse_mean"] - svd["rmse_mean"])
