"""A trainer whose data loader waits, as one reading from a slow network share would: every
training sample costs SLOW_SECONDS more, without using the CPU. The throughput test finds it
through nnUNet_extTrainer (nnU-Net >= 2.8) to starve the network for real."""
import time

from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

SLOW_SECONDS = 0.1


class _Wait(BasicTransform):
    def apply(self, data_dict, **params):
        time.sleep(SLOW_SECONDS)
        return data_dict


class nnUNetTrainerSlowLoader(nnUNetTrainer):
    @staticmethod
    def get_training_transforms(*args, **kwargs):
        return ComposeTransforms([nnUNetTrainer.get_training_transforms(*args, **kwargs), _Wait()])
