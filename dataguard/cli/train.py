"""`dataguard train`: the pre-flight gate, then nnU-Net training with real epoch control."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from .common import ExitCode, UsageError, add_engine_args, add_group_args, note, workspace
from .live_view import LiveView
from .train_campaign import run_campaign
from .train_steps import INTERRUPTED, TRAINING_FAILED, budget_plan, device_of, prepare, report, resume_line, summary

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
  dataguard train 1 3d_lowres 0-4 --until "2026-12-24 09:00" --npz
      the five folds share the time to the deadline; each times its first
      epochs, then fixes how many fit (and nnU-Net's learning rate with it)
  dataguard train 1 2d 0 --hours 20 --patience 30

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
    when = g.add_mutually_exclusive_group()
    when.add_argument("--until", metavar="TIME", type=_until,
                      help="end training and the final validation by then (\"2026-12-24 09:00\", or \"09:00\": "
                           "the next one); the epochs (at most --epochs) are fixed after timing the first 2")
    when.add_argument("--hours", type=float, metavar="H", help="the same, H hours from now")
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
    g.add_argument("--no-mirroring", nargs="?", const=(0, 1, 2), type=_mirror_axes, metavar="AXES",
                   help="never mirror along these image axes (0,1,2 = z,y,x, as DG314 names them; default: "
                        "all), in augmentation and at test time; the checkpoints keep it for nnUNetv2_predict")
    g = p.add_argument_group("gate")
    g.add_argument("--allow", action="append", default=[], metavar="CODE",
                   help="let findings with this code (or prefix) through the gate; repeatable, comma-separated")
    g.add_argument("--dry-run", action="store_true", help="print the gate's report and the exact training call")
    g.add_argument("--reserve-disk", default="1G", metavar="SIZE",
                   help="disk to keep free beyond the checkpoints (default 1G)")
    add_engine_args(g)                           # the gate's scan: --manifest-dir, -j, --executor
    add_group_args(g)
    p.set_defaults(func=cmd_train)


def _mirror_axes(text: str) -> tuple[int, ...]:
    """--no-mirroring AXES: "2", "0,2", "x", "z,x" or "all" -> sorted image axes (z, y, x) =
    (0, 1, 2), the numbers DG314 gives; a usage error otherwise."""
    text = text.strip().lower()
    if text == "all":
        return (0, 1, 2)
    out = set()
    for part in text.split(","):
        part = part.strip()
        if part in ("z", "y", "x", "0", "1", "2"):
            out.add(int(part) if part.isdigit() else "zyx".index(part))
        else:
            raise argparse.ArgumentTypeError(f"not an axis: {part!r} (0,1,2 = z,y,x as DG314 names them, or all)")
    return tuple(sorted(out))


def _until(text: str) -> float:
    """--until: an ISO date and time ("2026-12-24 09:00", local time) or a clock time ("09:00",
    the next one), as Unix seconds."""
    import datetime as dt

    text = text.strip()
    try:
        if len(text) <= 5 and ":" in text:
            h, m = (int(x) for x in text.split(":"))
            now = dt.datetime.now()
            t = now.replace(hour=h, minute=m, second=0, microsecond=0)
            return (t if t > now else t + dt.timedelta(days=1)).timestamp()
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (e.g. \"2026-12-24 09:00\" or \"09:00\")") from None


def deadline_of(args) -> float | None:
    """--until or --hours as Unix seconds; a usage error when it has passed."""
    import time

    if args.hours is not None:
        if args.hours <= 0:
            raise UsageError("--hours must be more than 0")
        return time.time() + args.hours * 3600
    if args.until is not None and args.until <= time.time():
        raise UsageError("--until is in the past")
    return args.until


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


def cmd_train(args) -> int:
    folds = parse_folds(args.fold)
    for opt in ("epochs", "iterations_per_epoch", "val_iterations"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise UsageError(f"--{opt.replace('_', '-')} must be at least 1")
    if args.patience is not None and args.patience < 1:
        raise UsageError("--patience must be at least 1")
    if args.change_settings and not args.cont:
        raise UsageError("--change-settings goes with --continue")
    args.deadline = deadline_of(args)
    args.fold_deadline = args.deadline
    ws = workspace(args, [])
    if args.groups is not None or args.group_regex is not None:
        ws.dataset(args.dataset).splits.set_groups(file=args.groups, regex=args.group_regex)
    if len(folds) == 1:
        note(f"pre-flight: scanning {args.dataset} (raw + {args.configuration}) ...")
        pf, call = prepare(ws, args, folds[0])
        report(pf, call, args)
        if not pf.ok:
            return ExitCode.FINDINGS
        if args.deadline:
            note(budget_plan(args.deadline, 1))
        if args.dry_run:
            return ExitCode.CLEAN
        return _train(ws, pf, call, args, folds[0])
    return run_campaign(ws, args, folds)


def _train(ws, pf, call, args, fold, title_prefix: str = "") -> int:
    tr = call.argv[call.argv.index("-tr") + 1]
    view = LiveView(f"{title_prefix}{pf.dataset}  {pf.configuration}  fold {fold}  ·  {tr}  ·  {device_of(call)}")
    try:
        result = ws.train.run(pf, call, pf.record.settings.patience if pf.record else args.patience, on_event=view)
    finally:
        view.close()
    outcome = result.outcome
    summary(pf, result.run, result.artifacts, outcome, call, args, fold)
    if outcome.interrupted:
        note(f"interrupted; resume with:\n  {resume_line(args)}")
        return INTERRUPTED
    if outcome.returncode != 0:
        note(f"nnU-Net's training process failed (exit {outcome.returncode}); the end of {outcome.console_log}:")
        note(result.console_tail())
        return TRAINING_FAILED
    return ExitCode.CLEAN


