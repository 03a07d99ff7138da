"""`dataguard evaluate` and `dataguard ensemble suggest`: honest cross-validation per label,
and ensemble weights from out-of-fold predictions."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from ..findings import Severity
from ..fsio import atomic_write_text
from .common import (
    ExitCode,
    UsageError,
    add_engine_args,
    console,
    note,
    shown,
    workspace,
)
from .progress import CountProgress
from .render import csv_row, render_findings

EVAL_EPILOG = """\
examples:
  dataguard evaluate -d 1                 every trained model's cross-validation
  dataguard evaluate -d 1 --model 2d --model 3d_fullres:0,1 --plot cv.png \\
      --worst 5
  dataguard evaluate -d 1 my_preds/ --fold 2
                                          a loose folder, as fold 2's validation
  dataguard evaluate -d 1 --format json > cv.json
  dataguard evaluate -d 1 --metric hd95 --metric nsd --tolerance 2
                                          surface metrics as challenges score
  dataguard evaluate -d 1 --metric surface --tolerance myocardium=1 \
      --tolerance 2                       NSD at 1 mm for one label, 2 elsewhere

A label absent from a case's reference is not scored as Dice 0: "absent" when
the prediction is empty too, a false positive otherwise; means are over the
cases that have the label, and each fold shows how many of its validation cases
do (1/10 says the fold barely measures it). Finished folds only (with
checkpoint_final.pth); the others are named (DG806) unless --include-unfinished.
DG802: a validation folder must hold exactly that fold's validation cases (a
training case, a missing case or another fold's case is an error).
Surface metrics (--metric; `surface` is all four), in mm at the reference's
voxel size: HD, HD95 (the larger directed 95th percentile, as MONAI), ASSD
(both directions pooled), NSD at --tolerance (default 2 mm). Means are over the
cases with the label; a prediction that misses a label has no distance (NSD 0)
and is counted as "missed", never as a silent 0.
exit codes: 0 ok, 1 DG802, 2 usage
"""

SUGGEST_EPILOG = """\
  dataguard ensemble suggest -d 1 --model 2d --model 3d_fullres -o weights.json
  dataguard ensemble suggest -d 1 --model 2d --model 3d_fullres \\
      --check weights.json

Out-of-fold probabilities come from fold_X/validation/*.npz (train with --npz)
of finished folds (DG806 names the others), made by --checkpoint (final unless
asked; the weights file records it and submit checks it). The search is
coordinate ascent over labels on a simplex grid of weights (the argmax couples
labels): each step sets one label's weights to maximise the mean foreground
Dice with the others fixed, starting from equal weights, so it never ends below
equal weights on these cases.
DG803 (warning): weight for a model whose out-of-fold Dice for that label is ~0.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="per-label cross-validation Dice, empty references, case-set checks",
                       description="Evaluate each model's cross-validation predictions (fold_X/validation)\n"
                       "against gt_segmentations: Dice and voxel counts per case and label, per-fold\n"
                       "label coverage, DG802 for wrong case sets.", epilog=EVAL_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", nargs="?", type=Path, metavar="PRED_DIR", help="a loose prediction folder (with --fold)")
    p.add_argument("-d", "--dataset", required=True, metavar="ID", help="dataset id or name")
    p.add_argument("--model", action="append", default=[], metavar="CONFIG[:FOLDS[:TRAINER[:PLANS]]]",
                   help="models to evaluate (default: every trained model of the dataset)")
    p.add_argument("--fold", type=int, metavar="K", help="the fold a loose PRED_DIR claims to validate")
    _fold_args(p)
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="fold x label heatmap and per-case Dice strips")
    p.add_argument("--worst", type=int, default=0, metavar="N",
                   help="per label, the N cases furthest below the others (look at these labels first)")
    p.add_argument("--metric", action="append", default=[], choices=("hd", "hd95", "assd", "nsd", "surface"),
                   help="a surface metric besides Dice; repeat for several (surface: all four)")
    p.add_argument("--tolerance", action="append", default=[], metavar="[LABEL=]MM",
                   help="NSD's tolerance in mm, once for every label or per label (default 2)")
    add_engine_args(p)
    p.set_defaults(func=cmd_evaluate)


def _metrics(args, order) -> tuple[tuple[str, ...], dict | None]:
    """(--metric list in `order`, --tolerance as {label or '*': mm} or None)."""
    asked = set(args.metric)
    metrics = tuple(m for m in order if m in asked or "surface" in asked)
    if args.tolerance and not metrics:
        raise UsageError("--tolerance is NSD's: add --metric nsd (or --metric surface)")
    tol: dict = {}
    every = None
    for t in args.tolerance:
        key, _, mm = t.rpartition("=")
        try:
            value = float(mm)
        except ValueError:
            raise UsageError(f"--tolerance {t!r}: not a number of mm (e.g. 2, or myocardium=1.5)") from None
        if key:
            tol[key] = value
        else:
            every = value
    return metrics, ({"*": every, **tol} if every is not None else tol) if args.tolerance else None


def add_suggest_parser(ensemble_sub) -> None:
    """`dataguard ensemble suggest`, a subcommand of `ensemble` (cli/submit.py builds that group)."""
    s = ensemble_sub.add_parser("suggest", help="search per-label weights on out-of-fold probabilities",
                                description="Search per-label ensemble weights on out-of-fold probabilities.",
                                epilog=SUGGEST_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("-d", "--dataset", required=True, metavar="ID")
    s.add_argument("--model", action="append", default=[], required=True, metavar="SPEC",
                   help="two or more models, as in submit --model")
    s.add_argument("-o", "--output", type=Path, metavar="WEIGHTS.json", help="write the weight file submit reads")
    s.add_argument("--check", type=Path, metavar="WEIGHTS.json", help="judge an existing weight file (DG803)")
    s.add_argument("--step", type=float, default=0.1, help="grid step of the weight simplex (default 0.1)")
    s.add_argument("--predict-missing", action="store_true",
                   help="run nnU-Net's validation with --npz for folds without probabilities first")
    s.add_argument("--trust-checkpoint", action="append", type=Path, metavar="PATH",
                   help="load this checkpoint on a torch older than 2.10 although dataguard did not write it "
                        "(only for files whose origin you know)")
    s.add_argument("--format", choices=("table", "json"), default="table")
    _fold_args(s)
    add_engine_args(s)
    s.set_defaults(func=cmd_suggest)


POSTPROCESS_EPILOG = """\
examples:
  dataguard ensemble postprocess -d 1 --model 3d_fullres -o pp.json
  dataguard ensemble postprocess -d 1 --model 2d --model 3d_fullres \\
      --weights w.json -o pp.json
  dataguard submit -d 1 --model 2d --model 3d_fullres --weights w.json \\
      --postprocess pp.json -o sub.zip      applies exactly what was decided

Decides post-processing as nnU-Net's determine_postprocessing does, on the
out-of-fold segmentation submit would build (one model's validation label maps;
for several models their --npz probabilities combined with --weights, equal
weights without): keep the largest foreground component if the mean foreground
Dice rises and no label falls; then per label, keep its largest component if
its Dice rises. Each operation's out-of-fold effect is printed, kept or not,
and the kept ones get a paired bootstrap interval over cases.
"""


def add_postprocess_parser(ensemble_sub) -> None:
    """`dataguard ensemble postprocess`: post-processing decided on out-of-fold predictions."""
    s = ensemble_sub.add_parser("postprocess", help="decide post-processing on out-of-fold predictions (as nnU-Net)",
                                description="Decide post-processing on out-of-fold predictions, as nnU-Net does.",
                                epilog=POSTPROCESS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("-d", "--dataset", required=True, metavar="ID")
    s.add_argument("--model", action="append", default=[], required=True, metavar="SPEC",
                   help="one model, or several for their ensemble, as in submit --model")
    s.add_argument("--weights", type=Path, metavar="WEIGHTS.json", help="the ensemble's weights (default equal)")
    s.add_argument("-o", "--output", type=Path, metavar="PP.json", help="write the decision submit --postprocess reads")
    s.add_argument("--format", choices=("table", "json"), default="table")
    add_engine_args(s)
    s.set_defaults(func=cmd_postprocess)


def cmd_postprocess(args) -> int:
    from rich.table import Table

    ws = _ws(args)
    weights = ws.evaluate.load_weights(args.weights, list(args.model)) if args.weights else None
    with CountProgress("deciding") as bar:
        dec, gain = ws.evaluate.decide_postprocessing(args.model, weights, on_case=bar.tick)
    if args.output:
        ws.evaluate.write_postprocessing(dec, args.output)
    if args.format == "json":
        json.dump({**dec.to_json(), "gain": None if gain is None else gain.to_dict()}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return ExitCode.CLEAN
    out = console()
    t = Table(title=f"post-processing tried on {dec.cases} out-of-fold cases ({dec.source}), nnU-Net's Dice",
              title_justify="left", header_style="bold")
    for col, j in (("operation", "left"), ("Dice before", "right"), ("after", "right"), ("kept", "left")):
        t.add_column(col, justify=j)
    for s in dec.steps:
        t.add_row(s["operation"], _f(s["mean_dice_before"]), _f(s["mean_dice_after"]),
                  "[bold green]yes[/]" if s["kept"] else "no")
    out.print(t)
    out.print(wrapped("decided: " + dec.describe()), highlight=False)
    if gain is not None:
        out.print(wrapped("is it real? " + gain.words("the decided post-processing", "no post-processing")
                          + " (paired bootstrap over cases)"), highlight=False)
    if args.output:
        out.print(f"wrote {shown(args.output)}: apply it with  dataguard submit ... --postprocess {shown(args.output)}",
                  soft_wrap=True, highlight=False)
    return ExitCode.CLEAN


def _fold_args(p) -> None:
    p.add_argument("--checkpoint", choices=("final", "best"), default="final",
                   help="whose out-of-fold predictions: checkpoint_final (the default, what training's own "
                        "validation uses) or checkpoint_best (made with --predict-missing)")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also use folds whose training did not finish (no checkpoint_final.pth)")


def wrapped(text: str, width: int = 80) -> str:
    """A message broken at spaces to fit `width` columns (a long path stays whole)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False)) or text


def _ws(args):
    return workspace(args, [args.dataset])


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def cmd_evaluate(args) -> int:
    if args.pred_dir is not None and args.model:
        raise UsageError("give PRED_DIR --fold K or --model, not both")
    ws = _ws(args)
    metrics, tolerance = _metrics(args, ws.evaluate.SURFACE_METRICS)
    ev = ws.evaluate.run(args.model or None, args.pred_dir, args.fold, include_unfinished=args.include_unfinished,
                         checkpoint=args.checkpoint, metrics=metrics, tolerance=tolerance)
    for line in ev.used:
        note(wrapped("folds: " + line))
    if args.format == "json":
        json.dump(ev.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["model", "fold", "case", "label", "dice", "ref_voxels", "pred_voxels", "status",
                    *ev.metrics, *(["surface_status"] if ev.metrics else [])])
        for s in ev.scores:
            dice = "" if s.dice is None else f"{s.dice:.6f}"
            surf = s.surface or {}
            extra = ["" if surf.get(m) is None else f"{surf[m]:.6f}" for m in ev.metrics]
            w.writerow(csv_row([s.model, s.fold, s.case, ev.labels[s.label], dice, s.ref_voxels, s.pred_voxels,
                                s.status, *extra, *([surf.get("status", "")] if ev.metrics else [])]))
    else:
        _tables(ev)
    if args.worst and args.format == "table":
        _worst(ev, ev.worst(args.worst))
    if args.plot:
        ev.plot(args.plot)
        note(f"wrote {args.plot}")
    if ev.findings and args.format == "table":
        unfinished = [f for f in ev.findings if f.code == "DG806"]
        if unfinished:
            render_findings(unfinished, "unfinished folds", console())
        if len(unfinished) < len(ev.findings):
            render_findings([f for f in ev.findings if f.code != "DG806"], "case sets", console())
    return ExitCode.FINDINGS if any(f.severity >= Severity.ERROR for f in ev.findings) else ExitCode.CLEAN


def _tables(ev) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    for m in ev.models():
        folds = ev.folds(m)
        t = Table(title=Text(f"{ev.dataset}  {m}", style="bold"), title_justify="left", header_style="bold")
        t.add_column("label")
        for k in folds:
            t.add_column(f"fold {k}", justify="right")
        t.add_column("all folds", justify="right")
        t.add_column("false pos.", justify="right")
        total = ev.per_label(m)
        for lab, name in ev.labels.items():
            cells = []
            for k in folds:
                v = ev.per_label(m, k)[lab]
                style = "yellow" if v["cases_with_label"] * 2 < v["cases"] else ""
                cells.append(Text(f"{_f(v['mean_dice'])} ({v['cases_with_label']}/{v['cases']})", style=style))
            a = total[lab]
            cells.append(Text(f"{_f(a['mean_dice'])} ({a['cases_with_label']}/{a['cases']})", style="bold"))
            cells.append(str(a["false_positives"]))
            t.add_row(name, *cells)
        out.print(t)
        if ev.metrics:
            _surface_table(ev, m, total)
    out.print(Text("Dice mean over the cases that contain the label (n with label / validation cases); "
                   "false pos.: cases without the label where the model predicted it", style="dim"))


HEADS = {"hd95": "HD95 mm", "assd": "ASSD mm", "hd": "HD mm", "nsd": "NSD"}


def _surface_table(ev, model: str, total: dict) -> None:
    """Per label over all folds: the surface metrics asked for, and the predictions that
    missed the label (no distance: never averaged in as 0)."""
    from rich.table import Table
    from rich.text import Text

    order = [m for m in ("hd95", "assd", "hd", "nsd") if m in ev.metrics]
    t = Table(title=Text(f"{ev.dataset}  {model}: surface metrics, all folds", style="bold"),
              title_justify="left", header_style="bold")
    t.add_column("label")
    for m in order:
        t.add_column(HEADS[m], justify="right")
    if "nsd" in ev.metrics:
        t.add_column("tol. mm", justify="right")
    t.add_column("missed", justify="right")
    for lab, name in ev.labels.items():
        a = total[lab]
        row = [name] + [_f(a.get(f"mean_{m}")) for m in order]
        if "nsd" in ev.metrics:
            row.append(f"{ev.tolerance.get(lab, 0):g}")
        row.append(str(a.get("missed", 0)))
        t.add_row(*row)
    console().print(t)


def _worst(ev, worst) -> None:
    from rich.table import Table

    out = console()
    t = Table(title="cases to look at first (lowest out-of-fold Dice relative to the others)", title_justify="left",
              header_style="bold")
    # with surface metrics, HD95 and NSD take the voxel counts' place (80 columns)
    extra = [m for m in ("hd95", "nsd") if m in ev.metrics]
    counts = ("ref voxels", "pred voxels") if not extra else ()
    for col in ("label", "case", "model", "fold", "Dice", *(HEADS[m] for m in extra), *counts):
        t.add_column(col, overflow="fold")
    for lab, rows in worst.items():
        for s in rows:
            surf = s.surface or {}
            t.add_row(ev.labels[lab], s.case, s.model, str(s.fold), _f(s.dice), *(_f(surf.get(m)) for m in extra),
                      *((str(s.ref_voxels), str(s.pred_voxels)) if not extra else ()))
    out.print(t)
    cases = sorted({s.case for rows in worst.values() for s in rows})
    if cases:
        out.print(f"open them in the TUI: dataguard tui -d {shown(ev.dataset)} --cases {shown(','.join(cases))}",
                  soft_wrap=True, highlight=False)


def cmd_suggest(args) -> int:
    if len(args.model) < 2 and not args.check:
        raise UsageError("an ensemble needs two or more --model")
    ws = _ws(args)
    models, oof = _out_of_fold(ws, args)
    if oof.missing and args.predict_missing:
        _predict_missing(ws, args, models, oof)
        models, oof = _out_of_fold(ws, args)
    for m in models:
        note(wrapped("folds: " + m.describe()))
    unfinished = [f for m in models for f in m.fold_findings()]
    if unfinished and args.format == "table":
        render_findings(unfinished, "unfinished folds", console())
    if oof.missing:
        calls = ws.evaluate.validation_calls(models, oof.missing, args.checkpoint)
        found = oof.prerequisite_findings(calls)           # DG507, one per fold, each with its call
        if args.format == "json":
            json.dump({"findings": [f.to_dict() for f in found]}, sys.stdout, indent=1)
            sys.stdout.write("\n")
            return ExitCode.FINDINGS
        out = console()
        out.print(f"[bold red]DG507 {found[0].severity}[/]: {found[0].message.split(':')[0]}", highlight=False)
        out.print(f"[bold red]no out-of-fold probabilities of checkpoint_{args.checkpoint}[/] for: "
                  + "; ".join(f"{m} fold {k}" + (f" ({oof.why[f'{m} fold {k}']})" if f"{m} fold {k}" in oof.why
                                                  else "") for m, f in oof.missing.items() for k in f))
        for _m, _fold, call in calls:
            out.print(f"  {call.shell()}", soft_wrap=True, highlight=False, markup=False)
        out.print("(or rerun with --predict-missing)")
        return ExitCode.FINDINGS
    names = [m.spec for m in models]
    if args.check:
        weights = ws.evaluate.load_weights(args.check, names)
        if weights.tuned_on != args.checkpoint:
            note(f"{args.check} was tuned on checkpoint_{weights.tuned_on}; judged here on checkpoint_"
                 f"{args.checkpoint}")
        found = ws.evaluate.check_weights(weights, names, str(args.check), checkpoint=args.checkpoint,
                                          include_unfinished=args.include_unfinished)
        _dg803(found)
        if len(args.model) < 2:
            return ExitCode.CLEAN
    sug, findings = ws.evaluate.suggest_weights(oof, step=args.step)
    if args.output:
        atomic_write_text(args.output, json.dumps(sug.weights_file(), indent=2) + "\n")
    if args.format == "json":
        json.dump({**sug.to_dict(), "findings": [f.to_dict() for f in findings]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _suggest_table(sug)
        _dg803(findings)
        if args.output:
            console().print(f"wrote {shown(args.output)}: use it with  dataguard submit ... --weights {shown(args.output)}",
                            soft_wrap=True, highlight=False)
    return ExitCode.CLEAN


def _out_of_fold(ws, args):
    """Every case read once, reduced to what the weight search needs, with a progress bar."""
    with CountProgress("reading out-of-fold probabilities") as bar:
        return ws.evaluate.out_of_fold(args.model, on_case=bar.tick, include_unfinished=args.include_unfinished,
                                       checkpoint=args.checkpoint)


def _dg803(findings) -> None:
    if findings:
        render_findings(findings, "weights", console())


def _suggest_table(sug) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    fmt = _f
    best = sug.best_candidate
    t0 = Table(title=Text("nnU-Net's candidates (find_best_configuration), out-of-fold Dice", style="bold"),
               title_justify="left", header_style="bold")
    t0.add_column("candidate")
    t0.add_column("mean", justify="right")
    for name in sug.labels.values():
        t0.add_column(name, justify="right")
    for c in sug.candidates:
        t0.add_row(c.name + ("  <- nnU-Net's pick" if c is best else ""), fmt(c.mean),
                   *[fmt(c.dice[lab]) for lab in sug.labels], style="bold" if c is best else "")
    out.print(t0)
    order = "/".join(sug.models)
    t = Table(title=Text(f"chosen weights per label ({order}), {sug.cases} cases", style="bold"),
              title_justify="left", header_style="bold")
    t.add_column("label")
    for m in sug.models:
        t.add_column(f"{m} alone", justify="right")
    t.add_column("equal", justify="right")
    t.add_column("chosen weights", justify="left")
    t.add_column("Dice", justify="right")
    t.add_column("vs pick", justify="right")
    for lab, name in sug.labels.items():
        ws = "/".join(f"{w:.1f}" for w in sug.weights[lab])
        ref, got = best.dice[lab], sug.chosen[lab]
        gain = None if ref is None or got is None else got - ref
        t.add_row(name, *[fmt(sug.single[m][lab]) for m in sug.models], fmt(sug.equal[lab]), ws,
                  fmt(got), "n/a" if gain is None else f"{gain:+.3f}")
    if 0 in sug.weights:
        t.add_row(Text("background", style="dim"), *["" for _ in sug.models], "",
                  Text("/".join(f"{w:.1f}" for w in sug.weights[0]), style="dim"), "", "")
    out.print(t)
    out.print(f"mean foreground Dice: chosen {sug.chosen_mean:.3f}, {sug.chosen_mean - best.mean:+.3f} over "
              f"nnU-Net's pick\n  ({best.name}: {best.mean:.3f}"
              + ("; the search started there)" if sug.start == best.name else f"; search from {sug.start})"),
              soft_wrap=True, highlight=False)
    if sug.gain is not None:
        out.print(wrapped("is it real? " + sug.gain.words() + " (paired bootstrap over cases)"),
                  style="bold" if sug.gain.significant else "", highlight=False)
    if sug.voxels:
        out.print(f"searched {sug.contested:,} contested voxels of {sug.voxels:,} "
                  f"({sug.contested / sug.voxels:.1%});\n  no weights can change the class of the others",
                  style="dim", soft_wrap=True, highlight=False)
    t2 = Table(title=f"candidates per label (weights {order} -> that label's Dice)", title_justify="left",
               header_style="bold")
    t2.add_column("label")
    t2.add_column("best candidates")
    for lab, rows in sug.table.items():
        top = sorted(rows, key=lambda r: -(r[1] or 0))[:4]
        t2.add_row(sug.labels[lab], "  ".join(f"{'/'.join(f'{w:.1f}' for w in c)} {fmt(d)}" for c, d in top))
    out.print(t2)


def _predict_missing(ws, args, models, oof) -> None:
    ws.evaluate.run_validation(ws.evaluate.validation_calls(models, oof.missing, args.checkpoint),
                               tuple(args.trust_checkpoint or ()),
                               on_call=lambda call: note(f"running: {call.shell()}"))
