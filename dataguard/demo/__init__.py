"""The demo project: synthetic cardiac cases, preprocessed by the real nnU-Net, with faults injected."""
from .project import *  # noqa: F401,F403
from .project import build_clean, run_demo  # noqa: F401
