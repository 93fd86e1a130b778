"""Poster matching and checks: formats by content, duplicates per id, bad files, the pool."""

from __future__ import annotations

import hashlib

import polars as pl
from PIL import Image

from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.schema import REJECTS
from bonmf_pipe.pipeline.ingest import posters as poster_mod
from bonmf_pipe.pipeline.ingest.posters import check_poster, scan_posters
from bonmf_pipe.pipeline.ingest.rejects import RejectSink
from bonmf_pipe.progress import Reporter


def _image(path, fmt, size=(40, 60), mode="RGB"):
    Image.new(mode, size, 128).save(path, format=fmt)
    return path


def test_check_poster_reads_format_from_bytes(tmp_path):
    png_named_jpg = _image(tmp_path / "1.jpg", "PNG")
    check = check_poster(str(png_named_jpg))
    assert check.reason is None and (check.width, check.height) == (40, 60)
    assert check.sha256 == hashlib.sha256(png_named_jpg.read_bytes()).hexdigest()
    grey = check_poster(str(_image(tmp_path / "2.jpg", "JPEG", mode="L")))
    assert grey.reason is None
    assert check_poster(str(_image(tmp_path / "3.webp", "WEBP"))).reason is None


def test_bad_posters_get_stable_reason_codes(tmp_path):
    jpg = _image(tmp_path / "ok.jpg", "JPEG", size=(200, 300)).read_bytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    codes = {name: (check_poster(str(tmp_path / name)).reason or "").split(":")[0]
             for name in ("empty.jpg", "text.jpg", "cut.jpg")}
    assert codes == {"empty.jpg": "poster_empty", "text.jpg": "poster_not_image", "cut.jpg": "poster_truncated"}


def _scan(tmp_path, folder, ids, workers=None):
    store = Store.open(tmp_path / "store", create=True)
    writer = store.writer("rejects", REJECTS)
    sink = RejectSink(writer)
    scan = scan_posters(folder, pl.Series(ids, dtype=pl.Int64), sink, Reporter(), workers)
    sink.flush()
    writer.commit()
    return scan, store.read_table("rejects").to_pylist()


def test_scan_matches_ids_and_rejects_every_other_entry(tmp_path):
    folder = tmp_path / "posters"
    folder.mkdir()
    _image(folder / "1.jpg", "JPEG")
    _image(folder / "1.png", "PNG")  # second poster of movie 1: rejected as a duplicate
    _image(folder / "2.PNG", "PNG")
    _image(folder / "77.jpg", "JPEG")  # no such movie: rejected as an unknown item
    (folder / "notes.txt").write_text("not a poster")  # not <id>.<ext>: rejected by name
    scan, rejects = _scan(tmp_path, folder, [1, 2, 3])
    assert (scan.found, scan.matched, scan.rejected) == (5, 2, 3)
    paths = dict(zip(scan.table["item_id"].to_list(), scan.table["poster_path"].to_list(), strict=True))
    assert paths == {1: str((folder / "1.jpg").resolve()), 2: str((folder / "2.PNG").resolve())}
    got = sorted((r["source"].rsplit("/", 1)[-1], r["line"], r["reason"].split(":")[0]) for r in rejects)
    assert got == [
        ("1.png", None, "poster_duplicate"), ("77.jpg", None, "poster_unknown_item"), ("notes.txt", None, "poster_name"),
    ]


def test_process_pool_gives_the_same_result(tmp_path, monkeypatch):
    folder = tmp_path / "posters"
    folder.mkdir()
    for i in range(1, 13):
        _image(folder / f"{i}.jpg", "JPEG", size=(30 + i, 45))
    (folder / "5.jpg").write_bytes(b"")
    serial, _ = _scan(tmp_path / "a", folder, list(range(1, 13)), workers=1)
    monkeypatch.setattr(poster_mod, "POOL_MIN_POSTERS", 4)
    pooled, rejects = _scan(tmp_path / "b", folder, list(range(1, 13)), workers=2)
    assert pooled.table.equals(serial.table) and pooled.matched == 11
    assert [r["reason"].split(":")[0] for r in rejects] == ["poster_empty"]
