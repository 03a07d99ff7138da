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


def nifti_stream(f):
    """(header, the byte stream positioned at the voxels, the voxel bytes already read with the
    header) of an open NIfTI file, gzip or plain: the one way the checks that read voxels again
    start, so the stream, the header and the data offset are handled once."""
    f.seek(0)
    magic = f.read(2)
    f.seek(0)
    s = _Stream(_gunzip_stream(f) if magic == GZIP_MAGIC else _plain_stream(f))
    head = s.take(540)
    hdr = _nifti_header(head)
    offset = int(hdr.get_data_offset())
    if offset > len(head):
        s.skip(offset - len(head))
        return hdr, s, b""
    return hdr, s, head[offset:]


def scaling(hdr) -> tuple[float, float] | None:
    """(slope, intercept) nibabel would apply, a non-finite or zero slope read as 1 and a
    non-finite intercept as 0; None when that is the identity."""
    import numpy as np

    slope, inter = hdr.get_slope_inter()
    s_ = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    i_ = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return None if (s_, i_) == (1.0, 0.0) else (s_, i_)


def read_strided(path: str, max_voxels: int, stride: int | None = None):
    """(array (z, y, x), the stride used). `stride` given: that one (a label and its image
    on the same grid)."""
    if not str(path).lower().endswith(NIFTI_ENDINGS):
        return read_zyx(str(path), stride)
    import numpy as np

    with open_nonblocking(path) as f:
        hdr, s, rest = nifti_stream(f)
        dtype = hdr.get_data_dtype()
        shape = [int(x) for x in hdr.get_data_shape()] + [1, 1, 1]
        X, Y, Z = shape[:3]
        if min(X, Y, Z) < 1:
            raise ValueError(f"shape {shape[:3]}: empty")
        st = stride or stride_for((X, Y, Z), max_voxels)
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
    sc = scaling(hdr)
    if sc is not None:
        arr = arr.astype(np.float64) * sc[0] + sc[1]
    return arr, st
