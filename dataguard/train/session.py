"""One training of one fold, from the gate to the summary: what `dataguard train` does, as two
steps any face can call (the CLI draws a live view between them, a script may not).

`prepare` runs the gate and builds nnU-Net's command line; `train` runs it to its end and
judges the run like `dataguard logs` does (collapses, wasted epochs, per-label bests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .launch import Outcome, TrainCall, console_tail, run_training, training_call
from .logs import DEFAULT_PATIENCE, Run
from .preflight import Preflight, parse_size, run_preflight
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
            plans: str = "nnUNetPlans", device: str = "cuda", npz: bool = False, cont: bool = False,
            allow: list[str] = (), reserve: str | int = "1G", trust: tuple = (), settings: dict | None = None,
            on_progress=None) -> tuple[Preflight, TrainCall]:
    """The gate's verdict (Preflight) and nnU-Net's training call with dataguard's trainer.
    `trainer` is the base trainer (dataguard's subclass of it is what runs); `fold` is an
    integer or "all"; `settings` are TrainSettings fields (epochs, patience, ...)."""
    ts = TrainSettings(**(settings or {}))
    name = trainer_name(trainer)
    pf = run_preflight(dataset, configuration, -1 if fold == "all" else int(fold), trainer=name, plans_name=plans,
                       device=device, cont=cont, allow=list(allow), save_best_per_label=ts.save_best_per_label,
                       reserve_bytes=reserve if isinstance(reserve, int) else parse_size(reserve),
                       trust=tuple(trust), scan=scan, on_progress=on_progress)
    call = training_call(pf.dataset, configuration, str(fold), trainer=name, plans=plans, device=device, npz=npz,
                         cont=cont, settings=ts)
    return pf, call


def train(pf: Preflight, call: TrainCall, patience: int | None = None,
          on_event: Callable[[dict], None] | None = None) -> TrainResult:
    """Run nnU-Net's training to its end (Ctrl-C stops it cleanly), then judge and summarise."""
    outcome = run_training(call, pf.fold_folder, on_event=on_event)
    run = run_from_events(outcome.events, pf.fold_folder, pf.dataset)
    art = finish(run, pf.fold_folder, patience or DEFAULT_PATIENCE)
    return TrainResult(outcome, run, art)
