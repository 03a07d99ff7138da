"""The run record: every setting a fold's training was started with, kept beside the fold.

`dataguard train` writes it (atomically) before nnU-Net starts, and a resume never replaces
it: `train ... --continue` reads it back and runs with the same device, epochs, iterations,
trainer, plans and validation options. A setting changed on resume is refused unless asked
(`--change-settings`), and then the change is added to the record's `resumes` list, so the
record stays the truth about the run.

The file is nnU-Net's fold folder's `dataguard_train.json`, flat, so that the trainer (and a
plain `nnUNetv2_train ... --c` with dataguard's `-tr` name) reads the training settings from
the same keys it always did. A results folder may come from another machine: the file is
read bounded, never through a link, and every field is type-checked.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import RecordError
from ..fsio import atomic_write_text, read_json
from ..version import __version__
from .settings import ENV, FILE, TrainSettings

RECORD_LIMIT = 1 << 20               # a record is a few hundred bytes; its resumes list stays small
FORMAT = 1
MAX_RESUMES = 200
RUN_KEYS = ("device", "trainer", "plans", "npz")       # what the run is, beside the training settings
# the deadline is when this process must end, not what the run is: given again on each resume
SCHEDULE_KEYS = ("events", "deadline", "measure_epochs")
SETTING_KEYS = tuple(f.name for f in fields(TrainSettings) if f.name not in SCHEDULE_KEYS)
_TYPES = {"device": str, "trainer": str, "plans": str, "npz": bool, "dataset": str, "configuration": str,
          "fold": str, "epochs": int, "iterations_per_epoch": int, "val_iterations": int, "patience": int,
          "min_delta": float, "stop_on_collapse": bool, "save_best_per_label": bool, "val_mirroring": bool,
          "no_mirroring": list}


@dataclass(frozen=True)
class RunRecord:
    """What a fold's run was started with. `fold` is "0".."n" or "all"; `trainer` the base."""
    dataset: str = ""
    configuration: str = ""
    fold: str = ""
    trainer: str = "nnUNetTrainer"
    plans: str = "nnUNetPlans"
    device: str = "cuda"
    npz: bool = False
    settings: TrainSettings = field(default_factory=TrainSettings)
    started: float = 0.0
    version: str = ""
    resumes: tuple = ()
    legacy: bool = False             # a file from before the record (settings only)

    def values(self) -> dict:
        """The comparable settings: the run's own keys and the training settings."""
        out = {k: getattr(self, k) for k in RUN_KEYS}
        out.update({k: getattr(self.settings, k) for k in SETTING_KEYS})
        return out

    def flags(self) -> str:
        """The settings as `dataguard train` flags (what a resume reuses)."""
        return describe(self.values())

    def to_json(self) -> str:
        import json

        doc = {"record": FORMAT, "dataset": self.dataset, "configuration": self.configuration,
               "fold": self.fold, **self.values(), "started": self.started,
               "dataguard": self.version or __version__, "resumes": list(self.resumes)}
        return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def path(fold_folder: Path) -> Path:
    return Path(fold_folder) / FILE


def load(fold_folder: Path) -> RunRecord | None:
    """The fold's record; None when there is none. RecordError when there is a file that is
    not a record dataguard can trust (it is never followed through a link)."""
    p = path(fold_folder)
    try:
        raw = read_json(p, RECORD_LIMIT)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RecordError(f"{p}: not a readable run record ({e})") from None
    if not isinstance(raw, dict):
        raise RecordError(f"{p}: not a run record (a JSON {type(raw).__name__})")
    clean = {}
    for k, want in _TYPES.items():
        if k not in raw or raw[k] is None:
            continue
        v = raw[k]
        ok = isinstance(v, want) and not (want is int and isinstance(v, bool)) or (
            want is float and isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            raise RecordError(f"{p}: {k} is {v!r}, not a {want.__name__}")
        if want is list and not (0 < len(v) <= 3 and all(type(x) is int and 0 <= x <= 2 for x in v)):
            raise RecordError(f"{p}: {k} is {v!r}, not a list of image axes 0-2")
        clean[k] = float(v) if want is float else sorted(set(v)) if want is list else v
    settings = TrainSettings(**{k: clean[k] for k in SETTING_KEYS if k in clean})
    resumes = raw.get("resumes")
    resumes = tuple(r for r in resumes[-MAX_RESUMES:] if isinstance(r, dict)) if isinstance(resumes, list) else ()
    started = raw.get("started")
    return RunRecord(dataset=clean.get("dataset", ""), configuration=clean.get("configuration", ""),
                     fold=clean.get("fold", ""), **{k: clean[k] for k in RUN_KEYS if k in clean},
                     settings=settings, resumes=resumes, legacy=raw.get("record") != FORMAT,
                     started=float(started) if isinstance(started, (int, float)) and not isinstance(started, bool)
                     else 0.0, version=raw.get("dataguard") if isinstance(raw.get("dataguard"), str) else "")


def settings_for_process(fold_folder: str | Path | None) -> TrainSettings:
    """The training process's settings: the environment's (`dataguard train` passes them), else
    the fold's run record's (a plain `nnUNetv2_train ... --c`), else none. A run record that
    is not one is ignored here: the gate has refused it already when dataguard started the run."""
    if os.environ.get(ENV):
        return TrainSettings.from_json(os.environ[ENV])
    if fold_folder is not None:
        try:
            rec = load(Path(fold_folder))
        except RecordError:
            rec = None
        if rec is not None:
            return rec.settings                  # events: None, a plain nnU-Net run has no live view
    return TrainSettings()


def write(fold_folder: Path, record: RunRecord) -> None:
    """Atomic: a reader sees the old record or the new one, never half of one."""
    Path(fold_folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path(fold_folder), record.to_json())


def new(dataset: str, configuration: str, fold: str, *, trainer: str, plans: str, device: str, npz: bool,
        settings: TrainSettings) -> RunRecord:
    return RunRecord(dataset=dataset, configuration=configuration, fold=str(fold), trainer=trainer, plans=plans,
                     device=device, npz=npz, settings=replace(settings, events=None), started=time.time(),
                     version=__version__)


@dataclass(frozen=True)
class Resume:
    """How a resume relates to its record: the values it reuses and the ones asked to change."""
    record: RunRecord
    values: dict                     # what the resumed run uses
    reused: dict                     # taken from the record (not given on the command line)
    changed: dict                    # name -> (recorded, asked)


def resume(record: RunRecord, given: dict) -> Resume:
    """Merge the command line's explicitly given settings (`given`: name -> value, only those
    the user typed) with the record."""
    recorded = record.values()
    if record.legacy:                              # settings only: the run's own keys were never written
        recorded = {k: v for k, v in recorded.items() if k not in RUN_KEYS}
    values, reused, changed = dict(recorded), {}, {}
    for k, v in recorded.items():
        if k in given and given[k] != v:
            changed[k] = (v, given[k])
            values[k] = given[k]
        elif k not in given:
            reused[k] = v
    return Resume(record, values, reused, changed)


def with_resume(record: RunRecord, changed: dict) -> RunRecord:
    """The record after a resume: its settings updated only by an asked-for change, and one more
    entry in `resumes` (when, and what changed from what)."""
    entry = {"time": time.time(), "dataguard": __version__}
    if changed:
        entry["changed"] = {k: [old, new] for k, (old, new) in changed.items()}
    run = {k: new for k, (_, new) in changed.items() if k in RUN_KEYS}
    settings = replace(record.settings, **{k: new for k, (_, new) in changed.items() if k in SETTING_KEYS})
    return replace(record, **run, settings=settings, resumes=(*record.resumes, entry)[-MAX_RESUMES:])


def describe(values: dict) -> str:
    """Settings in words, as flags: "--device cpu --epochs 30 --iterations-per-epoch 5"."""
    parts = []
    for k in ("device", "epochs", "iterations_per_epoch", "val_iterations", "patience"):
        if values.get(k) is not None:
            parts.append(f"--{k.replace('_', '-')} {values[k]}")
    if values.get("min_delta"):
        parts.append(f"--min-delta {values['min_delta']}")
    for k, flag in (("npz", "--npz"), ("stop_on_collapse", "--stop-on-collapse"),
                    ("save_best_per_label", "--save-best-per-label")):
        if values.get(k):
            parts.append(flag)
    if values.get("val_mirroring") is False:
        parts.append("--no-val-mirroring")
    if values.get("no_mirroring"):
        axes = values["no_mirroring"]
        parts.append("--no-mirroring" + ("" if sorted(axes) == [0, 1, 2] else " " + ",".join(map(str, axes))))
    if values.get("trainer") not in (None, "nnUNetTrainer"):
        parts.append(f"--trainer {values['trainer']}")
    if values.get("plans") not in (None, "nnUNetPlans"):
        parts.append(f"--plans {values['plans']}")
    return " ".join(parts)


def as_dict(settings: TrainSettings) -> dict:
    return {k: v for k, v in asdict(settings).items() if k in SETTING_KEYS}
