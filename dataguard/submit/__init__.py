"""Predictions and submissions: reading prediction sets, predicting with nnU-Net, the
weighted ensemble, and the verified archive."""
