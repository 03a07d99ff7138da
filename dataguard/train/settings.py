"""What `dataguard train` asks of the trainer, passed to the training process as JSON.

The training process is nnU-Net's own (`nnUNetv2_train`), so options travel in an
environment variable; they are also in the run record beside the fold (`dataguard_train.json`,
see record.py): a later `nnUNetv2_train ... --c` with the same `-tr` name keeps the same
epoch count.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

ENV = "DATAGUARD_TRAIN_SETTINGS"
FILE = "dataguard_train.json"
SUFFIX = "_dataguard"


@dataclass
class TrainSettings:
    epochs: int | None = None               # None: the base trainer's own (nnU-Net: 1000)
    iterations_per_epoch: int | None = None
    val_iterations: int | None = None
    patience: int | None = None             # early stopping on the EMA pseudo Dice
    min_delta: float = 0.0
    stop_on_collapse: bool = False
    save_best_per_label: bool = False
    val_mirroring: bool = True              # False: final validation without test-time mirroring
    events: str | None = None               # JSON-lines file the live view reads

    def to_json(self) -> str:
        """Only what differs from the defaults, so the printed training call stays readable."""
        default = TrainSettings()
        return json.dumps({k: v for k, v in asdict(self).items() if v != getattr(default, k)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainSettings":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def trainer_name(base: str) -> str:
    """The `-tr` name of dataguard's subclass of `base`: what nnUNetv2_predict needs too."""
    return base + SUFFIX


def base_of(name: str) -> str | None:
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) and len(name) > len(SUFFIX) else None
