"""The read-path benchmark's quickest form (``--smoke``) writes well-formed results: every
variant timed, the speed figures paired with their same-run baselines. Speed is never asserted."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main


def test_read_path_smoke(tmp_path):
    out = tmp_path / "results"
    main(["--suite", "train-read-path", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")])
    (path,) = out.glob("train-read-path-*.json")
    r = json.loads(path.read_text())["results"]
    assert r["variants"][0] == "previous" and r["threads"][0] == 1
    assert set(r["rows_per_s"]) == set(r["variants"]) and all(v > 0 for v in r["rows_per_s"].values())
    assert all(len(s) == r["repeats"] for s in r["runs_seconds"].values())
    assert set(r["cores_busy"]) == set(r["variants"]) and all(c > 0 for c in r["cores_busy"].values())
    for key in ("default_threads_vs_one", "default_threads_vs_previous", "one_thread_vs_previous"):
        fig = r[key]
        assert fig["value"] > 0 and fig["ceiling"] > 0 and fig["ceiling_is"]
        assert fig["ratio"] == pytest.approx(fig["value"] / fig["ceiling"], rel=1e-2)
    assert r["other_processes_cores_busy"] >= 0
    assert r["n_train"] > 0 and r["step_ceiling_this_machine"]["ceiling_ratings_per_s"] > 0
    assert set(r["one_thread_breakdown_seconds"]) == {"count", "read", "draw", "take", "index"}
    assert r["h200"]["streaming_goal_ratings_per_s"] > 0
    assert 0 < r["threads_bound"]["serial_share"] < 1 and r["threads_bound"]["at_2_threads"] <= 2
