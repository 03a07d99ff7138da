"""`nnUNetv2_train`, with dataguard's trainer registered in this process (nnU-Net < 2.8).

nnU-Net before 2.8 only looks for trainers inside its own package. Instead of copying a
file there, this entry point wraps the lookup function that `nnunetv2.run.run_training`
calls, so `-tr <Base>_dataguard` resolves here, then hands the untouched command line to
nnU-Net's own `run_training_entry`. Usage is exactly `nnUNetv2_train`'s:

    python -m dataguard.train.runner 1 2d 0 -tr nnUNetTrainer_dataguard -device cpu
"""
from __future__ import annotations

import sys

from .settings import base_of
from .trainer import trainer_class


def _wrap(lookup):
    def find(*args, **kwargs):
        name = args[1] if len(args) > 1 else kwargs.get("class_name", kwargs.get("trainer_name"))
        if len(args) == 1:                               # 2.8: recursive_find_trainer_class_by_name(name)
            name = args[0]
        base = base_of(name) if isinstance(name, str) else None
        if base is not None:
            return trainer_class(base)
        return lookup(*args, **kwargs)
    return find


def main(argv: list[str] | None = None) -> None:
    import nnunetv2.run.run_training as rt

    for attr in ("recursive_find_python_class", "recursive_find_trainer_class_by_name"):
        if hasattr(rt, attr):
            setattr(rt, attr, _wrap(getattr(rt, attr)))
    sys.argv = ["nnUNetv2_train", *(sys.argv[1:] if argv is None else argv)]
    rt.run_training_entry()


if __name__ == "__main__":
    main()
