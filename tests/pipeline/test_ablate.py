"""ablate on a small synthetic store: one split for every run, the comparison table, the chart."""

from __future__ import annotations

import json
import sys

import pyarrow.parquet as pq
import pytest

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.pipeline.ablate import RESULT_SCHEMA, AblateSettings, _plot, ablate
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
    )
    return store, ablate(store, settings)


def test_ablation_table_and_files(ablation):
    store, result = ablation
    rows = result.table.to_pylist()
    assert [(r["model"], r["features"]) for r in rows] == [("svd", "none"), ("bonmf", "text+image")]
    assert len({read_run_config(store, r["run_id"])["split_id"] for r in rows}) == 1
    assert {read_run_config(store, r["run_id"])["split_id"] for r in rows} == {result.split_id}
    for r in rows:
        test = read_run_config(store, r["run_id"])["test"]
        assert r["rmse"] == pytest.approx(test["rmse"], rel=1e-5)
        assert r["cold_rows"] > 0 and r["cold_rmse"] > 0 and r["unseen_rows"] > 0
        assert 0 <= r["precision_at_10"] <= 1 and 0 <= r["ndcg_at_10"] <= 1
        assert r["fit_seconds"] > 0
    saved = pq.read_table(result.folder / "results.parquet")
    assert saved.schema.remove_metadata().equals(RESULT_SCHEMA)
    assert saved.num_rows == 2
    md = result.markdown
    assert "| model | features | RMSE |" in md and f"{rows[0]['rmse']:.4f}" in md
    meta = json.loads((result.folder / "results.json").read_text())
    assert meta["settings"]["train"]["epochs"] == 2 and len(meta["rows"]) == 2
    assert result.plot is not None and result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n = query(store, "SELECT count(*) AS n FROM ablations")
    assert n.column("n").to_pylist() == [2]


def test_without_matplotlib_there_is_a_note_and_no_chart(ablation, tmp_path, monkeypatch):
    _, result = ablation
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    notes: list[str] = []
    assert _plot(tmp_path, result.table, {}, notes) is None
    assert notes and "matplotlib is not installed" in notes[0]
    assert not (tmp_path / "results.png").exists()


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="--features"):
        AblateSettings(features=("text+sound",))
    with pytest.raises(ConfigError, match="--baselines"):
        AblateSettings(baselines=("bonmf",))
    assert AblateSettings().variants()[2:] == [("bonmf", ()), ("bonmf", ("text",)), ("bonmf", ("image",)),
                                               ("bonmf", ("text", "image"))]
