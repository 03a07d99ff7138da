"""`dataguard train 1 2d 0-4`: several folds one after another, each through the gate.

Every fold is gated before the first one starts (a refusal of fold 3 after two days of
fold 0 would waste them), and again just before it starts (nnU-Net writes the default split
at the first training; data may change in the days between). The end is a table, one row a
fold. With `--continue`, finished folds are skipped, the interrupted one resumes with its
run record's settings and the ones not started yet start with the same settings, so the
printed resume line finishes an interrupted campaign.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .common import ExitCode, console, note
from .live_view import LiveView
from .train_steps import (INTERRUPTED, TRAINING_FAILED, short_duration, budget_plan, device_of, prepare, report, resume_line,
                          summary)


@dataclass
class FoldRow:
    fold: int | str
    result: str
    epochs: str = ""
    best: str = ""
    seconds: float | None = None


def finished(fold_folder) -> bool:
    """A fold whose training ended and whose final validation was scored: nothing to resume."""
    return ((fold_folder / "checkpoint_final.pth").is_file() and not (fold_folder / "checkpoint_final.pth").is_symlink()
            and (fold_folder / "validation" / "summary.json").is_file())


def run_campaign(ws, args, folds: list) -> int:
    spec = args.fold
    note(f"pre-flight: scanning {args.dataset} (raw + {args.configuration}) for folds "
         f"{', '.join(map(str, folds))} ...")
    rows: dict = {}
    todo, refused = [], False
    for i, fold in enumerate(folds):
        pf, call = prepare(ws, args, fold)
        if args.cont and finished(pf.fold_folder):
            rows[fold] = FoldRow(fold, "finished before", *_history(ws, pf.fold_folder))
            continue
        report(pf, call, args, brief=bool(todo) or i > 0)
        refused |= not pf.ok
        todo.append(fold)
    if refused:
        note("no fold trained: the gate refused (above); fix and run the same command again")
        return ExitCode.FINDINGS
    if args.deadline and todo:
        note(budget_plan(args.deadline, len(todo)))
    if args.dry_run or not todo:
        _table(rows, folds)
        if not todo:
            note("every fold is finished")
        return ExitCode.CLEAN
    code = ExitCode.CLEAN
    for n, fold in enumerate(todo):
        if args.deadline:                             # the time left, shared by the folds left
            args.fold_deadline = time.time() + (args.deadline - time.time()) / (len(todo) - n)
        pf, call = prepare(ws, args, fold)            # again: the split, the data, an earlier fold's record
        if not pf.ok:
            report(pf, call, args)
            rows[fold] = FoldRow(fold, "refused by the gate")
            code = ExitCode.FINDINGS
            break
        t0 = time.monotonic()
        device = device_of(call)
        tr = call.argv[call.argv.index("-tr") + 1]
        view = LiveView(f"[{n + 1}/{len(todo)}] {pf.dataset}  {pf.configuration}  fold {fold}  ·  {tr}  ·  {device}")
        try:
            result = ws.train.run(pf, call, pf.record.settings.patience if pf.record else None, on_event=view)
        finally:
            view.close()
        outcome = result.outcome
        summary(pf, result.run, result.artifacts, outcome, call, args, fold)
        seconds = time.monotonic() - t0
        if outcome.interrupted:
            rows[fold] = FoldRow(fold, "interrupted", *_of(result.run), seconds)
            code = INTERRUPTED
            break
        if outcome.returncode != 0:
            rows[fold] = FoldRow(fold, f"failed (exit {outcome.returncode})", *_of(result.run), seconds)
            note(f"nnU-Net's training process failed; the end of {outcome.console_log}:")
            note(result.console_tail())
            code = TRAINING_FAILED
            break
        stop = (outcome.last("trained") or {}).get("stop")
        rows[fold] = FoldRow(fold, "stopped early" if stop else "trained", *_of(result.run), seconds)
    _table(rows, folds)
    if code == INTERRUPTED:
        note(f"interrupted; resume the folds with:\n  {resume_line(args, spec)}")
    elif code != ExitCode.CLEAN and code != ExitCode.FINDINGS:
        note(f"after fixing it, go on with:\n  {resume_line(args, spec)}")
    return code


def _of(run) -> tuple[str, str]:
    if run is None or not run.epochs:
        return "", ""
    ema = [v for v in run.ema if v == v]
    if not ema:
        return str(len(run.epochs)), ""
    best = max(range(len(run.ema)), key=lambda i: run.ema[i] if run.ema[i] == run.ema[i] else -1)
    return str(len(run.epochs)), f"{run.ema[best]:.3f} (epoch {best})"


def _history(ws, fold_folder) -> tuple[str, str]:
    """Epochs and best EMA of a finished fold, from nnU-Net's own log (never unpickled)."""
    try:
        runs = ws.train.runs(fold_folder)
    except Exception:                          # noqa: BLE001 - a table cell, not a verdict
        return "", ""
    return _of(runs[-1]) if runs else ("", "")


def _table(rows: dict, folds: list) -> None:
    from rich.table import Table

    t = Table(title="folds", title_justify="left", header_style="bold", show_edge=False)
    t.add_column("fold", justify="right")
    t.add_column("result")
    t.add_column("epochs", justify="right")
    t.add_column("best EMA")
    t.add_column("time", justify="right")
    for fold in folds:
        r = rows.get(fold) or FoldRow(fold, "not started")
        t.add_row(str(fold), r.result, r.epochs, r.best, short_duration(r.seconds))
    console().print(t)
