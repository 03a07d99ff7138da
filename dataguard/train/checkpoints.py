"""Load nnU-Net checkpoints without running code from them, and keep a verified copy.

A checkpoint is a pickle. nnU-Net itself loads them with `weights_only=False`, which runs
whatever the file says. dataguard only ever uses `weights_only=True` with the few plain
types an nnU-Net checkpoint holds (numpy scalars in its logs, a torch.device in its init
arguments) allowed by name: a file that needs anything else is refused, not executed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..checks.files import blake3_file

COPY_SUFFIX = ".copy"


class UnsafeCheckpoint(Exception):
    """The checkpoint holds objects outside the plain types an nnU-Net checkpoint needs."""


def _safe_globals() -> list:
    import numpy as np

    out = [np.dtype, type(np.dtype("float32")), type(np.dtype("float64")), type(np.dtype("int64")),
           np.float32, np.float64, np.int64]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:                                    # numpy 1
        from numpy.core.multiarray import scalar
    out.append(scalar)
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    out += [_reconstruct, np.ndarray]
    return out


def safe_load(path: str | Path, map_location=None, loader=None) -> dict:
    """`torch.load(weights_only=True)` with the numpy types nnU-Net's logs need allowed."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return (loader or torch.load)(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"{path}: refused to load (it needs more than plain tensors, numbers and "
                               f"numpy scalars): {str(e).splitlines()[0]}") from None


def verified_copy(src: Path, dst: Path | None = None) -> tuple[Path, str]:
    """Copy `src` beside itself (fsync, then rename) and prove the copy byte-identical by blake3."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_name(src.name + COPY_SUFFIX)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    want, got = blake3_file(src), blake3_file(tmp)
    if want != got:
        tmp.unlink(missing_ok=True)
        raise OSError(f"copy of {src} differs from the original (blake3 {got[:16]} != {want[:16]})")
    os.replace(tmp, dst)
    return dst, want
