"""Repair engine: scan → plan → (confirm) → apply → rescan; restore undoes a run.

Faces (CLI, TUI) call `repair()` / `restore()`; nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .apply import RepairReport, apply_plan
from .plan import Action, plan_repairs

__all__ = ["repair", "RepairResult", "Action", "plan_repairs", "apply_plan"]


@dataclass
class RepairResult:
    before: object                      # ScanResult
    plan: list[Action]
    reports: list[RepairReport] = field(default_factory=list)
    after: object | None = None         # ScanResult after the repair (None: dry run / declined)
    declined: bool = False


def repair(targets: list[str] | None = None, *, select: list[str] | None = None,
           cases: list[str] | None = None, dry_run: bool = False,
           confirm: Callable[[list[Action]], bool] = lambda plan: True,
           manifest_dir: Path | str = "manifests", log: Callable[[str], None] = lambda m: None,
           rounds: int = 2) -> RepairResult:
    """Scan, plan, apply, rescan. A second round picks up what the first uncovered
    (e.g. a case file quarantined as junk is then rebuilt from raw)."""
    from ..layout import discover
    from ..scanner import scan

    datasets = discover(targets)
    before = scan(datasets=datasets, manifest_dir=manifest_dir)
    plan = plan_repairs(before, select=select, cases=cases)
    result = RepairResult(before=before, plan=plan)
    if dry_run or not [a for a in plan if not a.blocked]:
        return result
    if not confirm(plan):
        result.declined = True
        return result
    done: set[tuple] = set()
    current = plan
    for _ in range(rounds):
        todo = [a for a in current if not a.blocked and (a.kind, a.dataset, a.target) not in done]
        if not todo:
            break
        report = apply_plan(todo, datasets, log=log, manifest_dir=manifest_dir)
        result.reports.append(report)
        done |= {(a.kind, a.dataset, a.target) for a in todo}
        result.after = scan(datasets=datasets, manifest_dir=manifest_dir)
        current = plan_repairs(result.after, select=select, cases=cases)
    if result.after is None:
        result.after = scan(datasets=datasets, manifest_dir=manifest_dir)
    return result
