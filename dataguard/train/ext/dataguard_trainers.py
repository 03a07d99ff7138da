"""Imported by nnU-Net's trainer search (`nnUNet_extTrainer`): `<Base>_dataguard` on demand."""
from dataguard.train import trainer as _trainer


def __getattr__(name: str):
    return getattr(_trainer, name)
