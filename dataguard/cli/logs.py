"""`dataguard logs`: what nnU-Net training logs say per label, collapses, wasted epochs."""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from ..workspace import Workspace
from .common import ExitCode, console, note
from ..findings import printable
from .render import csv_row, fit_lines

EPILOG = """\
examples:
  dataguard logs $nnUNet_results/Dataset001_Heart                  every fold of every trainer
  dataguard logs .../nnUNetTrainer__nnUNetPlans__2d/fold_0 --plot fold0.png
  dataguard logs .../fold_0 --follow                                watch a running training
  dataguard logs .../Dataset001_Heart --format json > runs.json

findings: DG801 a label learnt, then sat at ~0 while the others held (collapse);
          DG804 the run went on for more than --patience epochs past its best EMA.
exit codes: 0 read (findings are information here), 2 no log found
"""


def add_parser(sub) -> None:
    p = sub.add_parser("logs", help="per-label pseudo Dice, best EMA, collapses and wasted epochs of nnU-Net runs",
                       description="Read nnU-Net training logs (a log file, a fold folder, a trainer folder or a "
                       "whole nnUNet_results dataset) and report per run: epochs, best EMA pseudo Dice and its "
                       "epoch, per label the best value, its epoch and the last value, and findings DG801 "
                       "(label collapse) and DG804 (past its best EMA for more than --patience epochs).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, metavar="PATH", help="log file or results folder")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="per-label curves of every run, one panel each")
    p.add_argument("--patience", type=int, default=50, help="epochs past the best EMA before DG804 (default: 50)")
    p.add_argument("--follow", action="store_true", help="watch the log(s) and print new epochs and alerts")
    p.add_argument("--follow-for", type=float, default=None, help=argparse.SUPPRESS)   # tests: stop after N s
    p.set_defaults(func=cmd_logs)


def cmd_logs(args) -> int:
    ws = Workspace()
    runs = ws.train.runs(args.path, patience=args.patience)
    if args.plot:
        ws.train.plot(runs, args.plot)
        note(f"wrote {args.plot}")
    if args.format == "json":
        json.dump({"runs": [r.to_dict() for r in runs]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["log", "epochs", "best_epoch", "best_ema", "label", "best", "label_best_epoch", "last"])
        for r in runs:
            d = r.to_dict()
            for name, s in d["labels"].items():
                w.writerow(csv_row([r.log, d["epochs"], d["best_epoch"], d["best_ema"], name, s["best"],
                                    s["best_epoch"], s["last"]]))
    else:
        render_runs(runs)
    if args.follow:
        _follow(ws, args, {r.log: r for r in runs})
    return ExitCode.CLEAN


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render_runs(runs) -> None:
    """One table per run: per label best, its epoch, last; then the EMA and the findings."""
    from rich.table import Table
    from rich.text import Text

    out = console()
    for r in runs:
        d = r.to_dict()
        out.print(Text(fit_lines(printable(str(r.log)), out.width), style="bold"), soft_wrap=True)
        t = Table(header_style="bold")
        for col in ("label", "best", "at epoch", "last"):
            t.add_column(col)
        for name, s in d["labels"].items():
            last = Text(_fmt(s["last"]), style="bold red" if s["best"] and s["last"] is not None
                        and s["best"] >= 0.2 and s["last"] <= 0.02 else "")
            t.add_row(name, _fmt(s["best"]), "-" if s["best_epoch"] is None else str(s["best_epoch"]), last)
        out.print(t)
        best = (f"best EMA {_fmt(d['best_ema'])} at epoch {d['best_epoch']}" if d["best_ema"] is not None
                else "no best EMA yet (no epoch finished, or every pseudo Dice was NaN)")
        out.print(f"{d['epochs']} epochs{' (finished)' if d['finished'] else ''}; {best}")
        if r.epoch_time is not None:
            secs = [x for x in r.epoch_seconds if x]
            out.print(f"epoch time {r.epoch_time:.1f} s (median of {len(secs)}; first {secs[0]:.1f} s, "
                      f"last {secs[-1]:.1f} s)")
        for f in r.findings:
            out.print(Text(fit_lines(printable(f"{f.code} {f.severity}: {f.message}"), out.width, "  "),
                           style="yellow" if f.code == "DG801" else "cyan"))
        out.print()


def _follow(ws, args, seen: dict) -> None:
    """Poll the logs; print each new epoch and each new finding as it appears."""
    start = time.monotonic()
    shown = {log: (len(r.epochs), {f.message for f in r.findings}) for log, r in seen.items()}
    note("following (ctrl+c stops) ...")
    try:
        while args.follow_for is None or time.monotonic() - start < args.follow_for:
            time.sleep(0.5 if args.follow_for else 2.0)
            for r in ws.train.runs(args.path, patience=args.patience):
                n, msgs = shown.get(r.log, (0, set()))
                for e, row, ema in list(zip(r.epochs, r.dice, r.ema))[n:]:
                    vals = "  ".join(f"{name} {'nan' if v != v else f'{v:.3f}'}" for name, v in zip(r.labels, row))
                    print(f"{Path(r.log).parent.name} epoch {e}: {vals}  ema {ema:.3f}", flush=True)
                for f in r.findings:
                    if f.message not in msgs:
                        print(f"ALERT {f.code}: {f.message}", flush=True)
                shown[r.log] = (len(r.epochs), {f.message for f in r.findings})
    except KeyboardInterrupt:
        pass
