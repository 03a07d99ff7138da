"""`dataguard repair`, `restore` and `quarantine list`: faces of ws.repair.plan/apply/run, ws.restore and ws.quarantine."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

from . import render as report
from .render import command_lines, screen_width
from .common import (
    ExitCode,
    UsageError,
    add_target_args,
    console,
    note,
    plain,
    progress,
    split_codes,
    verdict,
    workspace,
)

REPAIR_EPILOG = """\
what it does per finding:
  quarantine     DG101 DG102 DG104 DG205 DG208: move the file into <dataset>/.dataguard/quarantine/<run>/
  re-preprocess  DG103 DG201-DG207 DG209 DG210: rebuild exactly that case for exactly that
                 configuration from raw, with the dataset's own plans, via nnunetv2 (in-process)
  cast           DG401 (values within 1e-3 of integers): rewrite the raw label as uint8/uint16
  regenerate     DG501-DG504: stratified splits_final.json (old one kept in quarantine)
nothing is ever deleted; `dataguard restore` undoes the latest run byte for byte.

examples:
  dataguard repair -d 1 --dry-run          show the plan only
  dataguard repair -d 1 --case heart_004   repair one case
  dataguard repair $nnUNet_preprocessed/Dataset001_Heart --yes
"""


def add_parser(sub) -> None:
    p = sub.add_parser("repair", help="fix findings: quarantine junk, rebuild broken cases from raw, undoably",
                       description="Scan, plan one action per finding, confirm, apply, rescan. Broken "
                       "preprocessed cases are rebuilt one by one with nnunetv2's own preprocessor "
                       "instead of re-running nnUNetv2_preprocess for everything.",
                       epilog=REPAIR_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p)
    p.add_argument("--select", action="append", default=[], metavar="CODES",
                   help="only repair findings with these codes or prefixes (comma-separated)")
    p.add_argument("--case", action="append", default=[], metavar="ID", help="only these cases; repeatable")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--fail-on", choices=("error", "warning", "info", "never"), default="error",
                   help="exit 1 when a finding this severe remains after the repair (default: error)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("restore", help="undo a repair run: every file back, byte-identical",
                       description="Undo a repair run from its journal (default: the latest run on the "
                       "datasets). Quarantined files go back, verified by blake3; files the run wrote "
                       "move to a quarantine of their own. Nothing is deleted.")
    add_target_args(p)
    p.add_argument("--run", metavar="RUN-ID", help="which run (see `dataguard quarantine list`)")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("quarantine", help="list what repairs moved into quarantine")
    qsub = p.add_subparsers(dest="quarantine_command", metavar="ACTION")
    q = qsub.add_parser("list", help="files held in quarantine, by repair run")
    add_target_args(q)
    q.add_argument("--format", choices=("table", "json"), default="table")
    q.set_defaults(func=cmd_quarantine_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _confirm_from_terminal(plan) -> bool:
    n = len([a for a in plan if not a.blocked])
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError("refusing to change files without confirmation: add --yes (or --dry-run to see the plan)")
    from rich.prompt import Confirm

    return Confirm.ask(f"apply {n} action(s)?", default=False, console=console())


def cmd_repair(args) -> int:

    confirm = (lambda plan: True) if args.yes else _confirm_from_terminal
    out = console()
    shown = {"plan": False}

    def confirm_after_showing(plan):
        _show_plan(plan, args, out)
        shown["plan"] = True
        return confirm(plan)

    ws = workspace(args)
    prog = progress(args)
    with prog or contextlib.nullcontext():
        result = ws.repair.run(select=split_codes(args.select), cases=args.case or None, dry_run=args.dry_run,
                               confirm=confirm_after_showing, log=note,
                               on_progress=prog.update if prog else None)
    if not shown["plan"]:
        _show_plan(result.plan, args, out)
    if args.format == "json":
        doc = {"plan": [_action_doc(a) for a in result.plan],
               "runs": result.run_ids,
               "outcomes": [{"target": o.action.target, "action": str(o.action.kind), "ok": o.ok, "detail": o.detail,
                             "touched": o.touched} for r in result.reports for o in r.outcomes],
               "after": result.after.to_dict() if result.after is not None else None}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if args.dry_run or result.declined or result.after is None:
        if result.declined:
            note("nothing changed")
        return ExitCode.FINDINGS if result.plan else ExitCode.CLEAN
    for r in result.reports:
        note(f"repair run {r.run_id}: {len(r.outcomes) - len(r.failed)} done, {len(r.failed)} failed; undo:\n"
             + undo_command(args, r.run_id))
    if args.format == "table":
        out.print("\nafter repair:")
        report.render_table(result.after, out)
    if result.failed:
        return ExitCode.FINDINGS
    return verdict(result.after, args.fail_on)


def undo_command(args, run_id: str) -> str:
    """The restore line for a run, naming what this repair was given (paths, -d ids, the
    manifest folder), so it works as printed, env vars or not."""
    words = ["dataguard", "restore", *map(str, getattr(args, "paths", None) or [])]
    for d in getattr(args, "dataset", None) or []:
        words += ["-d", str(d)]
    words += ["--run", run_id]
    return command_lines(words, screen_width(), "  ")


def _show_plan(plan, args, console) -> None:
    if args.format != "table":
        return
    if not plan:
        console.print("Nothing to repair.")
        return
    report.plan_tables(plan, "repair plan" + (" (dry run)" if args.dry_run else ""), console)


def _action_doc(a) -> dict:
    return {"kind": str(a.kind), "dataset": a.dataset, "target": a.target, "case": a.case, "config": a.config,
            "codes": a.codes.split(",") if a.codes else [], "blocked": a.blocked, "files": a.files}


def cmd_restore(args) -> int:
    reports = workspace(args).restore(run_id=args.run)
    for r in reports:
        print(plain(f"{r.dataset or 'restored'}: run {r.run_id} undone\n  {len(r.restored)} file(s) back, "
                    f"{len(r.removed)} file(s) it wrote moved to quarantine"))
        for p in r.problems:
            note(f"  problem: {p}")
        if r.ignored:            # one reason, then one journal a line: each fits 80 columns
            note("  ignored, not written by dataguard for this user (not restored):")
            for p in r.ignored:
                note(f"    {p}")
    return ExitCode.FINDINGS if any(r.problems for r in reports) else ExitCode.CLEAN


def cmd_quarantine_list(args) -> int:
    held = workspace(args).quarantine()
    if args.format == "json":
        json.dump([h.__dict__ for h in held], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return ExitCode.CLEAN
    from rich.text import Text

    out = console()
    if not held:
        out.print("Quarantine is empty.")
        return ExitCode.CLEAN
    report.quarantine_tables(held, out)
    total = sum(h.size for h in held)
    out.print(Text(f"{len(held)} file(s), {total / 1e6:.1f} MB; `dataguard restore --run RUN` puts a run back"))
    return ExitCode.CLEAN

