"""Progress bar on stderr (rich), fed by the engine's `on_progress(done, total, rel)` callback."""
from __future__ import annotations

from ..engine.walk import printable


class ByteProgress:
    """Shows bytes checked of bytes to check; disappears when done (transient)."""

    def __init__(self, description: str = "checking"):
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

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
