"""One training of one fold, from the gate to the summary: what `dataguard train` does, as two
steps any face can call (the CLI draws a live view between them, a script may not).

`prepare` runs the gate and builds nnU-Net's command line; `train` runs it to its end and
judges the run like `dataguard logs` does (collapses, wasted epochs, per-label bests).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .launch import Outcome, TrainCall, console_tail, run_training, training_call
from .logs import DEFAULT_PATIENCE, Run
from . import record
from .preflight import Preflight, Refusal, locate, parse_size, run_preflight
from .settings import TrainSettings, trainer_name
from .summary import Artifacts, finish, run_from_events


@dataclass
class TrainResult:
    outcome: Outcome
    run: Run | None
    artifacts: Artifacts

    def console_tail(self, lines: int = 25) -> str:
        """The end of nnU-Net's console output (why a failed run failed)."""
        return console_tail(self.outcome.console_log, lines)


def prepare(dataset: str, configuration: str, fold: int | str, *, scan: Callable, trainer: str = "nnUNetTrainer",
            plans: str = "nnUNetPlans", device: str | None = None, npz: bool | None = None, cont: bool = False,
            change_settings: bool = False, allow: list[str] = (), reserve: str | int = "1G", trust: tuple = (),
            settings: dict | None = None, on_progress=None) -> tuple[Preflight, TrainCall]:
    """The gate's verdict (Preflight) and nnU-Net's training call with dataguard's trainer.

    `trainer` is the base trainer (dataguard's subclass of it is what runs); `fold` is an
    integer or "all"; `settings` holds the TrainSettings fields (epochs, patience, ...) given
    on purpose, with `device` and `npz`: with `cont`, everything not given comes from the
    fold's run record (or, for a fold not started yet, a sibling fold's), and a given value
    that differs from the record refuses unless `change_settings`. `pf.resume` says what was
    reused; `pf.record` is what `train` writes beside the fold before nnU-Net starts."""
    name = trainer_name(trainer)
    given = {k: v for k, v in (settings or {}).items() if v is not None and k not in record.SCHEDULE_KEYS}
    deadline = (settings or {}).get("deadline")
    given.update({k: v for k, v in (("device", device), ("npz", npz)) if v is not None})
    folder = locate(dataset, configuration, fold, name, plans) if cont else None
    template, problem, sibling = _record_for(folder)
    res = record.resume(template, given) if template is not None else None
    values = {**DEFAULTS, **(res.values if res else {}), **given}
    if res is not None and change_settings:
        values.update({k: new for k, (_, new) in res.changed.items()})
    ts = TrainSettings(**{k: values[k] for k in record.SETTING_KEYS}, deadline=deadline)
    pf = run_preflight(dataset, configuration, -1 if fold == "all" else int(fold), trainer=name, plans_name=plans,
                       device=values["device"], cont=cont, allow=list(allow),
                       save_best_per_label=ts.save_best_per_label,
                       reserve_bytes=reserve if isinstance(reserve, int) else parse_size(reserve),
                       trust=tuple(trust), scan=scan, on_progress=on_progress,
                       deadline={"deadline": deadline, "epochs": ts.epochs, "iterations": ts.iterations_per_epoch,
                                 "val_iterations": ts.val_iterations} if deadline else None)
    if problem:
        pf.refusals.append(Refusal(problem, "move that file away to resume with the settings given here"))
    pf.resume = res
    if res is not None and res.changed and not change_settings:
        what = ", ".join(f"{_flag(k)} {old} -> {new}" for k, (old, new) in res.changed.items())
        pf.refusals.append(Refusal(f"--continue would change the run's recorded settings: {what}",
                                   "leave them out to resume as recorded, or add --change-settings"))
    if template is not None and not sibling and not template.legacy:
        pf.record = record.with_resume(template, res.changed if change_settings else {})
    else:
        pf.record = record.new(pf.dataset, configuration, str(fold), trainer=trainer, plans=plans,
                               device=values["device"], npz=values["npz"], settings=ts)
    if sibling:
        pf.notes.append(f"settings from the run record of {sibling} (this fold has none yet)")
    call = training_call(pf.dataset, configuration, str(fold), trainer=name, plans=plans, device=values["device"],
                         npz=values["npz"], cont=cont, settings=ts)
    return pf, call


DEFAULTS = {"device": "cuda", "npz": False, **record.as_dict(TrainSettings())}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _record_for(folder: Path | None) -> tuple[record.RunRecord | None, str | None, str | None]:
    """(record, problem, sibling): the fold's run record; for a fold with none, the record of
    another fold of the same model (a campaign's next fold) and that fold's name."""
    if folder is None:
        return None, None, None
    try:
        rec = record.load(folder)
    except record.RecordError as e:
        return None, str(e), None
    if rec is not None:
        return rec, None, None
    try:
        others = sorted(p for p in folder.parent.iterdir() if p.name.startswith("fold_") and p != folder
                        and not p.is_symlink())
    except OSError:
        return None, None, None
    for other in others:
        try:
            rec = record.load(other)
        except record.RecordError:
            continue
        if rec is not None and not rec.legacy:
            return rec, None, other.name
    return None, None, None


def train(pf: Preflight, call: TrainCall, patience: int | None = None,
          on_event: Callable[[dict], None] | None = None) -> TrainResult:
    """Run nnU-Net's training to its end (Ctrl-C stops it cleanly), then judge and summarise."""
    if pf.record is not None:
        record.write(pf.fold_folder, pf.record)      # before nnU-Net starts: the truth even if it dies
    outcome = run_training(call, pf.fold_folder, on_event=on_event)
    run = run_from_events(outcome.events, pf.fold_folder, pf.dataset)
    art = finish(run, pf.fold_folder, patience or DEFAULT_PATIENCE)
    return TrainResult(outcome, run, art)
