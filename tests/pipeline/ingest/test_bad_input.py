"""Bad input never damages the store silently (issue 10 rows 7, 8, 11, 12, 16, all-rejected).

Each case ends in a clear error (exit 1 through the CLI, never a traceback) with the store
as it was (verify passes, every file's bytes unchanged), or in a correct ingest whose
rejects say what was left out and why.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.errors import ConfigError, InputError, StoreError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

from . import editions

runner = CliRunner()
TABLES = ("items", "users", "ratings", "tags", "rejects")


@pytest.fixture
def store(tmp_path):
    """A store holding a good ingest of the tiny CSV edition."""
    store = Store.open(tmp_path / "store", create=True)
    ingest(store, IngestSettings(path=_csv(tmp_path / "good")))
    return store


def _csv(root):
    root.mkdir(parents=True, exist_ok=True)
    return editions.ml_csv(root)


def _fingerprint(store: Store) -> dict[str, str]:
    """Every store file's hash, lock files aside (a writer notes itself in them)."""
    return {
        str(p.relative_to(store.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.root.rglob("*")) if p.is_file() and p.relative_to(store.root).parts[0] != "locks"
    }


def _ingest_cli(folder, store_root, *extra):
    return runner.invoke(app, ["ingest", "--path", str(folder), "--store", str(store_root), *extra])


def _assert_refused(store: Store, folder, match: str, *, error=InputError, **settings) -> None:
    """The library raises ``error``, the CLI exits 1 with the message, and the store is unchanged."""
    before = _fingerprint(store)
    counts = {name: store.manifest(name).rows for name in TABLES}
    with pytest.raises(error, match=match):
        ingest(store, IngestSettings(path=folder, **settings))
    out = _ingest_cli(folder, store.root)
    assert out.exit_code == 1, out.output
    assert "Traceback" not in out.output and "internal error" not in out.output
    assert _fingerprint(store) == before
    assert {name: store.manifest(name).rows for name in TABLES} == counts
    assert verify_store(store).ok


# -- row 7: one latin-1 line in a UTF-8 file --------------------------------------------


def test_a_latin1_line_leaves_the_utf8_lines_alone(tmp_path):
    folder = editions.ml_csv(tmp_path)
    movies = folder / "movies.csv"
    utf8 = "500,Misérables, Les (1995),Drama\n501,Amélie (2001),Comedy|Romance\n"
    movies.write_bytes(movies.read_bytes() + utf8.encode("utf-8") + "502,Café Flore (2011),Drama\n".encode("latin-1"))
    store = Store.open(tmp_path / "store", create=True)
    summary = ingest(store, IngestSettings(path=folder))
    titles = {r["item_id"]: r["title"] for r in store.read_table("items").to_pylist()}
    # The UTF-8 lines stay UTF-8 (they used to turn into 'MisÃ©rables'); the odd line reads as latin-1.
    assert (titles[500], titles[501], titles[502]) == ("Misérables, Les", "Amélie", "Café Flore")
    assert titles[171749] == "Death Note: Desu nôto"
    assert summary.latin1_lines == {"movies.csv": 1}
    assert verify_store(store).ok


def test_a_latin1_file_is_read_as_latin1_and_counted(tmp_path):
    folder = editions.ml_1m(tmp_path)  # movies.dat in latin-1, as ml-1m ships it
    store = Store.open(tmp_path / "store", create=True)
    summary = ingest(store, IngestSettings(path=folder))
    titles = {r["item_id"]: r["title"] for r in store.read_table("items").to_pylist()}
    assert titles[2] == "Misérables, Les" and titles[3] == "Slingshot, The (Kådisbellan )"
    assert summary.latin1_lines == {"movies.dat": 2}  # lines 2 and 3


# -- row 8: empty and header-only files ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("ratings.csv", b"", r"ratings\.csv is empty \(0 bytes\)"),
        ("movies.csv", b"", r"movies\.csv is empty \(0 bytes\)"),
        ("ratings.csv", b"userId,movieId,rating,timestamp\n", r"ratings\.csv has no data lines \(only its header\)"),
        ("movies.csv", b"movieId,title,genres\r\n", r"movies\.csv has no data lines \(only its header\)"),
    ],
)
def test_empty_or_header_only_file_is_an_error(store, tmp_path, name, content, message):
    folder = _csv(tmp_path / "bad")
    (folder / name).write_bytes(content)
    _assert_refused(store, folder, message)
    _assert_refused(store, folder, message, allow_empty=True)  # allow_empty is about rejected rows only


def test_empty_users_file_is_an_error(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    ingest(store, IngestSettings(path=editions.ml_1m(tmp_path / "good")))
    folder = editions.ml_1m(tmp_path / "bad")
    (folder / "users.dat").write_bytes(b"")
    _assert_refused(store, folder, r"users\.dat is empty \(0 bytes\)")


# -- every row rejected -------------------------------------------------------------------


def test_an_ingest_whose_every_rating_is_rejected_fails_unless_allowed(store, tmp_path):
    folder = _csv(tmp_path / "bad")
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,9.0,1\n1,777,4.0,2\nx,1,4.0,3\n")
    message = r"Every row of ratings\.csv \(3 rows: malformed 1, out_of_scale 1, unknown_item 1\) was rejected.*--allow-empty"
    _assert_refused(store, folder, message)
    summary = ingest(store, IngestSettings(path=folder, allow_empty=True))
    assert summary.ratings == 0 and store.manifest("ratings").rows == 0
    lines = sorted(r["line"] for r in store.read_table("rejects").to_pylist() if r["source"] == "ratings.csv")
    assert lines == [2, 3, 4]
    assert verify_store(store).ok


def test_an_ingest_whose_every_movie_is_rejected_fails(store, tmp_path):
    folder = _csv(tmp_path / "bad")
    (folder / "movies.csv").write_text("movieId,title,genres\nx,Toy Story (1995),Comedy\n\n")
    _assert_refused(store, folder, r"Every row of movies\.csv \(2 rows: malformed 2\) and ratings\.csv \(12 rows: ")


def test_blank_lines_only_is_every_row_rejected(store, tmp_path):
    folder = _csv(tmp_path / "bad")
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n\n\n")
    _assert_refused(store, folder, r"Every row of ratings\.csv \(2 rows: malformed 2\) was rejected")


# -- row 12: settings and store paths -----------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "message"),
    [("foo", "is not a size"), ("", "is not a size"), ("1 GB GB", "is not a size"), ("-1GB", "is not a size"),
     ("12", "is not a size"), ("1KB", "is too small"), ("63MB", "is too small")],
)
def test_a_bad_memory_limit_is_a_config_error(store, tmp_path, limit, message):
    folder = _csv(tmp_path / "bad")
    with pytest.raises(ConfigError, match=f"--memory-limit .* {message}"):
        IngestSettings(path=folder, duckdb_memory_limit=limit)
    before = _fingerprint(store)
    out = _ingest_cli(folder, store.root, "--memory-limit", limit)
    assert out.exit_code == 1 and message in out.stderr and "Traceback" not in out.output
    assert _fingerprint(store) == before


def test_duckdb_running_out_of_memory_is_a_clear_error(store, tmp_path, monkeypatch):
    """A limit that passes the settings check but not the work: a ConfigError, never a raw duckdb error."""
    from bonmf_pipe.pipeline.ingest import settings

    monkeypatch.setattr(settings, "MIN_MEMORY_LIMIT_MB", 0)
    before = _fingerprint(store)
    with pytest.raises(ConfigError, match=r"ran out of memory within --memory-limit 1KB .*Raise --memory-limit"):
        ingest(store, IngestSettings(path=_csv(tmp_path / "bad"), duckdb_memory_limit="1KB"))
    assert _fingerprint(store) == before


def test_good_memory_limits_and_worker_counts(tmp_path):
    folder = editions.ml_csv(tmp_path)
    for limit in ("512MB", "1GB", "2.5GiB", " 100 mb ", "64MB"):
        assert IngestSettings(path=folder, duckdb_memory_limit=limit).duckdb_memory_limit == limit
    for name, value in (("threads", 0), ("poster_workers", -2), ("threads", 1.5)):
        with pytest.raises(ConfigError, match=f"{name} must be a whole number"):
            IngestSettings(path=folder, **{name: value})


def test_store_that_is_a_file_is_a_clear_error(tmp_path):
    folder = editions.ml_csv(tmp_path)
    target = tmp_path / "not-a-store.txt"
    target.write_text("keep me\n")
    with pytest.raises(StoreError, match="is a file, not a store folder"):
        Store.open(target, create=True)
    out = _ingest_cli(folder, target)
    assert out.exit_code == 1 and "is a file, not a store folder" in out.stderr and "Traceback" not in out.output
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("version", ['"abc"', "null", "[]", "0", "-1", "{}", "true", "1.5"])
def test_a_damaged_schema_version_is_a_clear_error(store, version):
    marker = store.root / "store.json"
    marker.write_text(f'{{"schema_version": {version}}}\n')
    with pytest.raises(StoreError, match="is not a store schema version"):
        Store.open(store.root)
    for command in (["info"], ["verify"], ["sql", "SELECT 1"]):
        out = runner.invoke(app, [*command, "--store", str(store.root)])
        assert out.exit_code == 1 and "is not a store schema version" in out.stderr, (command, out.output)
        assert "Traceback" not in out.output
    marker.write_text("{}\n")
    with pytest.raises(StoreError, match="schema_version None"):
        Store.open(store.root)
    marker.write_text(json.dumps({"schema_version": 1}))
    assert Store.open(store.root).schema_version == 1


# -- row 11: user text is not rich markup -------------------------------------------------


def test_markup_in_user_text_is_printed_as_written(store, tmp_path):
    odd = tmp_path / "a[" / "oops]" / "[bold]x"
    out = runner.invoke(app, ["info", "--store", str(odd)])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert str(odd) in out.stderr.replace("\n", "")
    folder = _csv(tmp_path / "bad")
    (folder / "ratings.csv").write_text("userId,[/bogus],rating,timestamp\n1,1,4.0,1\n")
    out = _ingest_cli(folder, store.root)
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "userId,[/bogus],rating,timestamp" in out.stderr
    folder = _csv(tmp_path / "markup")
    with (folder / "movies.csv").open("a", encoding="utf-8") as fh:
        fh.write("600,[bold]Loud[/bold] (2001),Drama\n")
    assert _ingest_cli(folder, store.root).exit_code == 0
    out = runner.invoke(app, ["sql", "SELECT title FROM items WHERE item_id = 600", "--store", str(store.root)])
    assert out.exit_code == 0, out.output
    assert "[bold]Loud[/bold]" in out.stdout


# -- row 16: every entry of the poster folder is accounted for ----------------------------


def _poster(path, color=(200, 30, 30)):
    Image.new("RGB", (20, 30), color).save(path, "JPEG")


def test_odd_poster_names_unknown_movies_and_duplicates_are_rejects(tmp_path):
    folder = editions.ml_csv(tmp_path)
    posters = tmp_path / "posters"
    posters.mkdir()
    _poster(posters / "1.jpg")
    _poster(posters / "01.jpg", (0, 0, 200))  # the same movie with a leading zero
    _poster(posters / "11.JPG", (0, 200, 0))  # the same movie, extension in capitals
    _poster(posters / "11.jpg")
    _poster(posters / "abc.jpg")  # not <id>.<ext>
    _poster(posters / "999999.jpg")  # no such movie
    _poster(posters / "40697.gif")  # not an image extension
    (posters / "sub").mkdir()  # not a file
    store = Store.open(tmp_path / "store", create=True)
    summary = ingest(store, IngestSettings(path=folder, posters=posters))
    kept = {r["item_id"]: r["poster_path"] for r in store.read_table("items").to_pylist() if r["poster_path"]}
    assert kept == {1: str((posters / "1.jpg").resolve()), 11: str((posters / "11.jpg").resolve())}
    rejects = {
        r["source"].rsplit("/", 1)[-1]: r["reason"] for r in store.read_table("rejects").to_pylist() if r["line"] is None
    }
    assert {name: reason.split(":")[0] for name, reason in rejects.items()} == {
        "01.jpg": "poster_duplicate", "11.JPG": "poster_duplicate", "abc.jpg": "poster_name",
        "999999.jpg": "poster_unknown_item", "40697.gif": "poster_name", "sub": "poster_name",
    }
    assert "movie 1 already has 1.jpg" in rejects["01.jpg"]
    assert (summary.posters_found, summary.posters_matched, summary.posters_rejected) == (8, 2, 6)
    # The choice does not depend on the order the folder lists its files.
    again = Store.open(tmp_path / "again", create=True)
    ingest(again, IngestSettings(path=folder, posters=posters))
    assert again.read_table("items").equals(store.read_table("items"))
    assert verify_store(store).ok


# -- files that are not MovieLens text ----------------------------------------------------


def test_a_compressed_ratings_file_is_an_error(store, tmp_path):
    import gzip

    folder = _csv(tmp_path / "bad")
    (folder / "ratings.csv").write_bytes(gzip.compress((folder / "ratings.csv").read_bytes()))
    _assert_refused(store, folder, r"ratings\.csv, line 1: expected the header 'userId,movieId,rating,timestamp'")


def test_binary_dat_file_is_every_row_rejected(tmp_path):
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    store = Store.open(tmp_path / "store", create=True)
    ingest(store, IngestSettings(path=editions.ml_1m(tmp_path / "good")))
    folder = editions.ml_1m(tmp_path / "bad")
    (folder / "ratings.dat").write_bytes(bytes(range(256)) * 40)  # 40 lines of binary noise
    _assert_refused(store, folder, r"Every row of ratings\.dat \(41 rows: malformed 41\) was rejected")


def test_a_line_without_end_is_an_error_not_a_memory_blowup(store, tmp_path, monkeypatch):
    from bonmf_pipe.pipeline.ingest import reader

    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 4096)
    folder = _csv(tmp_path / "bad")
    (folder / "movies.csv").write_bytes(b"movieId,title,genres\n" + b"x" * 100_000)
    with pytest.raises(InputError, match=r"movies\.csv, line 2: longer than 0 MB without a line break"):
        ingest(store, IngestSettings(path=folder, block_bytes=1024))
    assert verify_store(store).ok


def test_an_unreadable_path_is_an_input_error(tmp_path):
    from bonmf_pipe.pipeline.ingest.reader import iter_line_blocks

    with pytest.raises(InputError, match="cannot be read"):
        list(iter_line_blocks(tmp_path))  # a folder where a file was expected
