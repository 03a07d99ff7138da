"""Load nnU-Net checkpoints without running code from them.

A checkpoint is a pickle. nnU-Net itself loads them with `weights_only=False`, which runs
whatever the file says. dataguard only ever uses `weights_only=True` with the few plain
types an nnU-Net checkpoint holds (numpy scalars in its logs, a torch.device in its init
arguments) allowed by name: a file that needs anything else is refused, not executed.

`weights_only=True` is itself a restricted unpickler, and it has been broken twice:
CVE-2025-32434 (code execution, fixed in torch 2.6.0) and CVE-2026-24747 (memory corruption,
fixed in torch 2.10.0). On an older torch dataguard loads only checkpoints whose blake3 it
recorded when its own trainer wrote them (or that the user vouched for with
`--trust-checkpoint`), in a per-user trust store outside every dataset and results folder:
a record beside the checkpoint would travel with the attacker's file.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from ..errors import UnsafeCheckpoint  # noqa: F401 - defined in errors
from ..fsio import blake3_file

SOUND_TORCH = (2, 10)          # the first torch with both weights_only fixes
ADVISORIES = "CVE-2025-32434 (fixed in torch 2.6.0) and CVE-2026-24747 (fixed in torch 2.10.0)"


def torch_version() -> str:
    import torch

    return torch.__version__


def weights_only_is_sound(version: str | None = None) -> bool:
    """True when this torch has the fixes for both known `weights_only=True` flaws."""
    m = re.match(r"(\d+)\.(\d+)", version or torch_version())
    return m is not None and (int(m.group(1)), int(m.group(2))) >= SOUND_TORCH


# --- the trust store: blake3 of checkpoints dataguard wrote or the user vouched for -----------------
def trust_store() -> Path:
    """`$DATAGUARD_TRUST_STORE`, else `$XDG_DATA_HOME/dataguard/trusted-checkpoints.jsonl`."""
    if os.environ.get("DATAGUARD_TRUST_STORE"):
        return Path(os.environ["DATAGUARD_TRUST_STORE"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "dataguard" / "trusted-checkpoints.jsonl"


def record_trusted(path: str | Path, why: str, digest: str | None = None) -> str:
    """Append the checkpoint's blake3 to the trust store (one JSON line, O_APPEND: concurrent
    trainings never interleave a line). Returns the digest."""
    digest = digest or blake3_file(path, follow_links=True)
    store = trust_store()
    store.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"blake3": digest, "path": str(Path(path).resolve()), "why": why,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n"
    fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest


def trusted_digests() -> set[str]:
    try:
        text = trust_store().read_text("utf-8", errors="replace")
    except OSError:
        return set()
    out = set()
    for line in text.splitlines():                     # a torn last line is skipped
        try:
            out.add(json.loads(line)["blake3"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def vet(path: str | Path, trust: tuple = ()) -> str:
    """Refuse (UnsafeCheckpoint) a checkpoint that this torch cannot load safely; else its blake3.

    On a torch with both fixes every checkpoint may be tried with `weights_only=True`; on an
    older one only those in the trust store or named in `trust` (`--trust-checkpoint`)."""
    path = Path(path)
    digest = blake3_file(path, follow_links=True)
    if any(Path(t).resolve() == path.resolve() for t in trust):
        record_trusted(path, "--trust-checkpoint", digest)
        return digest
    if weights_only_is_sound() or digest in trusted_digests():
        return digest
    raise UnsafeCheckpoint(
        f"{path}: not loaded. torch {torch_version()} has known flaws in torch.load(weights_only=True) "
        f"({ADVISORIES}), and this checkpoint was not written by dataguard on this machine. Upgrade torch "
        f"(pip install -U 'torch>=2.10' torchvision), or, if you know where the file came from, pass "
        f"--trust-checkpoint {path}",
        fix=f"pip install -U 'torch>=2.10' torchvision, or --trust-checkpoint {path}")


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


def safe_load(path: str | Path, map_location=None, loader=None, trust: tuple = ()) -> dict:
    """`torch.load(weights_only=True)` with the numpy types nnU-Net's logs need allowed, after
    `vet` (an older torch loads only checkpoints dataguard recorded)."""
    import pickle

    import torch

    vet(path, trust)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return (loader or torch.load)(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"{path}: refused to load (it needs more than plain tensors, numbers and "
                               f"numpy scalars): {str(e).splitlines()[0]}") from None


def prove_plain(path: str | Path, trust: tuple = ()) -> str:
    """Before a program that loads with `weights_only=False` (nnUNetv2_predict, nnUNetv2_train
    --val) gets a checkpoint: it must load with `weights_only=True`, so nothing in it is code.
    Returns its blake3; each proof is recorded, so an unchanged file is proved once."""
    digest = vet(path, trust)
    if digest not in trusted_digests():
        safe_load(path, map_location="cpu", trust=trust)
        record_trusted(path, f"loaded with weights_only=True on torch {torch_version()}", digest)
    return digest
