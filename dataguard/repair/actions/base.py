"""What every repair action handler is: a module satisfying `ActionHandler`, plus the
`Outcome` it returns and the `ApplyContext` apply_plan hands it.

A handler never locks, probes or rolls back: `apply_plan` does that around every handler
the same way (journal per dataset part, lock per dataset folder, rollback on an exception).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from ...engine.journal import Journal
    from ...engine.layout import Dataset
    from ...findings import ActionKind
    from ..plan import Action

Log = Callable[[str], None]


@dataclass
class Outcome:
    action: "Action"
    ok: bool
    detail: str
    touched: list[str] = field(default_factory=list)


@dataclass
class ApplyContext:
    """What apply_plan gives a handler for one action."""
    ds: "Dataset"
    journals: dict[str, "Journal"]          # "raw"/"preprocessed" -> this run's journal there
    log: Log = lambda m: None
    cache: dict = field(default_factory=dict)   # shared by the run's actions (loaded preprocessors)
    staged: object = None                   # a future of files staged on an executor (rebuild)


class ActionHandler(Protocol):
    """One repair action kind (pre-commit's `Language` protocol is the model).

    KIND: the ActionKind it is registered for; ORDER: its place in a plan (lower first,
    ties by dataset and target); describe: one line for the plan; prepare: at plan time,
    put into `action.payload` whatever the handler will need from the scan (pure, no I/O),
    so applying needs no ScanResult; files: the dataset's current files the action moves
    aside or replaces (from the scan's view, no I/O); run: do it, journalled.
    """
    KIND: "ActionKind"
    ORDER: int

    def describe(self, a: "Action") -> str: ...

    def prepare(self, a: "Action", result) -> None: ...

    def files(self, a: "Action", view) -> list[str]: ...

    def run(self, a: "Action", ctx: ApplyContext) -> Outcome: ...


def split_target(target: str) -> tuple[str, str]:
    """"raw/labelsTr/x.nii.gz" -> ("raw", "labelsTr/x.nii.gz")."""
    part, _, rel = target.partition("/")
    return part, rel


def no_payload(a: "Action", result) -> None:
    """prepare() of a handler that needs nothing from the scan."""


def target_only(a: "Action", view) -> list[str]:
    """files() of an action that touches its target alone."""
    return [a.target]


def roots(ds: "Dataset") -> dict[str, Path]:
    return {k: Path(v) for k, v in ds.roots().items()}
