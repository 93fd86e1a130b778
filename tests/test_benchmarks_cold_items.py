"""The cold-items benchmark end to end on the trainer's synthetic store (80 items, tags on 50):
it encodes the tags template set into its copy with the offline MiniLM, ablates svd, nmf and
bonmf text+image / tags / text+image+tags on cold-items:0.1 over two seeds, and reports each
variant paired against the best ID-only model and against text+image. Figures are never
asserted, only their shape and the split's promise (every test item unseen)."""

from __future__ import annotations

import json

import pytest

from benchmarks.cold_items import default_features, main, parse_template
from tests.pipeline.encode.test_template_sets import TAGGED, set_tags
from tests.trainer.conftest import build_store


def test_default_variants_follow_the_template_sets():
    assert default_features(()) == ("text+image",)
    assert default_features((("tags", "{tags}"),)) == ("text+image", "tags", "text+image+tags")
    assert parse_template("plot={title}. {text}") == ("plot", "{title}. {text}")
    with pytest.raises(SystemExit, match="NAME=TEMPLATE"):
        parse_template("{tags}")


def test_cold_items_benchmark_encodes_tags_and_pairs_against_text_image(tmp_path, capsys):
    source = build_store(tmp_path / "source")
    ids = source.read_table("items", columns=["item_id"]).column(0).to_pylist()
    set_tags(source, {i: [f"tag{i % 7}", "quiet" if k % 2 else "loud"] for k, i in enumerate(ids[:TAGGED])})
    out = tmp_path / "results"
    main(["--store", str(source.root), "--seeds", "2", "--epochs", "1", "--work", str(tmp_path / "work"),
          "--out", str(out)])
    assert "vs_text_image: bonmf tags - bonmf text+image" in capsys.readouterr().out
    assert not (source.root / "features" / "tags").exists()  # the source store is only read

    (path,) = out.glob("cold-items-*.json")
    res = json.loads(path.read_text())["results"]
    tags = res["template_sets"]["tags"]
    assert tags["template"] == "{tags}" and tags["encoded"] == TAGGED and tags["rejected"] == len(ids) - TAGGED
    assert [s["variant"] for s in res["summary"]] == [
        "svd", "nmf", "bonmf text+image", "bonmf tags", "bonmf text+image+tags"]
    assert res["seeds"] == [42, 43]
    for split in res["splits"].values():
        assert 0 < split["held_out_items"] < len(ids)
    for r in res["rows"]:  # every test rating is of a movie no model saw in training
        assert r["unseen_rows"] == res["splits"][str(r["seed"])]["test_rows"]

    best = min((s for s in res["summary"] if s["features"] == "none"), key=lambda s: s["rmse_mean"])["variant"]
    assert [c["reference"] for c in res["comparisons"]] == [best] * 3  # the ablation's own, kept
    vs_id = res["paired"]["vs_best_id_only"]
    vs_ti = res["paired"]["vs_text_image"]
    assert [(c["variant"], c["reference"]) for c in vs_id] == [
        ("bonmf text+image", best), ("bonmf tags", best), ("bonmf text+image+tags", best)]
    assert [(c["variant"], c["reference"]) for c in vs_ti] == [
        ("bonmf tags", "bonmf text+image"), ("bonmf text+image+tags", "bonmf text+image")]
    rows = {(r["model"], r["features"], r["seed"]): r for r in res["rows"]}
    for c in vs_ti:
        feats = c["variant"].removeprefix("bonmf ")
        for m in ("rmse", "ndcg_at_10"):
            d = c[m]
            diffs = [rows[("bonmf", feats, sd)][m] - rows[("bonmf", "text+image", sd)][m] for sd in (42, 43)]
            assert d["n"] == 2 and d["mean"] == pytest.approx(sum(diffs) / 2)
            assert d["low"] <= d["mean"] <= d["high"]
