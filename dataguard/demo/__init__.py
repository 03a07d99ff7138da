"""The demo project: synthetic cardiac cases, preprocessed by the real nnU-Net, with faults
injected (project), and the synthetic data itself (synthetic)."""
