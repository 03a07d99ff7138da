"""What every feature handle shares: its Workspace and the dataset it is for (None: all)."""
from __future__ import annotations

import warnings


class Scoped:
    """A feature's methods for one dataset or, with `name` None, for the whole workspace (a
    method that needs a dataset then takes the only one: UsageError when there are several)."""

    def __init__(self, ws, name: str | None = None):
        self._ws = ws
        self._name = name

    def _ds(self):
        """The layout.Dataset this handle is for (the only one when it is for the workspace)."""
        return self._ws._layout(self._name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._name or 'the workspace'}>"


def deprecated(old: str, new: str) -> None:
    """Warn that `Workspace.<old>` is an alias kept for one release."""
    warnings.warn(f"Workspace.{old} is deprecated and goes in 0.4: use {new}", DeprecationWarning, stacklevel=3)
