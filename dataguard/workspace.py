"""Workspace: the one API every face calls (CLI, TUI, train/submit gates, report).

A Workspace is a set of datasets (found once from paths, ids or the nnU-Net env vars),
a manifest folder and an executor. It scans, lists cases with their state, shows a
slice of a case, plans and applies repairs, restores them, and lists the quarantine.
Faces never reach past it into scanner, repair or layout internals.

    ws = dataguard.Workspace(["/data/nnUNet_preprocessed/Dataset001_Heart"])
    res = ws.scan()
    for c in ws.cases():
        print(c.case, c.status, c.val_fold)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .manifest import DEFAULT_DIR

if TYPE_CHECKING:
    from concurrent.futures import Executor

EventFn = Callable[[dict], None]


@dataclass
class RepairRun:
    """What `Workspace.apply` / `Workspace.repair` did."""

    plan: list                                   # list[Action]
    reports: list = field(default_factory=list)  # list[RepairReport], one per run id
    before: object | None = None                 # ScanResult the plan came from
    after: object | None = None                  # ScanResult after applying (None: nothing applied)
    declined: bool = False
    cancelled: bool = False

    @property
    def failed(self) -> list:
        return [o for r in self.reports for o in r.failed]

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.reports]


class Workspace:
    def __init__(self, targets: list[str] | None = None, manifest_dir: Path | str = DEFAULT_DIR,
                 jobs: int | None = None, executor: Executor | None = None, *, datasets=None):
        self.targets = list(targets) if targets else None
        self.manifest_dir = Path(manifest_dir)
        self.jobs = jobs
        self.executor = executor
        self._datasets = datasets
        self.last = None            # the latest ScanResult (cases() and plan() reuse it)
        self._lock = threading.Lock()

    # --- datasets and scanning ---------------------------------------------------------------
    @property
    def datasets(self) -> list:
        """The discovered datasets (layout.Dataset), found once."""
        if self._datasets is None:
            from .layout import discover

            self._datasets = discover(self.targets)
        return self._datasets

    def dataset(self, name: str | None = None):
        """One dataset by name; with None, the only one (DataguardError when ambiguous)."""
        from .errors import UsageError

        ds = self.datasets
        if name is None:
            if len(ds) != 1:
                raise UsageError(f"{len(ds)} datasets ({', '.join(d.name for d in ds)}): name one")
            return ds[0]
        for d in ds:
            if d.name == name or (name.isdigit() and d.id == int(name)):
                return d
        raise UsageError(f"no dataset {name!r} here (have: {', '.join(d.name for d in ds)})")

    def scan(self, full: bool = False, select=None, ignore=None, on_progress=None,
             cancel: threading.Event | None = None, write_manifest: bool = True):
        """Scan every dataset (incrementally, unless full). Returns and remembers a ScanResult."""
        from .scanner import scan

        res = scan(datasets=self.datasets, manifest_dir=self.manifest_dir, full=full, jobs=self.jobs,
                   select=select, ignore=ignore, on_progress=on_progress, write_manifest=write_manifest,
                   executor=self.executor, cancel=cancel)
        if not res.cancelled and not select and not ignore:
            self.last = res
        return res

    def verify(self, select=None, ignore=None, on_progress=None, cancel: threading.Event | None = None):
        """Re-hash every file against the manifest (DG701-DG703); never updates it."""
        from .verifier import verify

        return verify(datasets=self.datasets, manifest_dir=self.manifest_dir, jobs=self.jobs,
                      select=select, ignore=ignore, on_progress=on_progress, executor=self.executor,
                      cancel=cancel)

    def _result(self):
        return self.last if self.last is not None else self.scan()

    # --- cases -------------------------------------------------------------------------------
    def cases(self, dataset: str | None = None) -> list:
        """Every case (raw and every configuration) with status, findings, files, facts, fold."""
        from .caseinfo import case_infos

        return case_infos(self._result(), dataset)

    def case(self, dataset: str, case: str):
        from .caseinfo import case_infos
        from .errors import UsageError

        for c in case_infos(self._result(), dataset):
            if c.case == case:
                return c
        raise UsageError(f"no case {case!r} in {dataset}")

    def load_slice(self, dataset: str, case: str, axis: int = 0, index: int | None = None,
                   source: str = "raw", config: str | None = None):
        """(image_2d float32, label_2d int or None) in (z, y, x) order; middle slice by default.

        source: "raw" (imagesTr channel 0 + labelsTr) or "preprocessed" (config: the
        configuration folder, default the first one holding the case).
        """
        from .slices import SliceError, config_slice, raw_slice

        ds = self.dataset(dataset)
        if source == "raw":
            if ds.raw is None:
                raise SliceError(f"{ds.name} has no raw folder")
            from .walk import file_ending, load_dataset_json

            return raw_slice(ds.raw, case, file_ending(load_dataset_json(ds)), axis, index)
        if source != "preprocessed":
            raise SliceError("source must be 'raw' or 'preprocessed'")
        folders = [c for c in ds.config_dirs if config is None or c.name == config]
        for folder in folders:
            if any(folder.glob(f"{case}.*")):
                return config_slice(folder, case, axis, index)
        raise SliceError(f"case {case} not found in {config or 'any configuration folder'} of {ds.name}")

    # --- repair ------------------------------------------------------------------------------
    def plan(self, select=None, cases=None) -> list:
        """Repair actions for the latest scan's findings (scans first if needed); touches nothing."""
        from .repair.plan import plan_repairs

        return plan_repairs(self._result(), select=select, cases=cases)

    def apply(self, plan: list, on_event: EventFn | None = None, cancel: threading.Event | None = None,
              on_progress=None, log: Callable[[str], None] | None = None) -> RepairRun:
        """Carry out a plan (journalled, locked, undoable), then rescan once.

        on_event gets {"event": "started"|"done"|"failed"|"cancelled", "index", "total",
        "action", "detail"} per action. cancel stops between actions; what was done stays
        done and journalled (`restore` undoes it).
        """
        from .repair.apply import apply_plan

        before = self._result()
        run = RepairRun(plan=plan, before=before)
        todo = [a for a in plan if not a.blocked]
        if not todo:
            return run
        with self._lock:
            report = apply_plan(todo, self.datasets, log=log or (lambda m: None), scan_result=before,
                                on_event=on_event, cancel=cancel)
        run.reports.append(report)
        run.cancelled = report.cancelled
        run.after = self.scan(on_progress=on_progress)
        return run

    def repair(self, select=None, cases=None, dry_run: bool = False,
               confirm: Callable[[list], bool] = lambda plan: True, on_event: EventFn | None = None,
               cancel: threading.Event | None = None, on_progress=None,
               log: Callable[[str], None] | None = None) -> RepairRun:
        """Scan, plan, confirm, apply, rescan: one scan before and one after."""
        before = self.scan(on_progress=on_progress)
        plan = self.plan(select=select, cases=cases)
        run = RepairRun(plan=plan, before=before)
        if dry_run or not [a for a in plan if not a.blocked]:
            return run
        if not confirm(plan):
            run.declined = True
            return run
        done = self.apply(plan, on_event=on_event, cancel=cancel, on_progress=on_progress, log=log)
        done.before = before
        return done

    def restore(self, run_id: str | None = None) -> list:
        """Undo a repair run (default: the latest on these datasets), byte for byte."""
        from .repair.restore import restore

        reports = restore(self.datasets, run_id=run_id)
        self.last = None
        return reports

    def quarantine(self) -> list:
        """What repairs moved aside, per run (repair.restore.Held)."""
        from .repair.restore import quarantine_list

        return quarantine_list(self.datasets)

    # --- splits ------------------------------------------------------------------------------
    def splits_context(self, dataset: str | None = None):
        """Training cases and their labels for one dataset, from the latest scan (no second scan)."""
        from .split_context import context_from_result

        ds = self.dataset(dataset)
        return context_from_result(self._result(), ds)

    def write_splits(self, dataset: str | None, splits, dry_run: bool = False):
        """The one splits writer (`splits rebalance` and repair both use splits.write_splits)."""
        from .splits import write_splits

        ds = self.dataset(dataset)
        backup = write_splits(Path(ds.preprocessed) / "splits_final.json", splits, dry_run=dry_run)
        if not dry_run:
            self.last = None
        return backup
