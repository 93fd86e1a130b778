"""The benchmarks' quickest form (``--smoke``) writes well-formed results: keys present, figures
positive, every speed figure paired with a ceiling and a ratio. Speed itself is never asserted."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from bonmf_pipe.trainer import TrainSettings


def _paired(fig: dict) -> None:
    assert set(fig) >= {"value", "ceiling", "ratio", "unit", "ceiling_is"}
    assert fig["value"] > 0 and fig["ceiling"] > 0
    assert fig["ratio"] == pytest.approx(fig["value"] / fig["ceiling"], rel=1e-2)
    assert fig["ceiling_is"]


def _load(out, suite: str) -> dict:
    files = list(out.glob(f"{suite}-*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["suite"] == suite and doc["machine"]["cpu_count"] >= 1 and doc["machine"]["date"]
    return doc["results"]


def test_ingest_and_train_smoke(tmp_path, capsys):
    out = tmp_path / "results"
    main(["--suite", "ingest", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")])
    main(["--suite", "train", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")])
    assert "rows_per_s" in capsys.readouterr().out  # the rich table names the figures

    ingest = _load(out, "ingest")
    _paired(ingest["rows_per_s"])
    assert ingest["rows_per_s"]["unit"] == "ratings/s"
    assert ingest["settings"]["ratings"] == 20_000
    assert ingest["peak_rss_mb"] > 0 and ingest["ceiling_peak_rss_mb"] > 0

    train = _load(out, "train")
    assert set(train["by_batch_size"]) == {"512", str(TrainSettings(model="nmf").effective().batch_size)}
    for fig in train["by_batch_size"].values():
        _paired(fig["resident_ratings_per_s"])
        _paired(fig["streaming_ratings_per_s"])
        assert fig["rows_measured"] > 0
        assert fig["seconds_per_epoch_streaming"] > 0 and fig["seconds_per_epoch_resident"] > 0
        assert fig["peak_rss_mb_streaming"] > 0 and fig["peak_rss_mb_resident"] > 0


def test_startup_benchmark_probes_fresh_processes(tmp_path):
    from benchmarks import startup

    startup.main(["--repeats", "1", "--out", str(tmp_path)])
    probes = json.loads((tmp_path / next(p.name for p in tmp_path.glob("startup-*.json"))).read_text())["results"]["probes"]
    assert probes["import torch"]["imports_torch"] is True
    for name in ("bonmf-pipe --help", "bonmf-pipe info", "bonmf-pipe sql"):
        assert probes[name]["imports_torch"] is False and probes[name]["peak_rss_mb"] > 0
