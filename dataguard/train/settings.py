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
    # image axes (z, y, x) = (0, 1, 2), as DG314 names them, never mirrored: not in augmentation,
    # not at test time (None: the base trainer's mirroring; [0, 1, 2]: none at all)
    no_mirroring: list[int] | None = None
    events: str | None = None               # JSON-lines file the live view reads
    # --until/--hours: training and the final validation end by this time (Unix seconds); the
    # epoch count (at most `epochs`) is fixed once, after `measure_epochs` epochs were timed
    deadline: float | None = None
    measure_epochs: int = 2

    def to_json(self) -> str:
        """Only what differs from the defaults, so the printed training call stays readable."""
        default = TrainSettings()
        return json.dumps({k: v for k, v in asdict(self).items() if v != getattr(default, k)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainSettings":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


AXIS_LETTERS = "zyx"


def mirror_axes_without(mirror_axes, drop, transpose_forward, patch_dims: int) -> tuple[int, ...] | None:
    """nnU-Net's `mirror_axes` with the image axes `drop` taken out.

    The image axes are those of the array nnU-Net reads (z, y, x; a NIfTI's k, j, i): what DG314
    names. Preprocessing transposes them by the plans' `transpose_forward` (preprocessed axis p
    holds image axis transpose_forward[p]), and nnU-Net's mirror axes count the patch's spatial
    axes: all three for a 3D configuration, the last two (preprocessed axes 1 and 2) for a 2D
    one, which slices along preprocessed axis 0 and so never mirrors along it. None when no
    axis is left (nnU-Net's own way to say "no mirroring")."""
    if not drop or mirror_axes is None:
        return tuple(mirror_axes) if mirror_axes is not None else None
    tf = list(transpose_forward) if transpose_forward else [0, 1, 2]
    offset = 3 - patch_dims
    gone = {tf.index(r) - offset for r in drop if r in tf}
    kept = tuple(a for a in mirror_axes if a not in gone)
    return kept or None


def trainer_name(base: str) -> str:
    """The `-tr` name of dataguard's subclass of `base`: what nnUNetv2_predict needs too."""
    return base + SUFFIX


def base_of(name: str) -> str | None:
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) and len(name) > len(SUFFIX) else None
