"""A verified copy of the best checkpoint; loading checkpoints safely lives in
`dataguard.checkpoint_trust` (prediction needs it too), re-exported here for the trainer."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..checkpoint_trust import (UnsafeCheckpoint, prove_plain, record_trusted, safe_load,  # noqa: F401
                                trust_store, trusted_digests, vet, weights_only_is_sound)
from ..checks.files import blake3_file

COPY_SUFFIX = ".copy"


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
