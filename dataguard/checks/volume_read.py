"""A NIfTI volume on a strided grid, streamed: the checks that read voxels again (the label
audit) inflate with ISA-L (the scan's own `_gunzip_stream`, CRC checked) and keep one z slice
at a time, so memory is bounded by the grid kept, not the file.

NIfTI stores x fastest, then y, then z: each z slice of the first volume is one contiguous
run of bytes. Slices off the stride are skipped as they stream by; a kept slice is cut to
every s-th row and column. The array comes back in nnU-Net's order (z, y, x), scaled by
scl_slope/scl_inter as nibabel scales. Anything but .nii/.nii.gz goes to `read_zyx`
(nibabel or SimpleITK). No link is followed (`open_nonblocking`).
"""
from __future__ import annotations

import math

from ..fsio import open_nonblocking
from .mirroring import read_zyx
from .raw import GZIP_MAGIC, NIFTI_ENDINGS, _gunzip_stream, _nifti_header, _plain_stream, _Stream


def stride_for(shape, max_voxels: int) -> int:
    n = math.prod(shape)
    dims = sum(1 for s in shape if s > 1) or 1
    return max(1, math.ceil((n / max_voxels) ** (1 / dims)))


def read_strided(path: str, max_voxels: int, stride: int | None = None):
    """(array (z, y, x), the stride used). `stride` given: that one (a label and its image
    on the same grid)."""
    if not str(path).lower().endswith(NIFTI_ENDINGS):
        return read_zyx(str(path), stride)
    import numpy as np

    with open_nonblocking(path) as f:
        magic = f.read(2)
        f.seek(0)
        s = _Stream(_gunzip_stream(f) if magic == GZIP_MAGIC else _plain_stream(f))
        head = s.take(540)
        hdr = _nifti_header(head)
        dtype = hdr.get_data_dtype()
        shape = [int(x) for x in hdr.get_data_shape()] + [1, 1, 1]
        X, Y, Z = shape[:3]
        if min(X, Y, Z) < 1:
            raise ValueError(f"shape {shape[:3]}: empty")
        st = stride or stride_for((X, Y, Z), max_voxels)
        offset = int(hdr.get_data_offset())
        rest = head[offset:] if offset <= len(head) else b""
        if offset > len(head):
            s.skip(offset - len(head))
        per_slice = X * Y * dtype.itemsize
        kept = []
        for z in range(Z):
            need = per_slice - len(rest)
            data = rest + s.take(need) if need > 0 else rest[:per_slice]
            rest = b"" if need > 0 else rest[per_slice:]
            if len(data) < per_slice:
                raise ValueError("fewer voxels than the header says")
            if z % st == 0:
                sl = np.frombuffer(data, dtype=dtype).reshape((Y, X))        # x fastest: rows are y
                kept.append(np.array(sl[::st, ::st]))
    arr = np.stack(kept)
    slope, inter = hdr.get_slope_inter()
    if (slope is not None and np.isfinite(slope) and slope not in (0.0, 1.0)) or \
            (inter is not None and np.isfinite(inter) and inter != 0.0):
        arr = arr.astype(np.float64) * (1.0 if slope is None or not np.isfinite(slope) or slope == 0 else slope) \
            + (0.0 if inter is None or not np.isfinite(inter) else inter)
    return arr, st
