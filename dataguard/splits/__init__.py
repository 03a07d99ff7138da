"""Cross-validation splits: fold arithmetic, nnU-Net's default split, stratified rebalance."""
from .folds import *  # noqa: F401,F403
from .folds import SplitError, label_names, load_splits, rebalance, write_splits  # noqa: F401
