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


from ..fsio import open_nonblocking
from .mirroring import read_zyx
from .raw import GZIP_MAGIC, NIFTI_ENDINGS, _gunzip_stream, _nifti_header, _plain_stream, _Stream
from .strided import StridedSlices


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


def read_strided(path: str, max_voxels: int, stride: int | None = None):
    """(array (z, y, x), the stride used). `stride` given: that one (a label and its image
    on the same grid)."""
    if not str(path).lower().endswith(NIFTI_ENDINGS):
        return read_zyx(str(path), stride)
    with open_nonblocking(path) as f:
        arr, st, _ = strided_from(f, max_voxels, stride)
    return arr, st


def strided_from(f, max_voxels: int, stride: int | None = None):
    """(array (z, y, x), stride, voxel size (z, y, x)) of an open NIfTI file, streamed."""
    hdr, s, rest = nifti_stream(f)
    dtype = hdr.get_data_dtype()
    shape = [int(x) for x in hdr.get_data_shape()]
    keep = StridedSlices(dtype, shape, max_voxels, stride)
    keep.feed(rest)
    while not keep.full():
        buf = s.take(1 << 19)
        if not buf:
            break
        keep.feed(buf)
    return keep.result(hdr), keep.stride, _zooms_zyx(hdr)


def _zooms_zyx(hdr) -> list[float]:
    z = [float(x) for x in hdr.get_zooms()[:3]] + [1.0, 1.0, 1.0]
    return [z[2], z[1], z[0]]
