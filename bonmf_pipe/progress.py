"""Progress reporting: library code calls a callback; the CLI renders it with rich.

Library functions take ``progress: ProgressCallback | None``; they never print. Events:

- ``begin``: a task starts (``total`` may be None when unknown);
- ``advance``: ``advance`` more units of the task are done;
- ``end``: the task is finished;
- ``note``: a message worth showing (``level`` is ``info`` or ``warning``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["begin", "advance", "end", "note"]


@dataclass(frozen=True)
class ProgressEvent:
    kind: EventKind
    task: str
    total: int | None = None
    advance: int = 0
    message: str = ""
    level: Literal["info", "warning"] = "info"
    unit: str = "items"


ProgressCallback = Callable[[ProgressEvent], None]


class Reporter:
    """Small convenience wrapper so stage code reads naturally; a None callback is a no-op."""

    def __init__(self, callback: ProgressCallback | None = None):
        self._cb = callback

    def begin(self, task: str, total: int | None = None, unit: str = "items") -> None:
        if self._cb:
            self._cb(ProgressEvent("begin", task, total=total, unit=unit))

    def advance(self, task: str, n: int = 1) -> None:
        if self._cb and n:
            self._cb(ProgressEvent("advance", task, advance=n))

    def end(self, task: str) -> None:
        if self._cb:
            self._cb(ProgressEvent("end", task))

    def note(self, message: str, level: Literal["info", "warning"] = "info") -> None:
        if self._cb:
            self._cb(ProgressEvent("note", "", message=message, level=level))
