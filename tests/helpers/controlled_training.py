"""Real nnU-Net training (dataguard's trainer subclass, CPU) whose validation pseudo Dice
follows a given curve: the metric enters through the trainer's own hook
(`on_validation_epoch_end`), everything else - batches, optimiser, checkpoints, the
epoch loop, on_train_end - is nnU-Net's.

usage: controlled_training.py CURVE.json   (env: nnUNet_* folders, DATAGUARD_TRAIN_SETTINGS)
CURVE.json: [[dice per label], ...] one row per epoch; null is nan.
"""
import json
import sys

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed

from dataguard.train.trainer import trainer_class

curve = [[np.nan if v is None else float(v) for v in row] for row in json.load(open(sys.argv[1]))]
Base = trainer_class("nnUNetTrainer")


class Controlled(Base):
    def on_validation_epoch_end(self, val_outputs):
        row = curve[min(self.current_epoch, len(curve) - 1)]
        self.logger.log("mean_fg_dice", np.nanmean(row) if not np.all(np.isnan(row)) else np.nan, self.current_epoch)
        self.logger.log("dice_per_class_or_region", row, self.current_epoch)
        self.logger.log("val_losses", float(np.mean([o["loss"] for o in val_outputs])), self.current_epoch)


pre = join(nnUNet_preprocessed, "Dataset901_DemoCardiac")
plans = load_json(join(pre, "nnUNetPlans.json"))
plans["continue_training"] = False          # what nnUNetv2_train's get_trainer_from_args adds (2.8)
t = Controlled(plans=plans, configuration="2d", fold=1,
               dataset_json=load_json(join(pre, "dataset.json")), device=torch.device("cpu"))
t.run_training()
print(json.dumps({"current_epoch": t.current_epoch, "output_folder": t.output_folder,
                  "stop": t.dg_stop_reason}))
