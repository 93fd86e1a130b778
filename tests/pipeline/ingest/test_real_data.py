"""End to end on the real MovieLens data in ../shared/data (read-only; stores in tmp)."""

from __future__ import annotations

import shutil

import pytest

from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest
from bonmf_pipe.progress import ProgressEvent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, ml_latest_small, ml_1m_posters):
    store = Store.open(tmp_path_factory.mktemp("small") / "store", create=True)
    summary = ingest(store, IngestSettings(path=ml_latest_small, posters=ml_1m_posters))
    return store, summary


def test_ml_latest_small_with_posters(small_store, ml_1m_posters):
    store, s = small_store
    assert (s.edition, s.ratings, s.items, s.users, s.tag_applications) == ("ml-latest-small", 100_836, 9_742, 610, 3_683)
    # The 925 ML-1M posters of movies that ml-latest-small lacks are rejects, not silently ignored.
    assert (s.posters_found, s.posters_matched, s.posters_rejected) == (3_872, 2_947, 925)
    assert s.rejected == {"poster_unknown_item": 925} and store.read_table("rejects").num_rows == 925
    assert s.latin1_lines == {}  # every line of the UTF-8 CSV edition stays UTF-8
    assert store.manifest("ratings").rows == 100_836 and store.manifest("tags").rows == 3_683
    items = {r["item_id"]: r for r in store.read_table("items").to_pylist()}
    toy = items[1]
    assert (toy["title"], toy["year"], toy["imdb_id"], toy["tmdb_id"]) == ("Toy Story", 1995, "tt0114709", 862)
    assert toy["text"].startswith("Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: ")
    assert toy["poster_path"] == str((ml_1m_posters / "1.jpg").resolve())
    assert len(toy["poster_sha256"]) == 64 and (toy["poster_width"], toy["poster_height"]) == (185, 278)
    assert sum(r["poster_path"] is not None for r in items.values()) == 2_947
    assert items[11]["title"] == "American President, The"
    assert (items[171749]["title"], items[171749]["year"]) == ("Death Note: Desu nôto", 2006)
    assert verify_store(store).ok


def test_reingest_gives_identical_tables(small_store, ml_latest_small, ml_1m_posters):
    store, _ = small_store
    before = {name: store.read_table(name) for name in ("items", "users", "ratings", "tags", "rejects")}
    again = ingest(store, IngestSettings(path=ml_latest_small, posters=ml_1m_posters))
    assert again.ratings == 100_836
    for name, table in before.items():
        assert store.read_table(name).equals(table), name
    assert len([d for d in store.table_dir("ratings").iterdir() if d.is_dir()]) == 2  # kept until vacuum
    store.vacuum()
    assert len([d for d in store.table_dir("ratings").iterdir() if d.is_dir()]) == 1  # old generation removed
    assert verify_store(store).ok


def test_ml_1m_has_no_ratings(tmp_path, ml_1m):
    store = Store.open(tmp_path / "store", create=True)
    events: list[ProgressEvent] = []
    s = ingest(store, IngestSettings(path=ml_1m), events.append)
    assert (s.edition, s.items, s.users, s.ratings, s.ratings_present) == ("ml-1m", 3_883, 6_040, 0, False)
    assert store.read_table("ratings").num_rows == 0 and store.has_table("ratings")
    assert store.read_table("users").num_rows == 6_040
    notes = " ".join(e.message for e in events if e.kind == "note")
    assert "ratings are absent" in notes and "Encoding can still run" in notes
    items = {r["item_id"]: r for r in store.read_table("items").to_pylist()}
    assert items[73]["title"] == "Misérables, Les"
    assert s.rejected == {}
    assert s.latin1_lines == {"movies.dat": 50}  # ml-1m is latin-1: its 50 non-ASCII lines


def test_corrupted_copy_lands_in_rejects(tmp_path, ml_latest_small, ml_1m_posters):
    data = tmp_path / "ml-latest-small"
    shutil.copytree(ml_latest_small, data)
    lines = (data / "ratings.csv").read_text().splitlines()
    lines[10] = "1,1,4.0"  # line 11: malformed
    lines[20] = lines[20].replace(",", ";")  # line 21: malformed
    lines[30] = "1,1,9.0,964982703"  # line 31: out of scale (and would duplicate line 2)
    lines.append(lines[1].replace("964982703", "964982704"))  # a later duplicate of line 2: line 2 rejected
    lines.append("1,999999,4.0,964982703")  # unknown item
    (data / "ratings.csv").write_text("\n".join(lines) + "\n")
    posters = tmp_path / "posters"
    posters.mkdir()
    for i in (1, 2, 3, 5, 6, 7):
        shutil.copy(ml_1m_posters / f"{i}.jpg", posters / f"{i}.jpg")
    jpg = (posters / "2.jpg").read_bytes()
    (posters / "2.jpg").write_bytes(jpg[: len(jpg) // 2])  # truncated
    (posters / "3.jpg").write_bytes(b"")  # empty
    (posters / "5.jpg").write_text("<html>404 Not Found</html>")  # not an image
    (posters / "6.jpg").write_bytes(jpg[:200] + b"\x00" * 3000)  # a header, then garbage
    store = Store.open(tmp_path / "store", create=True)
    s = ingest(store, IngestSettings(path=data, posters=posters))
    got = {(r["source"], r["line"]): r["reason"].split(":")[0] for r in store.read_table("rejects").to_pylist()}
    n = len(lines)  # lines[0] is the header, line 1
    assert {k: v for k, v in got.items() if k[0] == "ratings.csv"} == {
        ("ratings.csv", 11): "malformed",
        ("ratings.csv", 21): "malformed",
        ("ratings.csv", 31): "out_of_scale",
        ("ratings.csv", 2): "duplicate",
        ("ratings.csv", n): "unknown_item",
    }
    poster_codes = {src.rsplit("/", 1)[-1]: code for (src, line), code in got.items() if line is None}
    assert poster_codes["2.jpg"] == "poster_truncated"
    assert poster_codes["3.jpg"] == "poster_empty"
    assert poster_codes["5.jpg"] == "poster_not_image"
    assert poster_codes["6.jpg"] in {"poster_truncated", "poster_undecodable"}
    assert (s.posters_found, s.posters_matched, s.posters_rejected) == (6, 2, 4)
    items = {r["item_id"]: r for r in store.read_table("items").to_pylist()}
    assert items[2]["poster_path"] is None and items[1]["poster_path"] is not None
    assert s.ratings == 100_836 - 3  # three broken lines; the duplicate replaces line 2; unknown item gone
