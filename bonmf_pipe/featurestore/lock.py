"""Store locks: ``flock`` locks on files under ``<store>/locks/``.

Every writer takes a named lock for what it writes, so that two processes never do the
same work or overwrite each other's commit:

- ``tables``: the canonical tables (ingest holds it for its whole run; encode holds it
  while it appends to ``rejects``);
- ``encode-<modality>-<i>of<n>``: one feature shard's encoding (a second ``encode`` of
  the same modality and shard waits, then finds nothing left to encode);
- ``split-<id>``: the creation of one split table;
- ``commit``: the few milliseconds of a snapshot swap (taken by ``snapshot.commit``);
- ``writers``: shared by every process that has uncommitted files in the store,
  exclusive for ``vacuum``, which must never delete a generation still being written.

The OS releases a lock when its process dies, so a killed writer never blocks the next
one. A second writer waits (with a progress note naming the holder) or, with
``no_wait``, fails at once with a ``StoreError`` that says what is holding the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bonmf_pipe.errors import StoreError
from bonmf_pipe.progress import ProgressCallback, Reporter

LOCKS_DIR = "locks"


def lock_path(root: Path, name: str) -> Path:
    return Path(root) / LOCKS_DIR / f"{name}.lock"


def _holder(fd: int) -> str:
    """Who holds the lock, as written by the holder (pid, command, since)."""
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another bonmf-pipe process"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
    return f"process {info.get('pid')} ({info.get('command', '?')}, since {since})"


def _record_holder(fd: int, what: str) -> None:
    info = {"pid": os.getpid(), "command": what or " ".join(sys.argv[:2]), "since": time.time()}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)


@contextlib.contextmanager
def store_lock(
    root: Path,
    name: str,
    *,
    no_wait: bool = False,
    shared: bool = False,
    what: str = "",
    progress: ProgressCallback | None = None,
) -> Iterator[None]:
    """Hold the store lock ``name`` for the block (exclusive unless ``shared``).

    When another process holds it: with ``no_wait`` raise ``StoreError``; else note who
    holds it through ``progress`` and wait until it is released.
    """
    path = lock_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    recorded = False
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if no_wait:
                raise StoreError(
                    f"The store at {root} is busy: {holder} holds its '{name}' lock. Wait for it to "
                    "finish (run again without --no-wait to wait for it), or stop that process."
                ) from None
            Reporter(progress).note(f"waiting for {holder} to release the store's '{name}' lock ...", "warning")
            fcntl.flock(fd, mode)
        if not shared:
            _record_holder(fd, what)
            recorded = True
        yield
    finally:
        if recorded:  # only a holder's own note is ever read: none is left behind
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the lock


class HeldLock:
    """A lock held across calls (acquire now, ``release`` later); for writers whose
    uncommitted files live longer than one block, such as a ``TableWriter``."""

    def __init__(self, root: Path, name: str, *, shared: bool = False, no_wait: bool = False):
        self._cm = store_lock(root, name, shared=shared, no_wait=no_wait)
        self._cm.__enter__()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._cm.__exit__(None, None, None)
