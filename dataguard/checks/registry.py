"""The check registry: the single place where checks live, and the dispatch itself.

Modelled on pre-commit's language registry: every check is a small object satisfying
one Protocol (name, codes, scope, kinds, version, run). The scanner asks the registry
which checks apply to a file kind, `--select/--ignore` drop the checks whose codes are
all excluded (so `--select DG5` decompresses nothing), and the manifest records each
check's version, so changing one check re-reads only what that check covers.

Adding a check = one function, one `register(...)` call, one test pair.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, runtime_checkable

from ..findings import code_matches

ALL_KINDS = None    # a file check with kinds=None applies to every file


@runtime_checkable
class Check(Protocol):
    name: str
    codes: tuple[str, ...]
    scope: str                      # "file" (any executor) or "dataset" (main process)
    version: int

    def run(self, inp): ...         # -> (findings, facts) for file checks, findings for dataset checks


@dataclass(frozen=True)
class FileInput:
    """What a per-file check reads: the task, a seekable binary stream, the bytes when small."""
    task: object                    # FileTask
    src: object                     # seekable binary file object, positioned at 0
    data: bytes | None
    size: int
    scratch: dict | None = None     # one per file, shared by its checks in registry order (the
                                    # raw-image check leaves the audit's strided image there)


@dataclass(frozen=True)
class FileCheck:
    """A per-file check: `fn(FileInput) -> (findings, facts)`; picklable inputs and outputs."""
    name: str
    codes: tuple[str, ...]
    doc: str
    fn: Callable
    kinds: frozenset[str] | None = ALL_KINDS
    version: int = 1
    gate: bool = False              # findings from a gate check stop the checks after it
    scope: str = field(default="file", init=False)

    def applies_to(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def run(self, inp: FileInput):
        return self.fn(inp)


@dataclass(frozen=True)
class DatasetCheck:
    """A dataset-level check: `fn(DatasetView) -> findings`, run on recorded per-file results.

    needs: the file checks whose facts it reads (they run even when --select leaves them
    out); needs_kinds: the file kinds whose facts from `needs` it reads (None: every kind
    those checks cover; ("label", "pkl"): `--select DG5` decompresses no raw image);
    needs_where: the same by place (raw, config, gt, dataset; None: every place):
    ("raw", "config") leaves the copies of the labels in gt_segmentations unread;
    needs_hashes: it compares content hashes, so every file must be hashed;
    uses_snapshots: it reads and updates the manifest's `snapshots` (their state is part of
    its input signature; it must reach a fixed point: run again on the snapshots it left,
    with nothing else changed, it reports the same and changes nothing).

    The scanner reuses a dataset check's recorded findings while the signature of its
    inputs (file list, hashes, facts' provenance, dataset.json, plans, versions) is unchanged.
    """
    name: str
    codes: tuple[str, ...]
    doc: str
    fn: Callable
    version: int = 1
    needs: tuple[str, ...] = ()
    needs_kinds: frozenset[str] | None = None
    needs_where: frozenset[str] | None = None
    needs_hashes: bool = False
    uses_snapshots: bool = False
    scope: str = field(default="dataset", init=False)

    def run(self, view):
        return self.fn(view)


@dataclass(frozen=True)
class SetCheck:
    """A check over a set of predictions rather than a dataset: `fn(input) -> findings`.

    scope "predictions": a folder or zip of label maps against the test images
    (`predictions.PredictionSet`); "probabilities": the probability folders an ensemble
    reads (`predictions.ProbabilityInputs`); "evaluation": an `evaluation.Evaluation`;
    "weights": ensemble weights against out-of-fold Dice (`weight_search.WeightCheck`). The
    scanner never runs these; the Workspace's submit/ensemble/evaluate paths do, through
    `set_checks(scope)`.
    """
    name: str
    codes: tuple[str, ...]
    doc: str
    fn: Callable
    scope: str = "predictions"
    version: int = 1

    def run(self, inp):
        return self.fn(inp)


SCOPES = ("file", "dataset", "predictions", "probabilities", "evaluation", "weights")
_REGISTRY: dict[str, FileCheck | DatasetCheck | SetCheck] = {}


def register(check):
    """Add a check (or replace one of the same name). Returns it, so it can decorate-assign."""
    if not isinstance(check, Check):
        raise TypeError(f"{check!r} does not satisfy the Check protocol")
    if check.scope not in SCOPES:
        raise ValueError(f"check {check.name}: scope must be one of {', '.join(SCOPES)}")
    _REGISTRY[check.name] = check
    return check


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str):
    return _REGISTRY[name]


def all_checks() -> list:
    return list(_REGISTRY.values())


def file_checks(kind: str | None = None) -> list[FileCheck]:
    return [c for c in _REGISTRY.values() if c.scope == "file" and (kind is None or c.applies_to(kind))]


def dataset_checks() -> list[DatasetCheck]:
    return [c for c in _REGISTRY.values() if c.scope == "dataset"]


def set_checks(scope: str) -> list[SetCheck]:
    return [c for c in _REGISTRY.values() if c.scope == scope]


def versions() -> dict[str, int]:
    """Versions of the checks a scan runs (what manifests record)."""
    return {c.name: c.version for c in _REGISTRY.values() if c.scope in ("file", "dataset")}


def wanted(check, select: Iterable[str] | None, ignore: Iterable[str] | None) -> bool:
    """False when --select/--ignore exclude every code the check can emit."""
    return any((not select or code_matches(code, list(select)))
               and not (ignore and code_matches(code, list(ignore))) for code in check.codes)


@dataclass(frozen=True)
class Selection:
    """Which checks a scan runs: the wanted ones plus what wanted dataset checks need."""
    file: frozenset[str]
    dataset: tuple[str, ...]
    hash_all: bool
    # (check, kinds) for file checks run only because a dataset check needs their facts on
    # those kinds of files (see DatasetCheck.needs_kinds); the others run on every kind
    only_kinds: tuple[tuple[str, frozenset[str]], ...] = ()
    # (check, places): the same by place (DatasetCheck.needs_where)
    only_where: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def of(cls, select=None, ignore=None) -> "Selection":
        ds = [c for c in dataset_checks() if wanted(c, select, ignore)]
        names = {c.name for c in file_checks() if wanted(c, select, ignore)}
        kinds = _limits(ds, names, "needs_kinds")
        places = _limits(ds, names, "needs_where")
        return cls(frozenset(names | set(kinds)), tuple(c.name for c in ds),
                   any(c.needs_hashes for c in ds), _only(kinds), _only(places))

    def for_kind(self, kind: str, where: str | None = None) -> tuple[str, ...]:
        """The file checks to run on a file of this kind (in this place), in registry order."""
        only, places = dict(self.only_kinds), dict(self.only_where)
        return tuple(c.name for c in file_checks(kind)
                     if c.name in self.file and (c.name not in only or kind in only[c.name])
                     and (where is None or c.name not in places or where in places[c.name]))


def _limits(ds, names, attr: str) -> dict[str, frozenset[str] | None]:
    """Per file check run only for dataset checks' facts: the union of what they read by
    `attr` (None: no limit, when one of them reads them everywhere)."""
    limits: dict[str, frozenset[str] | None] = {}
    for c in ds:
        want = getattr(c, attr, None)
        for n in c.needs:
            if n in names or (n in limits and limits[n] is None):
                continue
            limits[n] = None if want is None else (limits.get(n) or frozenset()) | frozenset(want)
    return limits


def _only(limits: dict[str, frozenset[str] | None]) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple(sorted((n, k) for n, k in limits.items() if k is not None))
