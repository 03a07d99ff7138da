"""A volume's strided grid, kept from a voxel stream: the bound every check that reads voxels
again shares (a grid of at most a given number of voxels, whatever the file claims), and
nibabel's scaling rule. No I/O here: the raw-image check feeds it the bytes it inflates, and
`volume_read` the bytes it streams."""
from __future__ import annotations

import math


def stride_for(shape, max_voxels: int) -> int:
    n = math.prod(shape)
    dims = sum(1 for s in shape if s > 1) or 1
    return max(1, math.ceil((n / max_voxels) ** (1 / dims)))


def scaling(hdr) -> tuple[float, float] | None:
    """(slope, intercept) nibabel would apply, a non-finite or zero slope read as 1 and a
    non-finite intercept as 0; None when that is the identity."""
    import numpy as np

    slope, inter = hdr.get_slope_inter()
    s_ = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    i_ = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return None if (s_, i_) == (1.0, 0.0) else (s_, i_)


class StridedSlices:
    """Keeps every s-th z slice, cut to every s-th row and column, of a NIfTI voxel stream fed
    in pieces of any size: the scan's raw-image check feeds it the bytes it inflates anyway
    (the label audit then needs no second pass over the image). Works in rows (x runs), so
    memory is the grid kept plus one row, however large a slice claims to be."""

    def __init__(self, dtype, shape, max_voxels: int, stride: int | None = None):
        dims = [int(x) for x in shape] + [1, 1, 1]
        self.X, self.Y, self.Z = dims[:3]
        if min(self.X, self.Y, self.Z) < 1:
            raise ValueError(f"shape {dims[:3]}: empty")
        self.dtype = dtype
        self.stride = stride or stride_for((self.X, self.Y, self.Z), max_voxels)
        self.row = self.X * dtype.itemsize
        self.rows = self.Y * self.Z          # rows of the first volume
        self.r = 0                           # the row being fed
        self.have = 0                        # its bytes seen so far
        self.part = bytearray()              # ... kept, when it is on the grid
        self.kept: list = []

    def full(self) -> bool:
        return self.r >= self.rows

    def _on(self, r: int) -> bool:
        return (r // self.Y) % self.stride == 0 and (r % self.Y) % self.stride == 0

    def feed(self, buf) -> None:
        import numpy as np

        mv = memoryview(buf).cast("B")
        pos, end = 0, len(mv)
        while pos < end and self.r < self.rows:
            if self.have == 0:
                n = min((end - pos) // self.row, self.rows - self.r)
                if n:
                    idx = np.arange(self.r, self.r + n)
                    on = ((idx // self.Y) % self.stride == 0) & ((idx % self.Y) % self.stride == 0)
                    if on.any():
                        rows = np.frombuffer(mv[pos:pos + n * self.row], dtype=self.dtype).reshape((n, self.X))
                        self.kept.append(rows[on][:, ::self.stride])
                    self.r += n
                    pos += n * self.row
                    continue
            n = min(self.row - self.have, end - pos)
            if self._on(self.r):
                self.part += mv[pos:pos + n]
            self.have += n
            pos += n
            if self.have == self.row:
                if self.part:
                    self.kept.append(np.frombuffer(bytes(self.part), dtype=self.dtype)[None, ::self.stride])
                    self.part = bytearray()
                self.have = 0
                self.r += 1

    def result(self, hdr):
        """The kept grid (z, y, x), scaled as nibabel scales; ValueError if the stream ended early."""
        import numpy as np

        if not self.full():
            raise ValueError("fewer voxels than the header says")
        st = self.stride
        nz, ny, nx = -(-self.Z // st), -(-self.Y // st), -(-self.X // st)
        arr = np.concatenate(self.kept).reshape((nz, ny, nx))
        sc = scaling(hdr)
        if sc is not None:
            arr = arr.astype(np.float64) * sc[0] + sc[1]
        return arr
