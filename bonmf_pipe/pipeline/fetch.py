"""``bonmf-pipe fetch``: download, verify and unpack a MovieLens edition from GroupLens.

The archive streams to a temporary file beside the destination (never whole in memory),
its MD5 is checked against the ``<edition>.zip.md5`` file GroupLens publishes next to it
(a mismatch is refused and the download deleted), and it is unpacked into a temporary
folder that is renamed into place only when complete, so an interrupted fetch leaves
nothing half-unpacked. Members with absolute paths, ``..`` or links are refused.

Without a network the fetch fails at once (a short connection probe) with one sentence
saying so and how to point ``bonmf-pipe ingest --path`` at a copy downloaded elsewhere.

Licence: the MovieLens datasets belong to GroupLens Research (University of Minnesota).
They may be used for research; they may not be redistributed without permission nor used
commercially; publications must cite F. Maxwell Harper and Joseph A. Konstan. 2015. The
MovieLens Datasets: History and Context. ACM TiiS 5, 4, Article 19. Read each archive's
README. ``fetch`` therefore downloads to your machine and never bundles the data.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import socket
import stat
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from bonmf_pipe.errors import ConfigError, InputError, NetworkError
from bonmf_pipe.featurestore.io import tmp_path_for
from bonmf_pipe.progress import ProgressCallback, Reporter

# edition -> the folder its archive unpacks to (the archive is always "<edition>.zip")
ARCHIVES: dict[str, str] = {
    "ml-100k": "ml-100k",
    "ml-1m": "ml-1m",
    "ml-10m": "ml-10M100K",
    "ml-20m": "ml-20m",
    "ml-25m": "ml-25m",
    "ml-32m": "ml-32m",
    "ml-latest-small": "ml-latest-small",
}
LICENCE_NOTE = (
    "MovieLens data (GroupLens Research, University of Minnesota): research use only, no redistribution "
    "or commercial use without permission; cite Harper & Konstan 2015, ACM TiiS 5(4):19."
)
CHUNK = 1 << 20
_MD5 = re.compile(r"\b([0-9a-fA-F]{32})\b")


@dataclass(frozen=True)
class FetchSettings:
    """Settings of ``fetch``."""

    edition: str  # one of ARCHIVES: ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-32m, ml-latest-small
    to: Path  # folder that receives the unpacked edition folder (created when missing)
    base_url: str = "https://files.grouplens.org/datasets/movielens/"  # where <edition>.zip lives
    timeout: float = 30.0  # seconds a read may stall before the download fails
    connect_timeout: float = 5.0  # seconds to wait for the server to accept a connection

    def archive_url(self) -> str:
        return self.base_url.rstrip("/") + f"/{self.edition}.zip"


def fetch(settings: FetchSettings, progress: ProgressCallback | None = None) -> Path:
    """Download, verify and unpack ``settings.edition`` into ``settings.to``; returns the
    unpacked edition folder (at once, without a download, when it is already there)."""
    if settings.edition not in ARCHIVES:
        raise ConfigError(f"unknown edition {settings.edition!r}; fetch knows {', '.join(ARCHIVES)}.")
    report = Reporter(progress)
    to = Path(settings.to)
    target = to / ARCHIVES[settings.edition]
    if target.is_dir():
        report.note(f"{target} is already there; nothing to download (delete it to fetch again).")
        return target
    url = settings.archive_url()
    _probe(url, settings)
    report.note(LICENCE_NOTE)
    expected = _read_md5(url + ".md5", settings)
    to.mkdir(parents=True, exist_ok=True)
    archive = tmp_path_for(to / f"{settings.edition}.zip")
    try:
        digest = _download(url, archive, settings, report)
        if digest != expected:
            raise NetworkError(
                f"{url}: MD5 {digest} does not match the published {expected}: the download is corrupt or "
                "truncated, so it was deleted and nothing was unpacked. Run fetch again."
            )
        return _unpack(archive, to, target, report)
    finally:
        archive.unlink(missing_ok=True)


def _no_network(url: str, why: object) -> NetworkError:
    host = urlsplit(url).hostname or url
    return NetworkError(
        f"No network: cannot reach {host} ({why}); download {url} on a machine with internet, unzip it, and "
        "run `bonmf-pipe ingest --path <unzipped folder>` instead."
    )


def _probe(url: str, settings: FetchSettings) -> None:
    """Fail at once when the server cannot be reached (DNS failure, refused, no route)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"--base-url {settings.base_url!r} is not an http(s) URL.")
    try:
        with socket.create_connection((parts.hostname, port), timeout=settings.connect_timeout):
            pass
    except OSError as exc:
        raise _no_network(url, _reason(exc)) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "name lookup failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def _open(url: str, settings: FetchSettings):
    """``urlopen`` with errors turned into NetworkError messages that say what to do."""
    try:
        with urllib.request.urlopen(url, timeout=settings.timeout) as response:  # noqa: S310 (http(s) checked)
            yield response
    except urllib.error.HTTPError as exc:
        raise NetworkError(
            f"{url}: HTTP {exc.code} {exc.reason}: the server has no such file. Check the edition and --base-url, "
            "or download the archive by hand and run `bonmf-pipe ingest --path <unzipped folder>`."
        ) from None
    except urllib.error.URLError as exc:
        raise _no_network(url, _reason(exc.reason) if isinstance(exc.reason, OSError) else exc.reason) from None
    except (TimeoutError, ConnectionError) as exc:
        raise NetworkError(f"{url}: the download stalled or broke off ({_reason(exc)}). Run fetch again.") from None


def _read_md5(url: str, settings: FetchSettings) -> str:
    """The checksum of GroupLens' ``.md5`` file ("MD5 (ml-1m.zip) = <hex>" or "<hex>  name")."""
    with _open(url, settings) as response:
        text = response.read(4096).decode("ascii", errors="replace")
    match = _MD5.search(text)
    if match is None:
        raise NetworkError(f"{url}: no MD5 checksum in the file (found {text[:80]!r}); cannot verify the archive.")
    return match.group(1).lower()


def _download(url: str, path: Path, settings: FetchSettings, report: Reporter) -> str:
    """Stream ``url`` into ``path`` chunk by chunk; returns the MD5 of what was written."""
    md5 = hashlib.md5(usedforsecurity=False)
    task = f"download {url.rsplit('/', 1)[-1]}"
    with _open(url, settings) as response, open(path, "wb") as fh:
        length = response.headers.get("Content-Length")
        report.begin(task, total=int(length) if length and length.isdigit() else None, unit="bytes")
        try:
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                md5.update(chunk)
                report.advance(task, len(chunk))
        except (TimeoutError, ConnectionError) as exc:
            raise NetworkError(f"{url}: the download stalled or broke off ({_reason(exc)}). Run fetch again.") from None
        report.end(task)
    return md5.hexdigest()


def safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The members of ``archive``, refusing absolute paths, ``..`` and symbolic links."""
    members = archive.infolist()
    for info in members:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise InputError(f"{archive.filename}: member {info.filename!r} would unpack outside the folder; refused.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(f"{archive.filename}: member {info.filename!r} is a symbolic link; refused.")
    return members


def _unpack(archive: Path, to: Path, target: Path, report: Reporter) -> Path:
    """Unpack into a temporary folder beside ``target``, then rename the edition folder into place."""
    staging = tmp_path_for(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = safe_members(zf)
            report.begin(f"unpack {target.name}", total=len(members), unit="files")
            for info in members:
                zf.extract(info, staging)
                report.advance(f"unpack {target.name}")
            report.end(f"unpack {target.name}")
        entries = list(staging.iterdir())
        inner = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        if inner.name != target.name and inner is not staging:
            report.note(f"the archive holds {inner.name}/, unpacked as {target.name}/")
        inner.rename(target)
        report.note(f"unpacked into {target}")
        return target
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive.name}: not a valid zip archive ({exc}); nothing was unpacked.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
