"""`dataguard train`: the pre-flight gate, then nnU-Net training with real epoch control."""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from .common import (
    ExitCode,
    UsageError,
    add_engine_args,
    add_group_args,
    console,
    note,
    shown,
    split_codes,
    workspace,
)
from .live_view import LiveView
from .logs import render_runs

EPILOG = """\
examples:
  dataguard train 1 2d 0 --epochs 80 --patience 20           80 epochs, stop early after 20 flat
  dataguard train Dataset001_Heart 3d_fullres 2 --stop-on-collapse --save-best-per-label
  dataguard train 1 2d 0 --dry-run                            the gate's report and the exact call
  dataguard train 1 2d 0 --continue                           resume (or finish) an earlier run
  dataguard train 1 2d 0 --device cpu --epochs 3 --iterations-per-epoch 5 --no-val-mirroring

the gate refuses (exit 1) and names the fixing command for: error findings in the raw data or
this configuration's preprocessed data (let a code through with --allow CODE); DG502-DG504 for
this fold, also in the default split nnU-Net has not written yet (DG505); a cuda/mps device
that is not there; too little free disk; a finished or unfinished run already in the fold's
folder (without --continue).

the model lands in $nnUNet_results/DatasetXXX/<BASE>_dataguard__<plans>__<config>/fold_N;
predict with plain nnU-Net:  nnUNetv2_predict ... -tr nnUNetTrainer_dataguard
exit codes: 0 trained, 1 refused by the gate, 2 usage error, 3 internal error,
            4 nnU-Net's training process failed, 130 interrupted (resume with --continue)
"""
TRAINING_FAILED, INTERRUPTED = 4, 130


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="pre-flight gate + nnU-Net training with epochs, early stopping, collapse watch",
                       description="Check everything a training run depends on, then run nnU-Net's own training "
                       "with dataguard's trainer subclass: an exact epoch count, early stopping on the EMA pseudo "
                       "Dice, a per-label collapse watch (DG801), per-label best checkpoints and a live view.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="dataset id or name, as nnU-Net takes it (1, Dataset001_Heart)")
    p.add_argument("configuration", metavar="CONFIG", help="2d, 3d_fullres, 3d_lowres, ...")
    p.add_argument("fold", metavar="FOLD", help="0-4 (or 'all')")
    g = p.add_argument_group("training length")
    g.add_argument("--epochs", type=int, metavar="N", help="epochs to train (nnU-Net's default: 1000)")
    g.add_argument("--iterations-per-epoch", type=int, metavar="N", help="training batches per epoch (default 250)")
    g.add_argument("--val-iterations", type=int, metavar="N", help="validation batches per epoch (default 50)")
    g.add_argument("--patience", type=int, metavar="P",
                   help="stop when the EMA pseudo Dice has not improved by more than --min-delta for P epochs")
    g.add_argument("--min-delta", type=float, default=0.0, metavar="D", help="smallest EMA gain that counts (0)")
    g.add_argument("--stop-on-collapse", action="store_true",
                   help="end training (cleanly, with checkpoint_final.pth) when a label collapses (DG801)")
    g = p.add_argument_group("model and outputs")
    g.add_argument("--trainer", default="nnUNetTrainer", metavar="BASE",
                   help="nnU-Net trainer class to extend (default nnUNetTrainer); the run is named BASE_dataguard")
    g.add_argument("--plans", default="nnUNetPlans", metavar="NAME", help="plans identifier (default nnUNetPlans)")
    g.add_argument("--device", choices=("cuda", "cpu", "mps"), default="cuda", help="default cuda")
    g.add_argument("--continue", dest="cont", action="store_true", help="resume the run in the fold folder")
    g.add_argument("--trust-checkpoint", action="append", type=Path, default=[], metavar="PATH",
                   help="with --continue on a torch older than 2.10: load this checkpoint although dataguard "
                        "did not write it (only for files whose origin you know)")
    g.add_argument("--npz", action="store_true",
                   help="save the validation probabilities (needed for ensembling), as nnU-Net's --npz")
    g.add_argument("--save-best-per-label", action="store_true",
                   help="keep checkpoint_best_<label>.pth where that label's EMA pseudo Dice peaked")
    g.add_argument("--no-val-mirroring", action="store_true",
                   help="final validation without test-time mirroring (2-8x faster; the checkpoints keep it)")
    g = p.add_argument_group("gate")
    g.add_argument("--allow", action="append", default=[], metavar="CODE",
                   help="let findings with this code (or prefix) through the gate; repeatable, comma-separated")
    g.add_argument("--dry-run", action="store_true", help="print the gate's report and the exact training call")
    g.add_argument("--reserve-disk", default="1G", metavar="SIZE",
                   help="disk to keep free beyond the checkpoints (default 1G)")
    add_engine_args(g)                           # the gate's scan: --manifest-dir, -j, --executor
    add_group_args(g)
    p.set_defaults(func=cmd_train)


def _fold(text: str) -> int | str:
    if text == "all":
        return text
    try:
        f = int(text)
    except ValueError:
        raise UsageError(f"FOLD must be a number or 'all', not {text!r}") from None
    if f < 0:
        raise UsageError("FOLD must be >= 0")
    return f


def cmd_train(args) -> int:
    fold = _fold(args.fold)
    for opt in ("epochs", "iterations_per_epoch", "val_iterations"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise UsageError(f"--{opt.replace('_', '-')} must be at least 1")
    if args.patience is not None and args.patience < 1:
        raise UsageError("--patience must be at least 1")
    allow = split_codes(args.allow) if args.allow else []
    note(f"pre-flight: scanning {args.dataset} (raw + {args.configuration}) ...")
    settings = {"epochs": args.epochs, "iterations_per_epoch": args.iterations_per_epoch,
                "val_iterations": args.val_iterations, "patience": args.patience, "min_delta": args.min_delta,
                "stop_on_collapse": args.stop_on_collapse, "save_best_per_label": args.save_best_per_label,
                "val_mirroring": not args.no_val_mirroring}
    ws = workspace(args, [])
    if args.groups is not None or args.group_regex is not None:
        ws.dataset(args.dataset).splits.set_groups(file=args.groups, regex=args.group_regex)
    pf, call = ws.train.prepare(args.configuration, fold, dataset=args.dataset, trainer=args.trainer, plans=args.plans,
                                device=args.device, npz=args.npz, cont=args.cont, allow=allow,
                                reserve=args.reserve_disk, trust=tuple(args.trust_checkpoint), settings=settings)
    _report(pf, call, args)
    if not pf.ok:
        return ExitCode.FINDINGS
    if args.dry_run:
        return ExitCode.CLEAN
    return _train(ws, pf, call, args)


def _report(pf, call, args) -> None:
    from rich.text import Text

    out = console()
    say = functools.partial(out.print, soft_wrap=True)   # paths and calls stay whole lines
    title = f"pre-flight  {pf.dataset}  {pf.configuration}  fold {pf.fold if pf.fold >= 0 else 'all'}"
    say(Text(title, style="bold"))
    for f in pf.blocking:
        say(Text(f"  refused  {f.code} {f.severity}: ", style="bold red") + Text(_where(f) + f.message))
    for r in pf.refusals:
        code = f"{r.code}: " if r.code else ""
        say(Text(f"  refused  {code}", style="bold red") + Text(f"{r.what}\n           fix: {r.fix}"))
    for f in pf.allowed:
        say(Text(f"  allowed  {f.code}: ", style="yellow") + Text(_where(f) + f.message))
    rest = len(pf.findings) - len(pf.blocking) - len(pf.allowed) - sum(f.code == "DG505" for f in pf.blocking)
    if rest > 0:
        say(Text(f"  ({rest} other finding{'s do' if rest != 1 else ' does'} not block this run: "
                       f"dataguard scan -d {pf.dataset})", style="dim"))
    for n in pf.notes:
        say(Text(f"  ok       {n}", style="dim"))
    if pf.fixes:
        say(Text("fix with:", style="bold"))
        for fx in pf.fixes:
            say(f"  {fx}")
    verdict = "PASS" if pf.ok else "REFUSED"
    say(Text(f"{verdict}: ", style="bold green" if pf.ok else "bold red")
              + Text("training may start" if pf.ok else "training not started"))
    if args.dry_run or not pf.ok:
        say(Text("training call:", style="bold"))
        say(call.shell(), highlight=False, markup=False)


def _where(f) -> str:
    return f"{f.case}: " if f.case else ""


def _train(ws, pf, call, args) -> int:
    title = f"{pf.dataset}  {pf.configuration}  fold {args.fold}  ·  {call.argv[call.argv.index('-tr') + 1]}  ·  {args.device}"
    view = LiveView(title)
    try:
        result = ws.train.run(pf, call, args.patience, on_event=view)
    finally:
        view.close()
    outcome = result.outcome
    _summary(pf, result.run, result.artifacts, outcome, call, args)
    if outcome.interrupted:
        note(f"interrupted; resume with: dataguard train {args.dataset} {args.configuration} {args.fold} --continue")
        return INTERRUPTED
    if outcome.returncode != 0:
        note(f"nnU-Net's training process failed (exit {outcome.returncode}); the end of {outcome.console_log}:")
        note(result.console_tail())
        return TRAINING_FAILED
    return ExitCode.CLEAN


def _summary(pf, run, art, outcome, call, args) -> None:
    from rich.text import Text


    out = console()
    if run is not None and run.epochs:
        render_runs([run])
    trained = outcome.last("trained") or {}
    if trained.get("stop"):
        out.print(Text(f"stopped early: {trained['stop']}", style="bold yellow"))
    secs = [s for s in (run.epoch_seconds if run else []) if s]
    start, trained_ev = outcome.last("start"), outcome.last("trained")
    if secs and start and trained_ev:
        n_new = sum(1 for e in outcome.events if e.get("event") == "epoch")
        wall = (trained_ev["time"] - start["time"]) / max(n_new, 1)
        out.print(f"{n_new} epochs trained here, {wall:.1f} s each with checkpointing "
                  f"(nnU-Net's epoch time {sum(secs) / len(secs):.1f} s); whole run {outcome.seconds:.0f} s")
    out.print(Text("model folder: ", style="bold") + Text(str(pf.fold_folder)), soft_wrap=True)
    if art.plot:
        out.print(f"  {art.plot.name:<34} per-label pseudo Dice, EMA, best epoch")
    if art.best_copy:
        out.print(f"  {art.best_copy.name:<34} copy of checkpoint_best.pth, blake3 verified")
    if art.per_label:
        out.print(f"  {'checkpoint_best_<label>.pth':<34} {shown(', '.join(p.stem[16:] for p in art.per_label))}")
    for problem in art.problems:
        out.print(Text(problem, style="red"))
    if outcome.returncode == 0 and not outcome.interrupted:
        name = call.argv[call.argv.index("-tr") + 1]
        fold = args.fold
        out.print(Text("predict with plain nnU-Net:", style="bold"))
        out.print(f"  nnUNetv2_predict -i IMAGES -o OUT -d {pf.dataset} -c {args.configuration} -f {fold} "
                  f"-tr {name} -p {args.plans}", soft_wrap=True, highlight=False, markup=False)
    sys.stdout.flush()
