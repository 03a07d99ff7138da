"""dataguard's nnU-Net trainer: a subclass made for any base trainer, found by nnU-Net as is.

`trainer_class("nnUNetTrainer")` returns `nnUNetTrainer_dataguard`, a subclass that keeps
the base's exact `__init__` signature (nnU-Net records `inspect.signature(self.__init__)` to
re-create trainers from checkpoints) and adds, through nnU-Net's own hooks:
- the epoch count and iterations per epoch from `TrainSettings`;
- early stopping on the EMA pseudo Dice, and the collapse watch (DG801), which end training
  through `on_train_end`, so `checkpoint_final.pth` is written as on a normal finish;
- `checkpoint_best_<label>.pth` where that label's EMA pseudo Dice peaks;
- JSON-lines events for the live view;
- checkpoints loaded with `weights_only=True` only, and saved under the base's name, so plain
  `nnUNetv2_predict -tr <Base>_dataguard` works on any machine with nnU-Net, with or without
  dataguard.

This module imports torch and nnunetv2: it runs inside the training process only.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from os.path import join
from pathlib import Path

from .checkpoints import record_trusted, safe_load, trust_store
from .deadline import DeadlinePlanner, validation_seconds
from .logs import label_names_from
from .monitor import RunMonitor
from . import record
from .settings import AXIS_LETTERS, base_of, mirror_axes_without, trainer_name

_CLASSES: dict[str, type] = {}


class _StopTraining(Exception):
    """Raised from on_epoch_end to leave nnU-Net's epoch loop; caught in run_training."""


def find_base(name: str) -> type:
    """The trainer class nnU-Net itself would use for `-tr name` (2.6 to 2.8 lookups)."""
    try:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
        return recursive_find_trainer_class_by_name(name)
    except ImportError:                                   # nnunetv2 < 2.8
        import nnunetv2
        from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

        cls = recursive_find_python_class(join(nnunetv2.__path__[0], "training", "nnUNetTrainer"), name,
                                          "nnunetv2.training.nnUNetTrainer")
        if cls is None:
            raise RuntimeError(f"nnU-Net has no trainer class named {name!r}") from None
        return cls


def trainer_class(base_name: str) -> type:
    """The dataguard subclass of nnU-Net trainer `base_name`, made once per process."""
    if base_name in _CLASSES:
        return _CLASSES[base_name]
    base = find_base(base_name)
    name = trainer_name(base_name)

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        self._dg_setup()

    __init__.__signature__ = inspect.signature(base.__init__)     # what nnU-Net introspects
    cls = type(name, (_DataguardMixin, base), {"__init__": __init__, "__module__": __name__,
                                                "__qualname__": name, "dg_base_name": base_name})
    globals()[name] = cls                                          # picklable by name
    _CLASSES[base_name] = cls
    return cls


def __getattr__(name: str):
    base = base_of(name)
    if base is None:
        raise AttributeError(name)
    return trainer_class(base)


def _label_file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "label"


class _DataguardMixin:
    dg_base_name = "nnUNetTrainer"

    def _dg_setup(self) -> None:
        self.dg = record.settings_for_process(self.output_folder)
        if self.dg.epochs:
            self.num_epochs = int(self.dg.epochs)
        if self.dg.iterations_per_epoch:
            self.num_iterations_per_epoch = int(self.dg.iterations_per_epoch)
        if self.dg.val_iterations:
            self.num_val_iterations_per_epoch = int(self.dg.val_iterations)
        names = label_names_from(self.dataset_json) or []
        self.dg_labels = names
        self.dg_monitor = RunMonitor(names, patience=self.dg.patience, min_delta=self.dg.min_delta,
                                     stop_on_collapse=self.dg.stop_on_collapse)
        self.dg_stop_reason: str | None = None
        self.dg_deadline = DeadlinePlanner(self.dg.deadline, self.dg.measure_epochs) if self.dg.deadline else None

    # -- mirroring ------------------------------------------------------------------------
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """The base's choice, without the image axes `--no-mirroring` names (DG314): taken out
        of the augmentation's mirror axes and of `inference_allowed_mirroring_axes`, which the
        final validation uses and every checkpoint carries to nnUNetv2_predict."""
        rotation, dummy_2d, patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        drop = self.dg.no_mirroring
        if not drop:
            return rotation, dummy_2d, patch, mirror_axes
        tf = self.plans_manager.transpose_forward
        dims = len(self.configuration_manager.patch_size)
        kept = mirror_axes_without(mirror_axes, drop, tf, dims)
        self.inference_allowed_mirroring_axes = kept
        names = ", ".join(f"{a} ({AXIS_LETTERS[a]})" for a in drop)
        self.print_to_log_file(
            f"dataguard: no mirroring along image axi{'s' if len(drop) == 1 else 'es'} {names} (transpose_forward {list(tf)}, {dims}D patches): "
            f"mirror_axes {tuple(mirror_axes) if mirror_axes is not None else None} -> {kept}, "
            f"in augmentation and at test time (inference_allowed_mirroring_axes)")
        return rotation, dummy_2d, patch, kept

    # -- events for the live view -------------------------------------------------------
    def dg_emit(self, event: str, **data) -> None:
        if not self.dg.events or self.local_rank != 0:
            return
        data["event"], data["time"] = event, time.time()
        with open(self.dg.events, "a", encoding="utf-8") as f:
            f.write(json.dumps(data, default=_jsonable) + "\n")

    def dg_history(self) -> dict:
        log = self.logger.get_checkpoint()
        dice = [[float(v) for v in row] for row in log.get("dice_per_class_or_region", [])]
        starts, ends = log.get("epoch_start_timestamps", []), log.get("epoch_end_timestamps", [])
        secs = [float(e - s) for s, e in zip(starts, ends)]
        return {"dice": dice, "ema": [float(v) for v in log.get("ema_fg_dice", [])], "epoch_seconds": secs}

    # -- nnU-Net hooks ----------------------------------------------------------------------
    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:
            self._dg_record()
        hist = self.dg_history()
        self.dg_monitor.prime(hist["dice"])
        self.dg_loop_epochs = self.num_epochs          # nnU-Net's epoch loop runs to this; a deadline may end it sooner
        self.dg_emit("start", num_epochs=self.num_epochs, deadline=self.dg.deadline, start_epoch=self.current_epoch, labels=self.dg_labels,
                     output_folder=self.output_folder, trainer=type(self).__name__,
                     iterations=self.num_iterations_per_epoch, val_iterations=self.num_val_iterations_per_epoch,
                     history=hist)

    def _dg_record(self) -> None:
        """`dataguard train` wrote the run record before this process started, and a resume
        never replaces it; a plain `nnUNetv2_train -tr ..._dataguard` run gets one here."""
        folder = Path(self.output_folder)
        if os.path.lexists(record.path(folder)):
            return
        pm = self.plans_manager
        record.write(folder, record.new(pm.dataset_name, self.configuration_name, str(self.fold),
                                        trainer=self.dg_base_name, plans=pm.plans_name, device=self.device.type,
                                        npz=False, settings=self.dg))

    def on_epoch_start(self):
        if self.dg_deadline is not None:
            self.dg_deadline.epoch_started(time.time())
        super().on_epoch_start()

    def on_epoch_end(self):
        dice = self.dg_history()["dice"]
        verdict = self.dg_monitor.judge(dice) if dice else None
        if verdict is not None and self.dg.save_best_per_label:
            for j in verdict.new_label_bests:           # same epoch number as checkpoint_best.pth
                self.save_checkpoint(join(self.output_folder,
                                          f"checkpoint_best_{_label_file_part(self.dg_labels[j])}.pth"))
        super().on_epoch_end()
        if verdict is None:
            return
        hist = self.dg_history()
        for j, best_e, best, at in verdict.new_collapses:
            self.print_to_log_file(f"dataguard DG801: label '{self.dg_labels[j]}' collapsed: pseudo Dice peaked "
                                   f"at {best:.4f} in epoch {best_e}, near 0 since (confirmed at epoch {at})",
                                   also_print_to_console=False)
        self.dg_emit("epoch", epoch=verdict.epoch, num_epochs=self.num_epochs, dice=verdict.dice,
                     ema=verdict.ema, best_epoch=verdict.best_epoch, best_ema=verdict.best_ema,
                     epoch_seconds=hist["epoch_seconds"][-1] if hist["epoch_seconds"] else None,
                     label_bests=[self.dg_labels[j] for j in verdict.new_label_bests],
                     collapses=[{"label": self.dg_labels[j], "best_epoch": b, "best": v, "at": a}
                                for j, b, v, a in verdict.new_collapses],
                     stop=verdict.stop)
        stop = verdict.stop or self._dg_deadline_step()
        if stop and self.current_epoch < self.num_epochs:
            self.dg_stop_reason = stop
            self.print_to_log_file(f"dataguard: {stop}; ending training after epoch {verdict.epoch}",
                                   also_print_to_console=False)
            raise _StopTraining(stop)
        if self.current_epoch >= self.num_epochs and self.current_epoch < getattr(self, "dg_loop_epochs", 0):
            raise _StopTraining(None)              # the epochs fixed for the deadline are done: a normal end

    def _dg_deadline_step(self) -> str | None:
        """--until/--hours: after the measured epochs, fix the epoch count once (and nnU-Net's
        polynomial learning rate with it); after every epoch, stop when the next one and the
        final validation would end after the deadline. The reason for stopping, or None."""
        planner = self.dg_deadline
        if planner is None:
            return None
        now = time.time()
        planner.epoch_ended(now)
        if planner.fixed is None and planner.ready:
            plan = planner.fix(now, self.current_epoch, self.num_epochs, self._dg_validation_seconds())
            self.num_epochs = plan.epochs
            scheduler = getattr(self, "lr_scheduler", None)
            if scheduler is not None and hasattr(scheduler, "max_steps"):
                scheduler.max_steps = plan.epochs             # PolyLRScheduler: lr follows the new total
            self.print_to_log_file(f"dataguard: {plan.reason}", also_print_to_console=False)
            self.dg_emit("plan", epochs=plan.epochs, epoch_seconds=plan.epoch_seconds,
                         validation_seconds=plan.validation_seconds, deadline=planner.deadline,
                         reason=plan.reason, cut=plan.cut)
        return planner.must_stop(now, self.current_epoch, self.num_epochs)

    def _dg_validation_seconds(self) -> float:
        """The final validation's time, estimated from this run's own validation batches: each
        validation case is predicted patch by patch (sliding window, half-patch steps, mirrored
        unless --no-val-mirroring), one forward pass a patch, at the per-patch cost of the
        epoch's pseudo-Dice batches; export and start-up add a stated margin (see deadline.py)."""
        try:
            val_keys = self.do_split()[1]
            ds = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
            shapes = [tuple(ds.load_case(k)[0].shape[1:]) for k in val_keys]
        except Exception:                          # noqa: BLE001 - an estimate: fall back to one patch a case
            shapes = []
        axes = self.inference_allowed_mirroring_axes if self.dg.val_mirroring else None
        per_patch = self.dg_deadline.forward_seconds / max(1, self.batch_size)
        return validation_seconds(shapes, tuple(self.configuration_manager.patch_size), per_patch,
                                  len(axes) if axes else 0)

    def validation_step(self, batch: dict) -> dict:
        t0 = time.perf_counter()
        out = super().validation_step(batch)
        if self.dg_deadline is not None:
            self.dg_deadline.forward_timed(time.perf_counter() - t0)
        return out

    def run_training(self):
        try:
            super().run_training()
        except _StopTraining:
            self.on_train_end()            # checkpoint_final.pth, data loaders shut down, "Training done."
        self.dg_emit("trained", stop=self.dg_stop_reason, epochs=self.current_epoch)

    def perform_actual_validation(self, save_probabilities: bool = False):
        try:
            cases = len(self.do_split()[1])
        except Exception:                          # noqa: BLE001 - the count is for the view only
            cases = None
        from nnunetv2.configuration import default_num_processes

        self.dg_emit("validation", npz=bool(save_probabilities), mirroring=self.dg.val_mirroring, cases=cases,
                     workers=default_num_processes)
        axes = self.inference_allowed_mirroring_axes
        if not self.dg.val_mirroring:
            self.inference_allowed_mirroring_axes = None   # this validation only; checkpoints keep them
        self.dg_val_seen = 0
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes
            self.dg_val_seen = None
        self.dg_emit("done")

    def print_to_log_file(self, *args, also_print_to_console=True, add_timestamp=True):
        """nnU-Net's log line; its validation loop's "predicting CASE" also becomes a live-view
        event, so the minutes of final validation are visible case by case."""
        super().print_to_log_file(*args, also_print_to_console=also_print_to_console, add_timestamp=add_timestamp)
        seen = getattr(self, "dg_val_seen", None)
        if seen is None or not args or not isinstance(args[0], str):
            return
        if args[0].startswith("predicting "):
            self.dg_val_seen = seen + 1
            self.dg_emit("val_case", case=args[0][len("predicting "):], index=seen + 1)
        elif args[0] == "Validation complete":
            self.dg_emit("val_metrics")

    def load_checkpoint(self, filename_or_checkpoint):
        if isinstance(filename_or_checkpoint, Path):
            filename_or_checkpoint = str(filename_or_checkpoint)
        with _weights_only_loads():
            super().load_checkpoint(filename_or_checkpoint)

    def save_checkpoint(self, filename: str) -> None:
        with _named(type(self), self.dg_base_name):
            super().save_checkpoint(filename)
        if os.path.isfile(filename):               # rank 0 wrote it: an older torch may load it later
            try:
                record_trusted(filename, "written by dataguard train")
            except OSError as e:
                self.print_to_log_file(f"dataguard: could not record {filename} in the checkpoint trust store "
                                       f"({trust_store()}): {e}")


@contextmanager
def _named(cls: type, name: str):
    """nnU-Net records `self.__class__.__name__` as the checkpoint's trainer; record the base
    (same network), so prediction needs no dataguard and no nnUNet_extTrainer."""
    old = cls.__name__
    cls.__name__ = name
    try:
        yield
    finally:
        cls.__name__ = old


@contextmanager
def _weights_only_loads():
    """nnU-Net's load_checkpoint takes a dict in its signature but only handles a path
    (2.6-2.8), which it loads with weights_only=False; while it runs, torch.load goes
    through `safe_load` (weights_only=True, nnU-Net's plain types allowed by name)."""
    import torch

    original = torch.load

    def load(f, map_location=None, **_ignored):
        return safe_load(f, map_location=map_location, loader=original)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def _jsonable(o):
    try:
        v = float(o)
        return None if math.isnan(v) else v
    except (TypeError, ValueError):
        return str(o)


if __name__ == "__main__":                                   # pragma: no cover
    print(trainer_class(sys.argv[1] if len(sys.argv) > 1 else "nnUNetTrainer"))
