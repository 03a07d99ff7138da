"""The steps of `dataguard train` that one fold and several folds share: the gate with this
command line's settings, its report, and the summary after a fold (80 columns)."""
from __future__ import annotations

import functools
import sys
import textwrap
import time

from .common import console, shown, split_codes
from .logs import render_runs

TRAINING_FAILED, INTERRUPTED = 4, 130


def given(args) -> dict:
    """The training settings typed on this command line (None: not given)."""
    return {"epochs": args.epochs, "iterations_per_epoch": args.iterations_per_epoch,
            "val_iterations": args.val_iterations, "patience": args.patience, "min_delta": args.min_delta,
            "stop_on_collapse": args.stop_on_collapse, "save_best_per_label": args.save_best_per_label,
            "val_mirroring": False if args.no_val_mirroring else None,
            "no_mirroring": list(args.no_mirroring) if getattr(args, "no_mirroring", None) else None,
            "deadline": getattr(args, "fold_deadline", None)}


def prepare(ws, args, fold):
    """The gate and the training call of one fold, with this command line's settings."""
    allow = split_codes(args.allow) if args.allow else []
    return ws.train.prepare(args.configuration, fold, dataset=args.dataset, trainer=args.trainer,
                            plans=args.plans, device=args.device, npz=args.npz, cont=args.cont,
                            change_settings=args.change_settings, allow=allow, reserve=args.reserve_disk,
                            trust=tuple(args.trust_checkpoint), settings=given(args))


def report(pf, call, args, brief: bool = False) -> None:
    """The gate's verdict. `brief` (the later folds of several): refusals and the verdict only."""
    from rich.text import Text

    out = console()
    say = functools.partial(out.print, soft_wrap=True)       # lines come wrapped: a long path stays whole
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
    for f in [] if brief else pf.warnings:
        say(_item("warning", f"{f.code}: {_where(f)}{f.message}", "yellow"))
        if f.help:
            say(_item("", f"fix: {f.help}", ""))
    if not brief:
        rest = (len(pf.findings) - len(pf.blocking) - len(pf.allowed) - len(pf.warnings)
                - sum(f.code == "DG505" for f in pf.blocking))
        if rest > 0:
            say(_item("", f"({rest} other finding{'s do' if rest != 1 else ' does'} not block this run: "
                          f"dataguard scan -d {pf.dataset})", "dim"))
        for n in pf.notes:
            say(_item("ok", n, "dim"))
    if pf.resume is not None and pf.record is not None:
        say(_item("resume", f"as recorded in {pf.fold_folder.name}/dataguard_train.json: "
                            f"{pf.record.flags() or 'the defaults'}", "cyan"))
    if pf.fixes:
        say(Text("fix with:", style="bold"))
        for fx in pf.fixes:
            say(f"  {fx}")
    verdict = "PASS" if pf.ok else "REFUSED"
    say(Text(f"{verdict}: ", style="bold green" if pf.ok else "bold red")
        + Text("training may start" if pf.ok else "training not started"))
    if (args.dry_run or not pf.ok) and not brief:
        say(Text("training call:", style="bold"))
        say(call.shell(width=min(out.width, 80)), highlight=False, markup=False)


def _item(tag: str, text: str, style: str):
    """One gate line: a 9-column tag, the text wrapped under itself (80 columns, no padding)."""
    from rich.text import Text

    width = max(40, min(console().width, 80)) - 11
    lines = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]
    body = ("\n" + " " * 11).join(lines)
    return Text(f"  {tag:<8} ", style=style) + Text(body, style="dim" if style == "dim" else "")


def _where(f) -> str:
    return f"{f.case}: " if f.case else ""


def device_of(call) -> str:
    argv = call.argv
    return argv[argv.index("-device") + 1] if "-device" in argv else "cuda"


def resume_line(args, folds: str | None = None) -> str:
    return f"dataguard train {args.dataset} {args.configuration} {folds or args.fold} --continue"


def summary(pf, run, art, outcome, call, args, fold) -> None:
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
    due = deadline_line(outcome)
    if due:
        out.print(due)
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


def budget_plan(deadline: float, folds: int) -> str:
    """The deadline's plan, said before the first fold starts."""
    left = deadline - time.time()
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(deadline))
    if folds == 1:
        text = (f"deadline {when} ({short_duration(left)} from now): the first 2 epochs are timed, then the number of "
                f"epochs that fit is fixed (with the final validation)")
    else:
        text = (f"deadline {when}: {folds} folds share {short_duration(left)}, about {short_duration(left / folds)} each (a fold "
                f"that ends early leaves its time to the next); each fold times its first 2 epochs, then "
                f"fixes how many fit")
    return textwrap.fill(text, 80, subsequent_indent="  ", break_on_hyphens=False)


def deadline_line(outcome) -> str | None:
    """After a fold with a deadline: met, with the time to spare, or missed by how much."""
    start = outcome.last("start") or {}
    deadline = start.get("deadline")
    if not deadline:
        return None
    ended = max((e.get("time") or 0 for e in outcome.events), default=0) or time.time()
    when = time.strftime("%H:%M:%S", time.localtime(deadline))
    if ended <= deadline:
        return f"deadline {when} met: {short_duration(deadline - ended)} to spare"
    return f"deadline {when} missed by {short_duration(ended - deadline)}"


def short_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m = int(round(seconds)) // 60
    return f"{m // 60}:{m % 60:02d} h" if m >= 60 else f"{int(round(seconds))} s" if m < 2 else f"{m} min"
