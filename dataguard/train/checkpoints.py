"""A verified copy of the best checkpoint; loading checkpoints safely lives in
`dataguard.engine.checkpoint_trust` (prediction needs it too), re-exported here for the trainer."""
from __future__ import annotations

from pathlib import Path

from ..engine.checkpoint_trust import (  # noqa: F401
    UnsafeCheckpoint,
    prove_plain,
    record_trusted,
    safe_load,
    trust_store,
    trusted_digests,
    vet,
    weights_only_is_sound,
)
from ..fsio import copy_verified

COPY_SUFFIX = ".copy"


def verified_copy(src: Path, dst: Path | None = None) -> tuple[Path, str]:
    """Copy `src` beside itself and prove the copy byte-identical by blake3 (fsio.copy_verified)."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_name(src.name + COPY_SUFFIX)
    return dst, copy_verified(src, dst)
