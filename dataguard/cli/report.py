"""`dataguard report`: one self-contained HTML page a team can read and mail around."""
from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

from ..fsio import atomic_write_text
from ..report.collect import collect
from ..report.render import render_html
from .common import ExitCode, UsageError, add_target_args, note, workspace

EPILOG = """\
examples:
  dataguard report -d 1 -o report.html                 data, folds, training, CV, submissions
  dataguard report $nnUNet_preprocessed -o all.html --cases 12
  dataguard report -d 1 -o small.html --no-images

Sections appear when their data exists: summary and verdict, findings (sortable, filterable,
with each code's meaning), case thumbnails (flagged + sampled clean), folds x labels (the
predicted default split when there is no splits_final.json), training curves per label from
the logs under $nnUNet_results, cross-validation from `dataguard evaluate` with the worst
cases (reference | prediction), and every *.zip.manifest.json in --submissions (re-verified
now). One file: images are inline PNG, CSS and JS inline, nothing is fetched when viewed.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report: data health, folds, training, CV, submissions",
                       description="Write one HTML file (no external resources) from the Workspace: the same "
                       "findings, cases, folds and evaluation the other commands show.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="report.html")
    p.add_argument("--cases", type=int, default=6, metavar="N", help="clean cases to sample for thumbnails (6)")
    p.add_argument("--no-images", action="store_true", help="no thumbnails (smaller, faster)")
    p.add_argument("--worst", type=int, default=3, metavar="N", help="worst cases per label in cross-validation (3)")
    p.add_argument("--surface", type=float, nargs="?", const=2.0, default=None, metavar="MM",
                   help="add HD95, ASSD, HD and NSD at MM (default 2) to cross-validation (slower: "
                        "distance transforms per case and label)")
    p.add_argument("--submissions", type=Path, action="append", default=[], metavar="DIR",
                   help="where to look for *.zip.manifest.json (default: the current folder)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:

    if args.cases < 0:
        raise UsageError("--cases must be >= 0")
    if args.surface is not None and not args.surface > 0:
        raise UsageError("--surface MM: NSD's tolerance must be a positive number of mm")
    t0 = time.monotonic()
    ws = workspace(args)
    rep = collect(ws, n_clean=args.cases, images=not args.no_images,
                  submissions_dirs=args.submissions or [Path.cwd()], worst=args.worst, surface=args.surface,
                  on_step=lambda what: note(f"report: {what} ..."))
    html = render_html(rep, args.cases)
    atomic_write_text(args.output, html)
    sections = rep.sections()
    for n in rep.notes:        # a section left out says why here too, not only on the page
        note(textwrap.fill(f"report: {n}", 80, subsequent_indent="  ", break_on_hyphens=False,
                           break_long_words=False))
    note(textwrap.fill(f"wrote {args.output} ({len(html.encode()) / 1e6:.1f} MB, {time.monotonic() - t0:.1f} s)",
                       80, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False))
    note(textwrap.fill(f"sections: {', '.join(sections)}", 80, subsequent_indent="  ", break_on_hyphens=False))
    return ExitCode.CLEAN
