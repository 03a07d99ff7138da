"""`ws.repair` / `ws.dataset(name).repair`: plan, apply and run repairs (journalled, undoable)."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from ..repair.apply import apply_plan
from ..repair.plan import plan_repairs, prepare
from .scope import Scoped, deprecated

EventFn = Callable[[dict], None]


@dataclass
class RepairRun:
    """What `Repairs.apply` / `Repairs.run` did."""
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


class Repairs(Scoped):
    """Repairs of the workspace's datasets (`ws.repair`) or of one (`ws.dataset(name).repair`).
    Restoring and the quarantine list are the Workspace's own (`ws.restore`, `ws.quarantine`)."""

    def plan(self, select=None, cases=None) -> list:
        """Repair actions for the latest scan's findings (scans first if needed); touches nothing."""
        plan = plan_repairs(self._ws._result(), select=select, cases=cases)
        if self._name is None:
            return plan
        name = self._ds().name
        return [a for a in plan if a.dataset == name]

    def apply(self, plan: list, on_event: EventFn | None = None, cancel: threading.Event | None = None,
              on_progress=None, log: Callable[[str], None] | None = None) -> RepairRun:
        """Carry out a plan (journalled, locked, undoable), then rescan once.

        on_event gets {"event": "started"|"done"|"failed"|"cancelled", "index", "total",
        "action", "detail"} per action. cancel stops between actions; what was done stays
        done and journalled (`ws.restore` undoes it).
        """
        ws = self._ws
        before = ws._result()
        run = RepairRun(plan=plan, before=before)
        todo = [a for a in plan if not a.blocked]
        if not todo:
            return run
        prepare([a for a in todo if not a.payload], before)     # hand-built actions: what handlers need
        with ws._lock:
            report = apply_plan(todo, ws.datasets, log=log or (lambda m: None),
                                on_event=on_event, cancel=cancel,
                                executor=ws.executor if ws.client is not None else None)
        run.reports.append(report)
        run.cancelled = report.cancelled
        run.after = ws.scan(on_progress=on_progress)
        return run

    def run(self, select=None, cases=None, dry_run: bool = False,
            confirm: Callable[[list], bool] = lambda plan: True, on_event: EventFn | None = None,
            cancel: threading.Event | None = None, on_progress=None,
            log: Callable[[str], None] | None = None) -> RepairRun:
        """Scan, plan, confirm, apply, rescan: one scan before and one after."""
        before = self._ws.scan(on_progress=on_progress)
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

    def __call__(self, *args, **kw) -> RepairRun:
        """The 0.3 `ws.repair(...)` method (deprecated): `run`."""
        deprecated("repair()", "ws.repair.run()")
        return self.run(*args, **kw)
