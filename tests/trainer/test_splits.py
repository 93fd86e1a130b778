"""Splits: reproducible from the seed, disjoint, streamed by DuckDB, and the ml-100k files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from bonmf_pipe.errors import ConfigError, InputError
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.trainer import make_split, split_dataset

from .conftest import build_store


def _rows(store, split_id):
    t = split_dataset(store, split_id).to_table().sort_by([("user_id", "ascending"), ("item_id", "ascending")])
    return t


def test_random_split_is_reproducible_disjoint_and_covers_every_rating(small_store):
    a = make_split(small_store, "random:0.7", seed=7)
    assert make_split(small_store, "random:0.7", seed=7) == a  # idempotent: same id, table reused
    rows = _rows(small_store, a)
    ratings = small_store.read_table("ratings")
    assert rows.num_rows == ratings.num_rows
    keys = set(zip(rows.column("user_id").to_pylist(), rows.column("item_id").to_pylist()))
    assert len(keys) == rows.num_rows  # each rating exactly once, in one part
    parts = rows.column("part").to_numpy(zero_copy_only=False)
    share_test = (parts == "test").mean()
    assert 0.25 < share_test < 0.35
    assert 0.01 < (parts == "valid").mean() < 0.1
    # another seed gives another split of the same ratings; the same seed in a fresh store the same one
    b = make_split(small_store, "random:0.7", seed=8)
    assert b != a and not np.array_equal(parts, _rows(small_store, b).column("part").to_numpy(zero_copy_only=False))


def test_same_seed_gives_same_rows_in_another_store(tmp_path):
    s1 = build_store(tmp_path / "one")
    s2 = build_store(tmp_path / "two", rows_per_file=500, row_group_size=100)
    r1 = _rows(s1, make_split(s1, "random:0.6", seed=3))
    r2 = _rows(s2, make_split(s2, "random:0.6", seed=3))
    assert r1.column("part").to_pylist() == r2.column("part").to_pylist()


def test_split_is_a_table_in_sql(small_store):
    split_id = make_split(small_store, "random:0.7", seed=1)
    got = query(small_store, f"SELECT part, count(*) AS n FROM split_{split_id} GROUP BY part ORDER BY part")
    assert got.column("part").to_pylist() == ["test", "train", "valid"]


def test_per_user_split_keeps_every_user_in_train(small_store):
    rows = _rows(small_store, make_split(small_store, "per-user:0.5", seed=1))
    users = np.unique(rows.column("user_id").to_numpy())
    parts = rows.column("part").to_numpy(zero_copy_only=False)
    assert set(np.unique(rows.column("user_id").to_numpy()[parts != "test"])) == set(users)
    for u in users[:10]:
        mine = rows.filter(pc.equal(rows.column("user_id"), u)).column("part").to_pylist()
        assert abs(sum(p != "test" for p in mine) - 0.5 * len(mine)) <= 1


def test_temporal_split_tests_on_the_latest_ratings(small_store):
    rows = _rows(small_store, make_split(small_store, "temporal:0.8", seed=1))
    parts = rows.column("part").to_numpy(zero_copy_only=False)
    ts = rows.column("timestamp").to_numpy()
    assert ts[parts != "test"].max() <= ts[parts == "test"].min()
    assert 0.15 < (parts == "test").mean() < 0.25


def _ml100k_fixture(folder: Path, store) -> None:
    """u1.base / u1.test in the ml-100k format: tab-separated user, item, rating, timestamp."""
    folder.mkdir(parents=True, exist_ok=True)
    t = store.read_table("ratings").sort_by([("user_id", "ascending"), ("item_id", "ascending")]).to_pylist()
    test, base = t[::5], [r for k, r in enumerate(t) if k % 5]
    for name, rows in (("u1.test", test), ("u1.base", base)):
        lines = [f"{r['user_id']}\t{r['item_id']}\t{int(r['rating'])}\t{r['timestamp']}" for r in rows]
        (folder / name).write_text("\n".join(lines) + "\n")


def test_file_split_reads_the_ml100k_split_files(tmp_path):
    source = tmp_path / "ml-100k"
    store = build_store(tmp_path / "store", source=source)
    _ml100k_fixture(source, store)
    rows = _rows(store, make_split(store, "file", seed=1))
    expected = {tuple(map(int, line.split("\t")[:2])) for line in (source / "u1.test").read_text().split("\n") if line}
    got = {
        (u, i) for u, i, p in zip(rows.column("user_id").to_pylist(), rows.column("item_id").to_pylist(),
                                  rows.column("part").to_pylist()) if p == "test"
    }
    assert got == expected
    with pytest.raises(InputError, match="u2.base"):
        make_split(store, "file:u2", seed=1)


def test_file_split_on_another_edition_says_why(small_store):
    with pytest.raises(InputError, match="only the ml-100k edition"):
        make_split(small_store, "file", seed=1)


@pytest.mark.parametrize("spec", ["random:1.5", "bogus:0.7", "random:x", "file:u9"])
def test_bad_split_specs_are_config_errors(small_store, spec):
    with pytest.raises(ConfigError):
        make_split(small_store, spec, seed=1)


def test_trainers_creating_the_same_split_at_once_agree(small_store):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        ids = list(pool.map(lambda _: make_split(small_store, "random:0.75", seed=9), range(2)))
    assert ids[0] == ids[1]
    assert _rows(small_store, ids[0]).num_rows == small_store.read_table("ratings").num_rows


def test_duckdb_memory_follows_the_budget_within_bounds():
    from bonmf_pipe.trainer.splits import DUCKDB_MAX_MB, DUCKDB_MIN_MB, duckdb_memory_mb

    assert duckdb_memory_mb(1) == DUCKDB_MIN_MB == 128  # DuckDB's working minimum for a 25 M sort
    assert duckdb_memory_mb(768) == 192  # a quarter of the command's budget (DuckDB overshoots its limit)
    assert duckdb_memory_mb(100_000) == DUCKDB_MAX_MB  # sorts spill beyond it


def test_the_duckdb_limit_changes_neither_the_rows_nor_their_stored_order(tmp_path):
    """The split the trainer streams (rows in their stored order) is the same whatever memory
    DuckDB was given to sort it."""
    from bonmf_pipe.trainer.splits import DUCKDB_MAX_MB, DUCKDB_MIN_MB

    tables = []
    for limit in (DUCKDB_MIN_MB, DUCKDB_MAX_MB):
        store = build_store(tmp_path / f"limit-{limit}")
        split_id = make_split(store, "random:0.6", seed=5, memory_limit_mb=limit, row_group_size=512)
        tables.append(split_dataset(store, split_id).to_table())
    assert tables[0].num_rows > 1000 and tables[0].equals(tables[1])
