"""features import: each format round-trips into a feature set (shards, manifest, views);
bad rows go to rejects with a reason; external id spaces map through the items table;
re-importing the same file writes nothing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bonmf_pipe.errors import ConfigError, InputError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.features import feature_sets, load_feature_matrix, resolve_feature_set
from bonmf_pipe.featurestore.manifest import read_manifest
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.pipeline.features_import import ImportSettings, import_features
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

DIM = 12


@pytest.fixture(scope="module")
def store(tmp_path_factory, ml_latest_small) -> Store:
    """ml-latest-small ingested (no posters, no encoding)."""
    s = Store.open(tmp_path_factory.mktemp("import") / "store", create=True)
    ingest(s, IngestSettings(path=ml_latest_small))
    return s


def _vectors(store: Store, n: int = 300, seed: int = 0):
    items = np.sort(store.read_table("items", columns=["item_id"]).column(0).to_numpy())
    rng = np.random.default_rng(seed)
    ids = rng.choice(items[items > 3], size=n, replace=False)  # 1..3 are the bad rows' ids
    return ids, rng.normal(size=(n, DIM)).astype(np.float32)


def _bad_rows():
    """(id, vector, reason prefix) of rows every format must reject."""
    ok = [0.5] * DIM
    return [
        (99_999_999, ok, "unknown id"),
        (1, [float("nan")] + [0.5] * (DIM - 1), "non-finite"),
        (2, [0.5] * (DIM + 3), "dimension"),
        (3, [1e39] + [0.5] * (DIM - 1), "non-finite"),  # beyond float32
    ]


def _check(store: Store, result, source, name: str, ids, vecs, n_rejects: int):
    assert not result.unchanged and result.rows == len(ids) and result.dim == DIM
    assert result.rejected == n_rejects
    fs = resolve_feature_set(store, name)
    assert fs.key == result.key and fs.rows == len(ids) and read_manifest(fs.folder).files
    got, found = load_feature_matrix(store, fs, ids)
    assert found.all()
    np.testing.assert_array_equal(got, vecs)
    view = query(store, f"SELECT count(*) AS n, count(DISTINCT item_id) AS d FROM {name}_features").to_pylist()[0]
    assert view == {"n": len(ids), "d": len(ids)}
    rejects = store.read_table("rejects")
    mine = rejects.filter(pc.and_(pc.equal(rejects.column("stage"), "features-import"),
                                  pc.equal(rejects.column("source"), str(source))))
    assert mine.num_rows == n_rejects


@pytest.mark.parametrize("fixed", [False, True])
def test_parquet_round_trip(store, tmp_path, fixed):
    ids, vecs = _vectors(store, seed=int(fixed))
    bad = _bad_rows()
    all_ids = [*ids.tolist(), *(b[0] for b in bad), int(ids[0])]  # the last: a duplicate of the first
    rows = [*vecs.tolist(), *(b[1] for b in bad), vecs[1].tolist()]
    if fixed:  # a fixed-size list column cannot hold the wrong-dimension row
        keep = [k for k, r in enumerate(rows) if len(r) == DIM]
        all_ids, rows = [all_ids[k] for k in keep], [rows[k] for k in keep]
        col = pa.FixedSizeListArray.from_arrays(pa.array(np.ravel(rows), pa.float32()), DIM)
    else:
        col = pa.array(rows, pa.list_(pa.float64()))
    path = tmp_path / "vecs.parquet"
    pq.write_table(pa.table({"movieId": pa.array(all_ids, pa.int64()), "embedding": col}), path)
    name = f"pq_{'fixed' if fixed else 'list'}"
    result = import_features(store, ImportSettings(path=path, name=name, key_column="movieId", provenance="test"))
    _check(store, result, path, name, ids, vecs, n_rejects=len(all_ids) - len(ids))
    assert result.reasons.get("duplicate") == 1 and result.reasons.get("unknown id") == 1
    again = import_features(store, ImportSettings(path=path, name=name, key_column="movieId", provenance="test"))
    assert again.unchanged and again.key == result.key and again.rows == 0
    assert len(read_manifest(result.folder).files) == len(read_manifest(again.folder).files)
    # another provenance is another feature set of the same name (the newest is used)
    other = import_features(store, ImportSettings(path=path, name=name, key_column="movieId", provenance="v2"))
    assert other.key != result.key and resolve_feature_set(store, name).key == other.key


def test_npy_round_trip_with_an_id_file(store, tmp_path):
    ids, vecs = _vectors(store, seed=3)
    bad = [b for b in _bad_rows() if len(b[1]) == DIM]
    array = np.vstack([vecs, np.array([b[1] for b in bad], dtype=np.float64)])
    np.save(tmp_path / "vecs.npy", array)
    (tmp_path / "ids.txt").write_text("item_id\n" + "\n".join(str(i) for i in [*ids.tolist(), *(b[0] for b in bad)]) + "\n")
    result = import_features(store, ImportSettings(path=tmp_path / "vecs.npy", ids=tmp_path / "ids.txt", name="npy_vecs"))
    _check(store, result, tmp_path / "vecs.npy", "npy_vecs", ids, vecs, n_rejects=len(bad))
    np.save(tmp_path / "ids.npy", np.array([1, 2]))
    with pytest.raises(InputError, match="one id per row"):
        import_features(store, ImportSettings(path=tmp_path / "vecs.npy", ids=tmp_path / "ids.npy", name="npy_short"))
    with pytest.raises(ConfigError, match="--ids"):
        import_features(store, ImportSettings(path=tmp_path / "vecs.npy", name="npy_noids"))


@pytest.mark.parametrize("layout", ["columns", "text"])
def test_csv_round_trip(store, tmp_path, layout):
    ids, vecs = _vectors(store, seed=5)
    bad = [b for b in _bad_rows() if layout == "text" or len(b[1]) == DIM]
    rows = [*zip(ids.tolist(), vecs.tolist()), *((b[0], b[1]) for b in bad)]
    path = tmp_path / f"vecs-{layout}.csv"
    if layout == "columns":
        lines = ["item_id," + ",".join(f"d{j}" for j in range(DIM))]
        lines += [f"{i}," + ",".join(repr(float(x)) for x in v) for i, v in rows]
        lines.append("notanid," + ",".join(["0.1"] * DIM))
        settings = ImportSettings(path=path, name=f"csv_{layout}")
    else:
        lines = ["item_id,vector"] + [f'{i},"[{" ".join(repr(float(x)) for x in v)}]"' for i, v in rows]
        lines.append("notanid,\"[0.1 0.2]\"")
        settings = ImportSettings(path=path, name=f"csv_{layout}", vector_column="vector")
    path.write_text("\n".join(lines) + "\n")
    result = import_features(store, settings)
    _check(store, result, path, f"csv_{layout}", ids, vecs, n_rejects=len(bad) + 1)
    assert result.reasons.get("bad id") == 1


def test_imdb_and_tmdb_ids_map_to_items(store, tmp_path):
    items = store.read_table("items", columns=["item_id", "imdb_id", "tmdb_id"]).to_pylist()
    with_ids = [r for r in items if r["imdb_id"] and r["tmdb_id"]][:40]
    vecs = np.arange(len(with_ids) * DIM, dtype=np.float32).reshape(-1, DIM)
    for key, col, fmt in (("imdbId", "imdb_id", "tt{}"), ("tmdbId", "tmdb_id", "{}")):
        path = tmp_path / f"{key}.parquet"
        ext = [fmt.format(str(r[col]).removeprefix("tt")) for r in with_ids]
        pq.write_table(pa.table({key: ext, "v": pa.array(vecs.tolist(), pa.list_(pa.float32()))}), path)
        result = import_features(store, ImportSettings(path=path, name=f"by_{key.lower()}", key_column=key))
        assert result.rows == len(with_ids) and result.rejected == 0
        got, found = load_feature_matrix(store, resolve_feature_set(store, f"by_{key.lower()}"),
                                         np.array([r["item_id"] for r in with_ids]))
        assert found.all()
        np.testing.assert_array_equal(got, vecs)


def test_settings_and_files_are_checked(store, tmp_path):
    with pytest.raises(ConfigError, match="not text or image"):
        ImportSettings(path=tmp_path / "x.parquet", name="text")
    with pytest.raises(ConfigError, match="lower-case"):
        ImportSettings(path=tmp_path / "x.parquet", name="My Vecs")
    with pytest.raises(ConfigError, match="--key-column"):
        ImportSettings(path=tmp_path / "x.parquet", name="v", key_column="asin")
    with pytest.raises(ConfigError, match="suffix"):
        import_features(store, ImportSettings(path=tmp_path / "x.json", name="v"))
    path = tmp_path / "nolist.parquet"
    pq.write_table(pa.table({"item_id": [1, 2], "x": [0.1, 0.2]}), path)
    with pytest.raises(InputError, match="--vector-column"):
        import_features(store, ImportSettings(path=path, name="v"))
    path = tmp_path / "allbad.parquet"
    pq.write_table(pa.table({"item_id": [99_999_998], "v": [[0.1, 0.2]]}), path)
    with pytest.raises(InputError, match="no row could be imported"):
        import_features(store, ImportSettings(path=path, name="v"))
    assert all(fs.modality != "v" for fs in feature_sets(store))


def test_coverage_view_counts_items_with_and_without_a_vector(store, tmp_path):
    ids, vecs = _vectors(store, n=50, seed=9)
    path = tmp_path / "cov.parquet"
    pq.write_table(pa.table({"item_id": ids, "v": pa.array(vecs.tolist(), pa.list_(pa.float32()))}), path)
    import_features(store, ImportSettings(path=path, name="cov"))
    rows = {r["feature_set"]: r for r in query(store, "SELECT * FROM coverage").to_pylist()}
    n_items = store.read_table("items").num_rows
    assert rows["cov"]["with_vector"] == 50 and rows["cov"]["without_vector"] == n_items - 50
    assert rows["cov"]["items"] == n_items and rows["cov"]["dim"] == DIM


def test_features_cli_imports_and_shows_coverage(store, tmp_path):
    from typer.testing import CliRunner

    from bonmf_pipe.cli import app

    ids, vecs = _vectors(store, n=30, seed=11)
    np.save(tmp_path / "v.npy", vecs)
    np.save(tmp_path / "ids.npy", ids)
    argv = ["features", "import", str(tmp_path / "v.npy"), "--ids", str(tmp_path / "ids.npy"), "--name", "cli_vecs",
            "--provenance", "random test vectors", "--store", str(store.root)]
    out = CliRunner().invoke(app, argv)
    assert out.exit_code == 0, out.output
    assert "cli_vecs: 30 vectors of 12 dims" in out.output and "--features text,image,cli_vecs" in out.output
    again = CliRunner().invoke(app, argv)
    assert again.exit_code == 0 and "nothing to do" in again.output
    cov = CliRunner().invoke(app, ["features", "coverage", "--store", str(store.root)])
    assert cov.exit_code == 0 and "cli_vecs" in cov.output
    bad = CliRunner().invoke(app, [*argv[:-4], "--name", "image", "--store", str(store.root)])
    assert bad.exit_code == 1 and "not text or image" in bad.output


def test_features_coverage_on_a_store_without_feature_sets(tmp_path, ml_latest_small):
    from typer.testing import CliRunner

    from bonmf_pipe.cli import app

    bare = Store.open(tmp_path / "bare", create=True)
    ingest(bare, IngestSettings(path=ml_latest_small))
    cov = CliRunner().invoke(app, ["features", "coverage", "--store", str(bare.root)])
    assert cov.exit_code == 0, cov.output
    assert "no feature sets in this store yet" in cov.output and "bonmf-pipe encode" in cov.output
