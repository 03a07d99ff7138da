"""`dataguard train`: the pre-flight gate, then nnU-Net training with real epoch control."""
from __future__ import annotations

import argparse
import functools
import sys
import textwrap
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
  dataguard train 1 2d 0 --epochs 80 --patience 20
      80 epochs, stop early after 20 epochs without EMA gain
  dataguard train 1 2d 0-4 --epochs 80 --npz
      the five folds one after another, each through the gate, then a table
  dataguard train 1 2d 0-4 --continue
      resume: finished folds are skipped, the interrupted one goes on with
      the settings recorded in its run record (dataguard_train.json)
  dataguard train Dataset001_Heart 3d_fullres 2 --stop-on-collapse
  dataguard train 1 2d 0 --dry-run       the gate's report and the exact call

the gate refuses (exit 1) and names the fixing command for: error findings
in the raw data or this configuration's preprocessed data (let a code
through with --allow CODE); DG502-DG504 for this fold, also in the default
split nnU-Net has not written yet (DG505); a fold the split does not have;
a cuda/mps device that is not there; too little free disk; a finished or
unfinished run already in the fold's folder (without --continue); a
--continue that would change the recorded settings (without
--change-settings).

the model lands in
  $nnUNet_results/DatasetXXX/<BASE>_dataguard__<plans>__<config>/fold_N
predict with plain nnU-Net:  nnUNetv2_predict ... -tr nnUNetTrainer_dataguard
exit codes: 0 trained, 1 refused by the gate, 2 usage error, 3 internal
  error, 4 nnU-Net's training process failed, 130 interrupted (resume with
  --continue)
"""
TRAINING_FAILED, INTERRUPTED = 4, 130


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="pre-flight gate + nnU-Net training with epochs, early stopping, collapse watch",
                       description=textwrap.fill(
                           "Check everything a training run depends on, then run nnU-Net's own training "
                           "with dataguard's trainer subclass: an exact epoch count, early stopping on the EMA "
                           "pseudo Dice, a per-label collapse watch (DG801), per-label best checkpoints and a "
                           "live view. Every setting goes into the fold's run record, which --continue reuses.",
                           78),
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="dataset id or name, as nnU-Net takes it (1, Dataset001_Heart)")
    p.add_argument("configuration", metavar="CONFIG", help="2d, 3d_fullres, 3d_lowres, ...")
    p.add_argument("fold", metavar="FOLDS",
                   help="a fold (0-4), several (0-4, 0,1,2: one after another, each through the gate), "
                        "or 'all' (one model on every training case)")
    g = p.add_argument_group("training length")
    g.add_argument("--epochs", type=int, metavar="N", help="epochs to train (nnU-Net's default: 1000)")
    g.add_argument("--iterations-per-epoch", type=int, metavar="N", help="training batches per epoch (default 250)")
    g.add_argument("--val-iterations", type=int, metavar="N", help="validation batches per epoch (default 50)")
    g.add_argument("--patience", type=int, metavar="P",
                   help="stop when the EMA pseudo Dice has not improved by more than --min-delta for P epochs")
    g.add_argument("--min-delta", type=float, metavar="D", help="smallest EMA gain that counts (0)")
    g.add_argument("--stop-on-collapse", action="store_true", default=None,
                   help="end training (cleanly, with checkpoint_final.pth) when a label collapses (DG801)")
    g = p.add_argument_group("model and outputs")
    g.add_argument("--trainer", default="nnUNetTrainer", metavar="BASE",
                   help="nnU-Net trainer class to extend (default nnUNetTrainer); the run is named BASE_dataguard")
    g.add_argument("--plans", default="nnUNetPlans", metavar="NAME", help="plans identifier (default nnUNetPlans)")
    g.add_argument("--device", choices=("cuda", "cpu", "mps"), help="default cuda (with --continue: the run's)")
    g.add_argument("--continue", dest="cont", action="store_true",
                   help="resume the run in the fold folder with the settings its run record holds "
                        "(dataguard_train.json); with several folds: skip the finished ones")
    g.add_argument("--change-settings", action="store_true",
                   help="with --continue: let settings given here replace the recorded ones")
    g.add_argument("--trust-checkpoint", action="append", type=Path, default=[], metavar="PATH",
                   help="with --continue on a torch older than 2.10: load this checkpoint although dataguard "
                        "did not write it (only for files whose origin you know)")
    g.add_argument("--npz", action="store_true", default=None,
                   help="save the validation probabilities (needed for ensembling), as nnU-Net's --npz")
    g.add_argument("--save-best-per-label", action="store_true", default=None,
                   help="keep checkpoint_best_<label>.pth where that label's EMA pseudo Dice peaked")
    g.add_argument("--no-val-mirroring", action="store_true", default=None,
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


def parse_folds(text: str) -> list[int | str]:
    """FOLDS: "all", "2", "0-4", "0,1,3", "0-2,4"; each fold once, in the order given."""
    text = text.strip()
    if text == "all":
        return ["all"]
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if dash else (int(part), int(part))
        except ValueError:
            raise UsageError(f"FOLDS must be a fold number, a range (0-4), a list (0,1,2) or 'all', not {text!r}") \
                from None
        if first < 0 or last < first:
            raise UsageError(f"not a fold range: {part!r} (e.g. 0-4)")
        out += [f for f in range(first, last + 1) if f not in out]
    if not out:
        raise UsageError("FOLDS is empty")
    return out


def _given(args) -> dict:
    """The training settings typed on this command line (None: not given)."""
    return {"epochs": args.epochs, "iterations_per_epoch": args.iterations_per_epoch,
            "val_iterations": args.val_iterations, "patience": args.patience, "min_delta": args.min_delta,
            "stop_on_collapse": args.stop_on_collapse, "save_best_per_label": args.save_best_per_label,
            "val_mirroring": False if args.no_val_mirroring else None}


def cmd_train(args) -> int:
    folds = parse_folds(args.fold)
    for opt in ("epochs", "iterations_per_epoch", "val_iterations"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise UsageError(f"--{opt.replace('_', '-')} must be at least 1")
    if args.patience is not None and args.patience < 1:
        raise UsageError("--patience must be at least 1")
    if args.change_settings and not args.cont:
        raise UsageError("--change-settings goes with --continue")
    ws = workspace(args, [])
    if args.groups is not None or args.group_regex is not None:
        ws.dataset(args.dataset).splits.set_groups(file=args.groups, regex=args.group_regex)
    if len(folds) == 1:
        note(f"pre-flight: scanning {args.dataset} (raw + {args.configuration}) ...")
        pf, call = _prepare(ws, args, folds[0])
        _report(pf, call, args)
        if not pf.ok:
            return ExitCode.FINDINGS
        if args.dry_run:
            return ExitCode.CLEAN
        return _train(ws, pf, call, args, folds[0])
    from .train_campaign import run_campaign

    return run_campaign(ws, args, folds)


def _prepare(ws, args, fold):
    """The gate and the training call of one fold, with this command line's settings."""
    allow = split_codes(args.allow) if args.allow else []
    return ws.train.prepare(args.configuration, fold, dataset=args.dataset, trainer=args.trainer,
                            plans=args.plans, device=args.device, npz=args.npz, cont=args.cont,
                            change_settings=args.change_settings, allow=allow, reserve=args.reserve_disk,
                            trust=tuple(args.trust_checkpoint), settings=_given(args))


def _report(pf, call, args, brief: bool = False) -> None:
    """The gate's verdict. `brief` (the later folds of several): refusals and the verdict only."""
    from rich.text import Text

    out = console()
    say = out.print
    title = f"pre-flight  {pf.dataset}  {pf.configuration}  fold {pf.fold if pf.fold >= 0 else 'all'}"
    say(Text(title, style="bold"))
    for f in pf.blocking:
        say(_item("refused", f"{f.code} {f.severity}: {_where(f)}{f.message}", "bold red"))
    for r in pf.refusals:
        code = f"{r.code}: " if r.code else ""
        say(_item("refused", f"{code}{r.what}", "bold red"))
        say(_item("", f"fix: {r.fix}", ""))
    for f in pf.allowed:
        say(_item("allowed", f"{f.code}: {_where(f)}{f.message}", "yellow"))
    if not brief:
        rest = len(pf.findings) - len(pf.blocking) - len(pf.allowed) - sum(f.code == "DG505" for f in pf.blocking)
        if rest > 0:
            say(_item("", f"({rest} other finding{'s do' if rest != 1 else ' does'} not block this run: "
                          f"dataguard scan -d {pf.dataset})", "dim"))
        for n in pf.notes:
            say(_item("ok", n, "dim"))
    if pf.resume is not None and pf.record is not None:
        from ..train.record import describe

        say(_item("resume", f"as recorded in {pf.fold_folder.name}/dataguard_train.json: "
                            f"{describe(pf.record.values()) or 'the defaults'}", "cyan"))
    if pf.fixes:
        say(Text("fix with:", style="bold"))
        for fx in pf.fixes:
            say(f"  {fx}", soft_wrap=True)
    verdict = "PASS" if pf.ok else "REFUSED"
    say(Text(f"{verdict}: ", style="bold green" if pf.ok else "bold red")
        + Text("training may start" if pf.ok else "training not started"))
    if (args.dry_run or not pf.ok) and not brief:
        say(Text("training call:", style="bold"))
        say(call.shell(width=out.width), highlight=False, markup=False, soft_wrap=True)


def _item(tag: str, text: str, style: str):
    """One gate line: a 9-column tag, the text wrapped under itself (80 columns, no padding)."""
    import textwrap

    from rich.text import Text

    width = max(40, min(console().width, 80)) - 11
    lines = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]
    body = ("\n" + " " * 11).join(lines)
    return Text(f"  {tag:<8} ", style=style) + Text(body, style="dim" if style == "dim" else "")


def _where(f) -> str:
    return f"{f.case}: " if f.case else ""


def _device(pf, call) -> str:
    argv = call.argv
    return argv[argv.index("-device") + 1] if "-device" in argv else "cuda"


def resume_line(args, folds: str | None = None) -> str:
    return f"dataguard train {args.dataset} {args.configuration} {folds or args.fold} --continue"


def _train(ws, pf, call, args, fold, title_prefix: str = "") -> int:
    tr = call.argv[call.argv.index("-tr") + 1]
    view = LiveView(f"{title_prefix}{pf.dataset}  {pf.configuration}  fold {fold}  ·  {tr}  ·  {_device(pf, call)}")
    try:
        result = ws.train.run(pf, call, pf.record.settings.patience if pf.record else args.patience, on_event=view)
    finally:
        view.close()
    outcome = result.outcome
    _summary(pf, result.run, result.artifacts, outcome, call, args, fold)
    if outcome.interrupted:
        note(f"interrupted; resume with: {resume_line(args)}")
        return INTERRUPTED
    if outcome.returncode != 0:
        note(f"nnU-Net's training process failed (exit {outcome.returncode}); the end of {outcome.console_log}:")
        note(result.console_tail())
        return TRAINING_FAILED
    return ExitCode.CLEAN


def _summary(pf, run, art, outcome, call, args, fold) -> None:
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
        out.print(f"{n_new} epochs trained here, {wall:.1f} s each with checkpointing\n"
                  f"(nnU-Net's epoch time {sum(secs) / len(secs):.1f} s); whole run {outcome.seconds:.0f} s")
    out.print(Text("model folder:", style="bold"))
    out.print(f"  {pf.fold_folder}", soft_wrap=True, highlight=False, markup=False)
    if art.plot:
        out.print(f"  {art.plot.name:<34} per-label pseudo Dice, EMA, best epoch")
    if art.best_copy:
        out.print(f"  {art.best_copy.name:<34} verified copy of checkpoint_best")
    if art.per_label:
        out.print(f"  {'checkpoint_best_<label>.pth':<34} {shown(', '.join(p.stem[16:] for p in art.per_label))}")
    for problem in art.problems:
        out.print(Text(problem, style="red"))
    if outcome.returncode == 0 and not outcome.interrupted:
        name = call.argv[call.argv.index("-tr") + 1]
        out.print(Text("predict with plain nnU-Net:", style="bold"))
        out.print(f"  nnUNetv2_predict -i IMAGES -o OUT -d {pf.dataset} -c {args.configuration} \\\n"
                  f"    -f {fold} -tr {name} -p {args.plans}", soft_wrap=True, highlight=False, markup=False)
    sys.stdout.flush()
