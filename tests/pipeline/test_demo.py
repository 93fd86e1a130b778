"""The main job end to end on a small embedded sample: sample -> ingest -> encode (the offline
models) -> a two-seed ablation -> one table; a second run encodes nothing new."""

from __future__ import annotations

from bonmf_pipe.pipeline.demo import DemoSettings, run_demo


def test_demo_runs_the_whole_pipeline_twice(tmp_path):
    settings = DemoSettings(out=tmp_path / "demo", users=50, items=80, ratings=2_500, seeds=2, device="cpu")
    first = run_demo(settings)
    assert set(first.stage_seconds) == {"sample", "ingest", "encode", "train+evaluate"}
    assert first.ingest.items == 80 and first.ingest.ratings == 2_500 and first.ingest.posters_matched == 80
    assert {m.modality: m.encoded for m in first.encode.modalities} == {"text": 80, "image": 80}
    rows = first.ablation.table.to_pylist()
    variants = {(r["model"], r["features"]) for r in rows}
    assert {("svd", "none"), ("nmf", "none"), ("bonmf", "text+image")} <= variants
    assert all(0.3 < r["rmse"] < 2.0 for r in rows)
    again = run_demo(settings)
    assert {m.modality: m.encoded for m in again.encode.modalities} == {"text": 0, "image": 0}
    assert again.ablation.ablation_id != first.ablation.ablation_id
