"""``progress=True``: a progress bar on stderr while a fan-out runs (rich, terminals only)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ._core._events import Event, FanOutFinished, TaskFinished, TaskStarted

__all__ = ["ProgressBar"]


class ProgressBar:
    """An event handler drawing tasks finished / total, with failures, on a terminal.

    Off a terminal (a pipe, a log file, CI) it draws nothing. Events are
    passed on to ``then``.
    """

    def __init__(
        self, total: int | None, then: Callable[[Event], Any] | None, file: Any = None
    ) -> None:
        self.total = total
        self.then = then
        self.file = file if file is not None else sys.stderr
        self._bar: Any = None
        self._task: Any = None
        self.done = 0
        self.failed = 0

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(file=self.file)
        if not console.is_terminal:
            self._bar = False
            return
        self._bar = Progress(
            TextColumn("fanflow"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("tasks", total=self.total, failed=0)
        self._bar.start()

    def __call__(self, event: Event) -> Any:
        if self._bar is None and isinstance(event, TaskStarted | TaskFinished | FanOutFinished):
            self._start()
        if isinstance(event, TaskFinished):
            self.done += 1
            self.failed += event.result.status.value in ("error", "timeout")
            if self._bar:
                self._bar.update(self._task, completed=self.done, failed=self.failed)
        elif isinstance(event, FanOutFinished) and self._bar:
            self._bar.stop()
        return self.then(event) if self.then is not None else None
