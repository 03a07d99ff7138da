"""The folder dataguard puts on `nnUNet_extTrainer` (nnU-Net >= 2.8): one module whose
attributes `<Base>_dataguard` are made on demand by `dataguard.train.trainer`."""
