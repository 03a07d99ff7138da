"""Progress bar on stderr (rich), fed by the engine's `on_progress(done, total, rel)` callback."""
from __future__ import annotations

from ..findings import printable


class ByteProgress:
    """Shows bytes checked of bytes to check; disappears when done (transient)."""
    def __init__(self, description: str = "checking"):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(),
                                  TextColumn("{task.fields[current]}", style="dim", markup=False),
                                  console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task(description, total=None, current="")

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()
        return False

    def update(self, done: int, total: int, rel: str) -> None:
        # a file name is shown as text: no rich markup ([link=...] would print an OSC 8 hyperlink),
        # no control characters (an ESC in a name would reach the terminal)
        name = printable(rel.rsplit("/", 1)[-1])
        self._progress.update(self._task, completed=done, total=total or None, current=name[-40:])

    def set_description(self, text: str) -> None:
        self._progress.update(self._task, description=text)


class CountProgress:
    """Items done of items to do (cases, archive members), one bar per stage, on stderr when
    it is a terminal; silent otherwise. Feed it `event(stage, done, total)` or `tick()`."""
    def __init__(self, stage: str | None = None, total: int | None = None):
        import sys

        self._progress = None
        self._tasks: dict[str, int] = {}
        self._current: str | None = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                      MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                                      transient=True)
        if stage is not None:
            self.event(stage, 0, total or 0)

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False

    def event(self, stage: str, done: int, total: int) -> None:
        self._current = stage
        if self._progress is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(printable(stage), total=total or None)
        self._progress.update(self._tasks[stage], completed=done, total=total or None)

    def tick(self, *_ignored) -> None:
        """One more item of the current stage."""
        if self._progress is not None and self._current in self._tasks:
            self._progress.update(self._tasks[self._current], advance=1)
