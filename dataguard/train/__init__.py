"""`dataguard train`: a pre-flight gate in front of nnU-Net training, and a trainer
subclass that adds real epoch control, early stopping, a collapse watch and per-label
best checkpoints without touching the nnunetv2 installation.

Light modules (settings, monitor, preflight, launch) import no torch; `trainer` and
`runner` do, and run only inside the training process.
"""
