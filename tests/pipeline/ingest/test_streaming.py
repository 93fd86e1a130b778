"""Ratings streamed in many small blocks and batches give exactly the in-memory answer."""

from __future__ import annotations

import random

import polars as pl

from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest
from bonmf_pipe.pipeline.ingest import ratings as ratings_mod
from bonmf_pipe.pipeline.ingest.reader import iter_line_blocks


def _synthetic(folder, n=6_000, seed=7):
    rng = random.Random(seed)
    folder.mkdir()
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{i},Movie {i} (2000),Drama\n" for i in range(1, 41)))
    lines = ["userId,movieId,rating,timestamp"]
    for _ in range(n):
        kind = rng.random()
        user, item, ts = rng.randint(1, 60), rng.randint(1, 45), rng.randint(1, 50)  # items 41..45 unknown
        rating = rng.choice(["0.5", "3.0", "4.5", "5.0"]) if kind > 0.02 else rng.choice(["6.0", "x"])
        lines.append(f"{user},{item},{rating},{ts}")
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    return lines


def _expected(lines):
    """The rules, written plainly over the whole file in memory."""
    rows = []
    for no, line in enumerate(lines[1:], start=2):
        u, i, r, t = line.split(",")
        if r in {"6.0", "x"} or int(i) > 40:
            continue
        rows.append((int(u), int(i), float(r), int(t), no))
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp", "line"], orient="row")
    keep = frame.sort(["timestamp", "line"]).group_by("user_id", "item_id").agg(pl.col("line").last())
    return frame.filter(pl.col("line").is_in(keep["line"].implode())).sort("line"), frame.height - keep.height


def test_small_blocks_and_batches_match_the_in_memory_rules(tmp_path, monkeypatch):
    lines = _synthetic(tmp_path / "data")
    expected, duplicates = _expected(lines)
    assert duplicates > 100  # the data really has many duplicates across blocks
    monkeypatch.setattr(ratings_mod, "_BATCH_ROWS", 97)
    store = Store.open(tmp_path / "store", create=True)
    summary = ingest(store, IngestSettings(path=tmp_path / "data", dataset="ml-csv", block_bytes=1024))
    got = pl.from_arrow(store.read_table("ratings"))
    assert got.to_dicts() == expected.drop("line").with_columns(pl.col("rating").cast(pl.Float32)).to_dicts()
    assert summary.rejected["duplicate"] == duplicates
    rejects = pl.from_arrow(store.read_table("rejects"))
    for row in rejects.filter(pl.col("reason").str.starts_with("duplicate")).iter_rows(named=True):
        assert lines[row["line"] - 1] == row["raw"]  # the exact line, by its number
    kept_lines = set(expected["line"].to_list())
    rejected_lines = set(rejects["line"].to_list())
    assert kept_lines.isdisjoint(rejected_lines) and len(kept_lines | rejected_lines) == len(lines) - 1


def test_line_blocks_cover_every_line_once(tmp_path):
    path = tmp_path / "f.txt"
    text = "\ufeffhead\r\n" + "".join(f"line {i}\n" for i in range(2, 500)) + "last, no newline"
    path.write_bytes(text.encode())
    seen = []
    for first, lines, _ in iter_line_blocks(path, block_bytes=100):
        seen.extend((first + k, v) for k, v in enumerate(lines.to_list()))
    assert seen[0] == (1, "head") and seen[-1] == (500, "last, no newline")
    assert [n for n, _ in seen] == list(range(1, 501))
    assert all(v == f"line {n}" for n, v in seen[1:-1])
