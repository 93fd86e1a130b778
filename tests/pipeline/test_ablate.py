"""ablate on a small synthetic store: one split per seed for every run, mean ± std per variant,
paired comparisons with t-intervals, the files and the chart."""

from __future__ import annotations

import json
import math
import sys

import pyarrow.parquet as pq
import pytest

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.pipeline.ablate import RESULT_SCHEMA, AblateSettings, ablate
from bonmf_pipe.pipeline.ablate_report import plot, summarize
from bonmf_pipe.pipeline.stats import paired_difference
from bonmf_pipe.trainer import TrainSettings, read_run_config
from tests.evaluation.conftest import build_cold_store


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    store = build_cold_store(tmp_path_factory.mktemp("ablate") / "store")
    settings = AblateSettings(
        train=TrainSettings(epochs=2, batch_size=256, device="cpu", seed=5),
        features=("text+image",),
        baselines=("svd",),
        name="tiny",
        seeds=2,
    )
    return store, ablate(store, settings)


def test_ablation_rows_share_a_split_per_seed(ablation):
    store, result = ablation
    rows = result.table.to_pylist()
    assert [(r["seed"], r["model"], r["features"]) for r in rows] == [
        (5, "svd", "none"), (5, "bonmf", "text+image"), (6, "svd", "none"), (6, "bonmf", "text+image")]
    for seed in (5, 6):
        splits = {read_run_config(store, r["run_id"])["split_id"] for r in rows if r["seed"] == seed}
        assert splits == {result.split_ids[seed]}
        assert {r["split_id"] for r in rows if r["seed"] == seed} == splits
    assert result.split_ids[5] != result.split_ids[6]  # each seed draws its own split
    assert result.split_id == result.split_ids[5]
    for r in rows:
        config = read_run_config(store, r["run_id"])
        assert config["seed"] == r["seed"]
        assert r["rmse"] == pytest.approx(config["test"]["rmse"], rel=1e-5)
        assert r["cold_rows"] > 0 and r["cold_rmse"] > 0 and r["unseen_rows"] > 0
        assert 0 <= r["precision_at_10"] <= 1 and 0 <= r["ndcg_at_10"] <= 1
        assert r["fit_seconds"] > 0 and r["epochs_run"] >= 1 and r["valid_rmse"] > 0


def test_summary_and_comparison_follow_the_rows(ablation):
    _, result = ablation
    rows = result.table.to_pylist()
    svd = [r["rmse"] for r in rows if r["model"] == "svd"]
    bonmf = [r["rmse"] for r in rows if r["model"] == "bonmf"]
    s = result.summary_row("svd")
    assert s["seeds"] == 2
    assert s["rmse_mean"] == pytest.approx(sum(svd) / 2)
    assert s["rmse_std"] == pytest.approx(abs(svd[0] - svd[1]) / math.sqrt(2))
    [c] = result.comparisons
    assert (c["variant"], c["reference"], c["seeds"]) == ("bonmf text+image", "svd", [5, 6])
    expected = paired_difference(bonmf, svd)
    assert c["rmse"]["mean"] == pytest.approx(expected.mean)
    assert c["rmse"]["low"] == pytest.approx(expected.low) and c["rmse"]["high"] == pytest.approx(expected.high)
    assert c["rmse"]["low"] < c["rmse"]["mean"] < c["rmse"]["high"]


def test_files_and_view(ablation):
    store, result = ablation
    saved = pq.read_table(result.folder / "results.parquet")
    assert saved.schema.remove_metadata().equals(RESULT_SCHEMA)
    assert saved.num_rows == 4
    md = result.markdown
    s = result.summary_row("bonmf", "text+image")
    assert "| variant | seeds | RMSE |" in md
    assert f"{s['rmse_mean']:.4f} ± {s['rmse_std']:.4f}" in md
    c = result.comparisons[0]["rmse"]
    assert f"{c['mean']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]" in md
    meta = json.loads((result.folder / "results.json").read_text())
    assert meta["settings"]["train"]["epochs"] == 2 and meta["settings"]["seeds"] == 2
    assert len(meta["rows"]) == 4 and meta["split_ids"] == {"5": result.split_ids[5], "6": result.split_ids[6]}
    assert meta["comparisons"][0]["rmse"]["n"] == 2
    assert result.plot is not None and result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n = query(store, "SELECT count(*) AS n, count(DISTINCT seed) AS seeds FROM ablations")
    assert n.column("n").to_pylist() == [4] and n.column("seeds").to_pylist() == [2]


def test_summarize_picks_the_best_id_only_model():
    rows = []
    for seed, (svd, nmf, none, text) in {1: (0.90, 0.95, 0.93, 0.88), 2: (0.92, 0.96, 0.94, 0.89),
                                           3: (0.91, 0.94, 0.92, 0.885)}.items():
        for model, feats, v in (("svd", "none", svd), ("nmf", "none", nmf), ("bonmf", "none", none),
                                ("bonmf", "text", text)):
            rows.append({"seed": seed, "model": model, "features": feats, "rmse": v, "cold_rmse": v + 0.1,
                         **{m: 0.5 for m in ("mae", "precision_at_10", "ndcg_at_10", "unseen_rmse", "valid_rmse",
                                             "fit_seconds")}})
    summary, [c] = summarize(rows)
    assert [e["variant"] for e in summary] == ["svd", "nmf", "bonmf none", "bonmf text"]
    assert (c["variant"], c["reference"]) == ("bonmf text", "svd")
    assert c["rmse"]["mean"] == pytest.approx(-0.025)
    assert c["rmse"]["significant"] and c["rmse"]["high"] < 0


def test_without_matplotlib_there_is_a_note_and_no_chart(ablation, tmp_path, monkeypatch):
    _, result = ablation
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    notes: list[str] = []
    assert plot(tmp_path, result.table, result.summary, result.comparisons, {}, notes) is None
    assert notes and "matplotlib is not installed" in notes[0]
    assert not (tmp_path / "results.png").exists()


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="--features"):
        AblateSettings(features=("text+Sound!",))  # not a feature-set name (an unknown name fails at training)
    with pytest.raises(ConfigError, match="--baselines"):
        AblateSettings(baselines=("bonmf",))
    with pytest.raises(ConfigError, match="--seeds"):
        AblateSettings(seeds=0)
    with pytest.raises(ConfigError, match="--tune"):
        AblateSettings(tune_trials=-1)
    assert AblateSettings().variants()[2:] == [("bonmf", ()), ("bonmf", ("text",)), ("bonmf", ("image",)),
                                               ("bonmf", ("text", "image"))]
    assert AblateSettings(train=TrainSettings(seed=7), seeds=3).seed_list() == [7, 8, 9]


def test_tuned_ablation_uses_each_variants_best_trial(tmp_path):
    store = build_cold_store(tmp_path / "store")
    settings = AblateSettings(train=TrainSettings(epochs=2, batch_size=256, device="cpu", seed=5, threads=1),
                              features=("text",), baselines=("svd",), name="tuned", tune_trials=2)
    result = ablate(store, settings)
    trials = query(store, "SELECT study, trial, run_id, valid_rmse, is_best FROM tuning").to_pylist()
    for r in result.table.to_pylist():
        mine = [t for t in trials if t["study"] == r["tune_study"]]
        assert len(mine) == 2 and r["tune_study"].endswith(f"-s{r['seed']}")
        [best] = [t for t in mine if t["is_best"]]
        assert r["run_id"] == best["run_id"] and r["valid_rmse"] == pytest.approx(best["valid_rmse"])
        assert best["valid_rmse"] == min(t["valid_rmse"] for t in mine)
    studies = [r["tune_study"] for r in result.table.to_pylist()]
    assert studies == [f"{result.ablation_id}-svd-none-s5", f"{result.ablation_id}-bonmf-text-s5"]
