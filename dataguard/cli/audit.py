"""`dataguard audit`: which annotations look wrong, ranked, with the reason in words."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..findings import Severity
from ..suspects import combined, per_case
from .common import ExitCode, UsageError, add_engine_args, console, note, shown, workspace

EPILOG = """\
examples:
  dataguard audit -d 1                              from the data alone
  dataguard audit -d 1 --model 2d --model 3d_fullres
                                                    and the models' out-of-fold
                                                    probabilities (--npz)
  dataguard audit -d 1 --top 50 --format json > suspects.json

what it compares (from the data alone): each case's label against the same
label in the other cases: volume, pieces and stray pieces, position relative
to the other labels, intensity inside, contrast across the outline, the
image's edges on the outline, empty slices inside the structure, and a label
most cases have but this one lacks. With models: how strongly the out-of-fold
predictions disagree with the annotation, and first a ranking of both together
(each source's score as evidence in [0, 1], joined: 1 - (1 - d)(1 - m)).

findings: DG406 (data alone), DG805 (with models): info, a warning when far
out; never an error. A suspect is a question for a person, not a verdict:
nothing is changed.
exit codes: 0 audited, 2 usage error
"""


def add_parser(sub) -> None:
    p = sub.add_parser("audit", help="rank annotations by how suspect they look (swapped, shifted, missing labels)",
                       description="Rank each training case's annotation of each label by how unlike it is to "
                                   "the same label in the other cases (from the data alone), and with --model by "
                                   "how strongly the models' out-of-fold predictions disagree with it. Changes "
                                   "nothing.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", metavar="ID", default=None,
                   help="dataset id or name (1, Dataset001_Heart)")
    p.add_argument("--model", action="append", default=None, metavar="SPEC",
                   help="a trained model whose out-of-fold probabilities to use (2d, 3d_fullres, "
                        "CONFIG:FOLDS:TRAINER:PLANS); repeat for several")
    p.add_argument("--top", type=int, default=20, metavar="N", help="rows to show per source (default 20)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    add_engine_args(p)
    p.set_defaults(func=cmd_audit)


def cmd_audit(args) -> int:
    if args.top < 1:
        raise UsageError("--top must be at least 1")
    t0 = time.perf_counter()
    ws = workspace(args, [args.dataset] if args.dataset else None)
    ds = ws.dataset()
    data, with_models, found = ds.audit(args.model)
    if args.format == "json":
        out = {"dataset": ds.name,
               "data": {"cases": per_case(data), "suspects": [s.to_json() for s in data]},
               "findings": [f.to_dict() for f in found]}
        if args.model:
            out["models"] = {"models": args.model, "cases": per_case(with_models),
                             "suspects": [s.to_json() for s in with_models]}
            both = combined(data, with_models)
            out["combined"] = {"cases": per_case(both), "suspects": [s.to_json() for s in both]}
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if args.model:
            _table(f"{ds.name}: suspect annotations, data and models ({', '.join(args.model)}) together",
                   combined(data, with_models), args.top, digits=2)
        _table("from the data alone" if args.model else f"{ds.name}: suspect annotations from the data alone",
               data, args.top)
        if args.model:
            _table(f"with models ({', '.join(args.model)}): out-of-fold disagreement", with_models, args.top,
                   digits=2)
        if not data and not with_models:
            console().print("nothing to compare: fewer than 8 training cases hold each label")
    note(f"audit: {len(data)} (case, label) pairs from the data"
         + (f", {len(with_models)} with models" if args.model else "")
         + f"; {sum(1 for f in found if f.severity >= Severity.WARNING)} warning(s); "
           f"{time.perf_counter() - t0:.1f} s")
    return ExitCode.CLEAN


def _table(title: str, suspects: list, top: int, digits: int = 1) -> None:
    from rich.table import Table

    out = console()
    t = Table(title=title, title_justify="left", header_style="bold", show_edge=False, pad_edge=False)
    t.add_column("#", justify="right")
    t.add_column("case", overflow="fold")
    t.add_column("label", overflow="fold")
    t.add_column("score", justify="right")
    t.add_column("slice", justify="right")
    t.add_column("why", overflow="fold", ratio=1)
    for i, s in enumerate(suspects[:top], 1):
        why = "; ".join(s.reasons) if s.reasons else "[dim]like the other cases[/dim]"
        t.add_row(str(i), shown(s.case), shown(s.name), f"{s.score:.{digits}f}",
                  "" if s.slice is None else str(s.slice), why if not s.reasons else shown(why))
    out.print(t)
    if len(suspects) > top:
        out.print(f"[dim]{len(suspects) - top} more; --top N shows more, --format json all[/dim]")
