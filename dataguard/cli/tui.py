"""`dataguard tui`: the Textual app on the same targets as `scan`."""
from __future__ import annotations

import argparse

from .common import ExitCode, add_target_args, workspace

EPILOG = """\
keys: / filter  n next problem  enter open case  space mark  r repair  R repair all
      u undo  f folds  s rescan  ? help  q quit   (in a case: [ ] slices, a axis,
      o overlay, w window, s source)
Works over SSH in any terminal with 24-bit colour (half-block pictures, no graphics protocol).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("tui", help="browse cases, findings and slices in the terminal; repair and undo",
                       description="Open the datasets in a terminal app: a table of cases with their "
                       "status, folds, labels and finding codes (shown at once from the last scan, then "
                       "rescanned in the background), a case view with files, findings and a slice "
                       "preview with the label overlay, the folds x labels matrix, and repair / undo.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p)
    p.add_argument("--cases", metavar="A,B,...", default="",
                   help="open with only these cases shown (e.g. the ones `evaluate --worst` names)")
    p.set_defaults(func=cmd_tui)


def cmd_tui(args) -> int:
    from ..tui.app import DataguardApp

    ws = workspace(args)
    ws.datasets               # resolve targets now: a bad path is a one-line error, not an app
    DataguardApp(ws, initial_filter=args.cases + ("," if args.cases and "," not in args.cases else "")).run()
    return ExitCode.CLEAN
