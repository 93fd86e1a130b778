"""Rendering for the CLI: rich progress bars and notes driven by library progress events."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bonmf_pipe.progress import ProgressEvent

console = Console()
err_console = Console(stderr=True)


class RichProgress:
    """A progress callback that shows one bar per task with rate and ETA."""

    def __init__(self, out: Console | None = None):
        self.console = out or err_console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, int] = {}
        self._units: dict[str, str] = {}

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        p = self._progress
        if event.kind == "begin":
            self._tasks[event.task] = p.add_task(event.task, total=event.total, rate="")
            self._units[event.task] = event.unit
        elif event.kind == "advance" and event.task in self._tasks:
            tid = self._tasks[event.task]
            p.advance(tid, event.advance)
            speed = p.tasks[tid].speed if tid < len(p.tasks) else None
            p.update(tid, rate=f"{speed:,.0f} {self._units[event.task]}/s" if speed else "")
        elif event.kind == "end" and event.task in self._tasks:
            tid = self._tasks.pop(event.task)
            task = next(t for t in p.tasks if t.id == tid)
            if task.total is None:
                p.update(tid, total=task.completed)
            speed = task.finished_speed or task.speed
            p.update(tid, rate=f"{speed:,.0f} {self._units[event.task]}/s" if speed else "")
            p.stop_task(tid)
        elif event.kind == "note":
            style = "yellow" if event.level == "warning" else "dim"
            p.console.print(f"[{style}]{event.message}[/{style}]")
