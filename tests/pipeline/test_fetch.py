"""fetch against a local HTTP server on 127.0.0.1 (never the internet): verify, unpack, refuse."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.errors import ConfigError, InputError, NetworkError
from bonmf_pipe.pipeline.fetch import ARCHIVES, LICENCE_NOTE, FetchSettings, fetch
from bonmf_pipe.pipeline.sample import SampleSettings, write_sample


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path/www`` on an ephemeral port; yields (base_url, www folder)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", www
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _publish(www: Path, edition: str, source: Path, folder: str, md5: str | None = None) -> bytes:
    """Zip ``source`` as ``<folder>/...`` into ``www/<edition>.zip`` with its GroupLens-style .md5."""
    archive = www / f"{edition}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, f"{folder}/{path.relative_to(source)}")
    data = archive.read_bytes()
    digest = md5 or hashlib.md5(data).hexdigest()
    (www / f"{edition}.zip.md5").write_text(f"MD5 ({edition}.zip) = {digest}\n")
    return data


@pytest.fixture
def edition_files(tmp_path) -> Path:
    """A small ml-100k-format folder to publish (synthetic: never real MovieLens data)."""
    out = tmp_path / "src"
    write_sample(SampleSettings(out=out, users=20, items=40, ratings=400, edition="ml-100k", posters=False))
    return out


def test_fetch_downloads_verifies_and_unpacks(server, tmp_path, edition_files):
    url, www = server
    data = _publish(www, "ml-100k", edition_files, "ml-100k")
    events = []
    folder = fetch(FetchSettings("ml-100k", tmp_path / "data", base_url=url), events.append)
    assert folder == tmp_path / "data" / "ml-100k"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {p.name: p.read_bytes() for p in edition_files.iterdir()}
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["ml-100k"], "no temporary files left behind"
    begin = next(e for e in events if e.kind == "begin" and e.task.startswith("download"))
    assert begin.total == len(data) and begin.unit == "bytes"
    assert sum(e.advance for e in events if e.kind == "advance" and e.task == begin.task) == len(data)
    assert any(e.kind == "note" and e.message == LICENCE_NOTE for e in events)
    events.clear()
    (www / "ml-100k.zip").unlink()  # a second fetch does not download again
    assert fetch(FetchSettings("ml-100k", tmp_path / "data", base_url=url), events.append) == folder
    assert any("already there" in e.message for e in events)


def test_ml_10m_unpacks_to_its_own_folder_name(server, tmp_path, edition_files):
    url, www = server
    _publish(www, "ml-10m", edition_files, "ml-10M100K")
    folder = fetch(FetchSettings("ml-10m", tmp_path / "data", base_url=url))
    assert ARCHIVES["ml-10m"] == "ml-10M100K" and folder == tmp_path / "data" / "ml-10M100K"
    assert (folder / "u.data").read_bytes() == (edition_files / "u.data").read_bytes()


def test_checksum_mismatch_is_refused_and_nothing_is_unpacked(server, tmp_path, edition_files):
    url, www = server
    _publish(www, "ml-100k", edition_files, "ml-100k", md5="0" * 32)
    with pytest.raises(NetworkError, match="does not match the published"):
        fetch(FetchSettings("ml-100k", tmp_path / "data", base_url=url))
    assert list((tmp_path / "data").iterdir()) == []


def test_missing_file_is_a_clear_error(server, tmp_path):
    url, _ = server
    with pytest.raises(NetworkError, match=r"HTTP 404.*no such file.*ingest --path"):
        fetch(FetchSettings("ml-1m", tmp_path / "data", base_url=url))
    assert not (tmp_path / "data").exists()


def test_unreachable_server_fails_at_once_in_one_sentence(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        fetch(FetchSettings("ml-1m", tmp_path / "data", base_url=f"http://127.0.0.1:{port}/", timeout=60, connect_timeout=30))
    assert time.monotonic() - started < 10  # refused: no waiting for either timeout
    message = str(info.value)
    assert message.startswith("No network") and "ingest --path" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert not (tmp_path / "data").exists()


def test_unknown_edition_lists_the_editions(tmp_path):
    with pytest.raises(ConfigError) as info:
        fetch(FetchSettings("ml-2m", tmp_path))
    assert all(name in str(info.value) for name in ARCHIVES)


def test_unsafe_members_are_refused(server, tmp_path):
    url, www = server
    archive = www / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t1\n")
        zf.writestr("../evil.txt", "escape")
    (www / "ml-100k.zip.md5").write_text(hashlib.md5(archive.read_bytes()).hexdigest() + "  ml-100k.zip\n")
    with pytest.raises(InputError, match="outside the folder"):
        fetch(FetchSettings("ml-100k", tmp_path / "data", base_url=url))
    assert list((tmp_path / "data").iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_cli_fetch(server, tmp_path, edition_files):
    url, www = server
    _publish(www, "ml-100k", edition_files, "ml-100k")
    runner = CliRunner()
    result = runner.invoke(app, ["fetch", "ml-100k", "--to", str(tmp_path / "data"), "--base-url", url])
    assert result.exit_code == 0, result.output
    assert "ingest --path" in result.output and (tmp_path / "data" / "ml-100k" / "u.item").is_file()
    result = runner.invoke(app, ["fetch", "ml-1m", "--to", str(tmp_path / "data"), "--base-url", "http://127.0.0.1:9/"])
    assert result.exit_code == 1 and "No network" in result.output and "Traceback" not in result.output
