"""`dataguard splits show|rebalance`: parse → Workspace → render → exit code.

Imports nothing heavy at module level (`dataguard --help` builds this parser).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from ..errors import SplitError
from ..findings import printable
from ..spec import few
from .common import ExitCode, UsageError, add_engine_args, add_group_args, progress, shown, workspace
from .common import console as _console
from .common import note
from .render import fit_lines, screen_width


def _note(msg: str) -> None:
    note(fit_lines(msg, screen_width(), "  "))

SPLITS_EPILOG = """\
examples:
  dataguard splits show $nnUNet_preprocessed/Dataset001_Heart       folds x labels, train/val cases
  dataguard splits show -d 1 --plot folds.png                      also a heatmap of val counts
  dataguard splits show -d 1 --format json > folds.json            only JSON on stdout
  dataguard splits rebalance -d 1 --dry-run                        before/after, writes nothing
  dataguard splits rebalance -d 1 --folds 5 --seed 0               write stratified splits

rebalance guarantees, whenever any split can: every label found in at least --folds cases
is in every fold's validation set; validation sets differ in size by at most one; every
case is validated exactly once. The previous splits_final.json is kept next to it as
splits_final.json.bak-YYYYmmdd-HHMMSS, and temp files an interrupted rebalance left
(.splits_final.json.<hex>.tmp) move to quarantine; nothing is deleted.

Without a splits_final.json yet, `show` shows nnU-Net's default split (not written yet): the
5-fold KFold(shuffle=True, random_state=12345) it will write at the first training (DG505).

exit codes: 0 ok, 2 usage error (no dataset, no cases, fewer than 5 cases and no splits file,
infeasible request)
"""


def add_parser(sub) -> None:
    """Register `splits` with its `show` and `rebalance` subcommands on cli.py's subparsers."""
    p = sub.add_parser("splits", help="show or rebalance the cross-validation splits (splits_final.json)",
                       description="Inspect nnU-Net's cross-validation splits per label, or replace "
                       "them with stratified ones so every fold validates every label.",
                       epilog=SPLITS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=lambda args: _no_subcommand(p))
    ss = p.add_subparsers(dest="splits_command", metavar="SUBCOMMAND")

    s = ss.add_parser("show", help="per fold, how many train and val cases contain each label (or region)",
                      description="One row per fold: the number of training and validation cases, and "
                      "per foreground label how many of them contain it (train/val). DG5xx findings "
                      "about the splits follow the table.",
                      epilog=SPLITS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(s)
    s.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="also write a PNG heatmap of validation cases per fold and label")
    s.set_defaults(func=cmd_show)

    r = ss.add_parser("rebalance", help="write stratified splits (atomically, previous file kept)",
                      description="Compute stratified splits (exact MILP with scipy's HiGHS), print the "
                      "current and the new table, and write splits_final.json atomically, keeping the "
                      "previous file as a timestamped backup.",
                      epilog=SPLITS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(r)
    r.add_argument("--folds", type=int, default=5, help="number of folds (default: 5, as nnU-Net)")
    r.add_argument("--seed", type=int, default=0,
                   help="picks among equally balanced splits; same seed, same splits (default: 0)")
    r.add_argument("--dry-run", action="store_true", help="print the tables, write nothing")
    r.set_defaults(func=cmd_rebalance)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="the preprocessed dataset folder (nnUNet_preprocessed/DatasetXXX_Name); its raw "
                        "counterpart is found like `dataguard scan` does")
    p.add_argument("-d", "--dataset", metavar="ID",
                   help="dataset id or name (1, Dataset001_Heart) via $nnUNet_preprocessed/$nnUNet_raw")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table (default; plain when piped) or json (only JSON on stdout)")
    add_engine_args(p)
    add_group_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _no_subcommand(parser) -> int:
    parser.print_help(sys.stderr)
    return ExitCode.USAGE


# --- commands --------------------------------------------------------------------------------
def cmd_show(args) -> int:
    from rich.text import Text

    _, ctx = _context(args)
    splits, title, about = _shown_splits(ctx)
    table = ctx.table(splits)
    if args.plot:
        ctx.plot(table, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.format == "json":
        doc = {"dataset": ctx.dataset.name, "splits": str(ctx.splits_path), "written": about is None,
               "title": title, "about": about, **_table_doc(ctx, table),
               "findings": [f.to_dict() for f in ctx.findings]}
        print(json.dumps(doc, indent=2))
    else:
        console = _console()
        # Text(printable(...)) for every name from the dataset (labels, cases, paths): no rich
        # markup is interpreted, no escape sequence or CR reaches the terminal
        # wrapped at words, a path after its slashes: 80 columns, no name broken
        console.print(Text(fit_lines(printable(title), console.width, "  "), style="bold"), soft_wrap=True)
        if about:
            console.print(Text(fit_lines(printable(about), console.width), style="dim"), soft_wrap=True)
        console.print(_rich_table(ctx, table, None))
        _print_findings(console, ctx.findings)
    return ExitCode.CLEAN


DEFAULT_TITLE = "nnU-Net's default split (not written yet)"


def _shown_splits(ctx):
    """(splits, title, about): splits_final.json (about None), or, before the first training
    wrote one, the split nnU-Net will write (the one DG505 and the TUI's folds view check), so
    its folds are judged before an epoch is spent on them."""
    if ctx.splits_path.exists():
        try:
            return ctx.current(), f"{ctx.dataset.name}: {ctx.splits_path}", None
        except SplitError as e:
            raise UsageError(f"{ctx.splits_path} is malformed (DG501): {e}") from None
    if len(ctx.cases) < ctx.default_folds:
        raise UsageError(f"no {ctx.splits_path.name} in {ctx.splits_path.parent}, and with {len(ctx.cases)} "
                         f"training cases nnU-Net makes a random 80:20 split at first training instead of "
                         f"{ctx.default_folds} folds; `dataguard splits rebalance --folds N` writes one")
    about = (f"{ctx.default_folds}-fold KFold(shuffle=True, random_state=12345) over the {len(ctx.cases)} sorted "
             f"training cases, which nnU-Net writes to {ctx.splits_path} at the first training")
    return ctx.default_split(), f"{ctx.dataset.name}: {DEFAULT_TITLE}", about


def cmd_rebalance(args) -> int:
    ws, ctx = _context(args)
    before = None
    if ctx.splits_path.exists():
        try:
            before = ctx.current()
        except SplitError as e:
            _note(f"current {ctx.splits_path.name} is malformed ({e}); it will be replaced")
    try:
        after = ctx.rebalanced(folds=args.folds, seed=args.seed)
    except SplitError as e:
        raise UsageError(str(e)) from None
    if ctx.groups:
        _note(f"patients: {len(set(ctx.groups.values()))} for {len(ctx.cases)} cases; each patient's cases "
              f"share one validation set")
    for n in ctx.notes:
        _note(n)
    if not args.dry_run:
        swept = ctx.sweep_leftovers()
        if swept:
            _note(f"moved {len(swept)} leftover temp file(s) of an interrupted splits write to quarantine "
                  f"(`dataguard quarantine list` shows them): {', '.join(swept)}")
    unchanged = before == after
    backup = None if unchanged else ws.dataset(ctx.dataset.name).splits.write(after, dry_run=args.dry_run)
    tables = {"before": ctx.table(before) if before else None, "after": ctx.table(after)}
    _render_rebalance(args, ctx, tables)
    if unchanged:
        _note(f"{ctx.splits_path} already holds these splits; nothing written")
    elif args.dry_run:
        _note(f"dry run: nothing written (would write {ctx.splits_path})")
    else:
        _note(f"wrote {ctx.splits_path}" + (f" (previous kept as {backup.name})" if backup else ""))
    return ExitCode.CLEAN


def _render_rebalance(args, ctx, tables) -> None:
    if args.format == "json":
        doc = {"dataset": ctx.dataset.name, "splits": str(ctx.splits_path), "folds": args.folds,
               "seed": args.seed, "dry_run": args.dry_run,
               **{k: (_table_doc(ctx, t) if t is not None else None) for k, t in tables.items()}}
        print(json.dumps(doc, indent=2))
        return
    console = _console()
    if tables["before"] is not None:
        console.print(_rich_table(ctx, tables["before"], f"before: {ctx.splits_path.name} now"))
    else:
        console.print(f"before: no usable {shown(ctx.splits_path.name)}")
    console.print(_rich_table(ctx, tables["after"],
                              f"after: stratified, {args.folds} folds, seed {args.seed}"))


# --- shared helpers --------------------------------------------------------------------------
def _context(args):
    """Resolve exactly one dataset, scan it (incrementally) and take cases and labels from that scan."""
    ws = workspace(args, [t for t in (args.path, args.dataset) if t] or None)
    if len(ws.datasets) != 1:
        names = ", ".join(d.name for d in ws.datasets)
        raise UsageError(f"{args.path or args.dataset or 'the nnU-Net environment variables'} name "
                         f"{len(ws.datasets)} datasets ({names}); name one dataset folder or use -d ID")
    prog = progress(args)
    with prog or contextlib.nullcontext():
        ws.scan(on_progress=prog.update if prog else None)
    try:
        ctx = ws.dataset().splits.context()
    except SplitError as e:
        raise UsageError(str(e)) from None
    if ctx.unknown:
        _note(f"{len(ctx.unknown)} training case(s) have no label information (label file or .pkl "
              f"unreadable): counted as containing no label")
    if ctx.unseen:
        _note(f"{len(ctx.unseen)} declared {ctx.kind}s occur in no training case and are left out of the "
              f"table (DG404): {few(ctx.unseen)}")
    if ctx.errors:
        _note(f"the scan also found {ctx.errors} error(s) outside the splits in {ctx.dataset.name}; "
              f"`dataguard scan` lists them")
    return ws, ctx


def _table_doc(ctx, table) -> dict:
    """The JSON form of a label table: dataset-wide label counts and one entry per fold."""
    totals = ctx.counts()
    labels = {str(lab): {"name": name, "cases": totals.get(lab, 0)}
              for lab, name in table.drop_duplicates("label").set_index("label")["name"].items()}
    for lab, info in labels.items():          # regions: keyed by position; say which values make them
        if int(lab) in ctx.regions:
            info["values"] = list(ctx.regions[int(lab)])
    folds = []
    for fold, rows in table.groupby("fold", sort=True):
        folds.append({"fold": int(fold), "n_train": int(rows["n_train"].iloc[0]),
                      "n_val": int(rows["n_val"].iloc[0]),
                      "labels": {str(int(r["label"])): {"train": int(r["train"]), "val": int(r["val"])}
                                 for r in rows.to_dict("records")}})      # no itertuples: it execs a namedtuple
    doc = {"cases": len(ctx.cases), "labels": labels, "folds": folds}
    if ctx.regions:
        doc["kind"] = "regions"
    return doc


def _rich_table(ctx, table, title: str | None):
    """Folds as rows; per label a `train/val` cell, red where val holds no case with it."""
    from rich.table import Table
    from rich.text import Text

    doc = _table_doc(ctx, table)
    t = Table(title=Text(printable(title), style="bold") if title else None, title_justify="left",
              header_style="bold")
    for col in ("fold", "train", "val"):
        t.add_column(col, justify="right")
    for lab in doc["labels"]:            # a label name is text, never markup: "[red]x" shows as typed
        t.add_column(Text(f"{printable(ctx.heading(int(lab)))}\ntrain/val"), justify="right")
    for fold in doc["folds"]:
        cells = [Text(f"{c['train']}/{c['val']}", style="bold red" if c["val"] == 0 else "")
                 for c in fold["labels"].values()]
        t.add_row(str(fold["fold"]), str(fold["n_train"]), str(fold["n_val"]), *cells)
    totals = ctx.counts()
    t.add_row("all", str(doc["cases"]), "", *(f"{totals.get(int(lab), 0)} cases" for lab in doc["labels"]),
              style="dim")
    return t


def _print_findings(console, findings) -> None:
    from rich.text import Text

    if not findings:
        console.print(Text("No split findings (DG501-DG504)."))
    for f in findings:                    # one finding a paragraph, its code first: grep DG504 finds it
        console.print(Text(fit_lines(printable(f"{f.severity} {f.code} {f.path}: {f.message}"), console.width,
                                     "  ")), soft_wrap=True)
