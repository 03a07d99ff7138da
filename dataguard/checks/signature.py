"""What a raw image looks like, computed while its voxels stream by anyway (DG307-DG310).

- `axcodes`: the orientation of the voxel axes in world space (nibabel's RAS+ letters, e.g.
  "RAS" or "LPS"); nnU-Net ignores it and uses only spacing, so a case whose axes point
  elsewhere is a mirrored or permuted array next to the others.
- a voxel-content hash: blake3 of the decoded voxel bytes with their dtype and shape, so a
  re-saved or recompressed copy of an image has the same hash and a different file hash;
- an intensity signature: the 1st, 50th and 99th percentiles of a fixed stride of the voxels
  (about 16,000 of them whatever the image's size), scaling applied, non-finite values left
  out. Cheap (one strided view per chunk), deterministic (the stride does not depend on how
  the bytes were split), and enough to tell a T1 from a T2 or a CT in HU from one that is not.
"""
from __future__ import annotations

import math

SAMPLES = 1 << 14            # voxels sampled for the percentiles, about


def axcodes(direction: list[float], lps: bool = False) -> str | None:
    """Orientation letters (RAS+ convention, as nibabel's aff2axcodes) of a 3x3 direction
    matrix given row-major with unit columns; `lps`: the matrix is SimpleITK's (LPS+).
    Each voxel axis is named by the world axis its direction is closest to (an oblique
    axis by its largest component); None when the matrix is missing or degenerate."""
    if not direction or len(direction) != 9 or not all(math.isfinite(x) for x in direction):
        return None
    rows = [list(direction[0:3]), list(direction[3:6]), list(direction[6:9])]
    if lps:
        rows[0] = [-x for x in rows[0]]
        rows[1] = [-x for x in rows[1]]
    out, used = [], set()
    for col in range(3):
        comp = [rows[r][col] for r in range(3)]
        world = max(range(3), key=lambda r: abs(comp[r]))
        if abs(comp[world]) < 1e-6 or world in used:
            return _oblique(rows)          # two axes nearest one world axis: nibabel's assignment
        used.add(world)
        out.append(("RAS" if comp[world] > 0 else "LPI")[world])
    return "".join(out)


def _oblique(rows: list[list[float]]) -> str | None:
    import numpy as np
    from nibabel.orientations import aff2axcodes

    aff = np.eye(4)
    aff[:3, :3] = np.asarray(rows, dtype=float)
    if abs(np.linalg.det(aff[:3, :3])) < 1e-6:
        return None
    codes = aff2axcodes(aff)
    return None if None in codes else "".join(codes)


class ImageSignature:
    """Fed the same voxel bytes as the value summary; `facts()` at the end."""

    def __init__(self, dtype, shape, slope: float = 1.0, inter: float = 0.0):
        import numpy as np
        from blake3 import blake3

        self.np, self.dtype = np, np.dtype(dtype)
        self.slope, self.inter = slope, inter
        n = math.prod(shape) if shape else 0
        self.stride = max(1, n // SAMPLES)
        self._hash = blake3(f"{self.dtype.str}|{tuple(shape)}|".encode())
        self._rem = b""
        self._index = 0                  # items seen so far (for a stride independent of chunking)
        self._samples: list = []

    def feed(self, buf) -> None:
        np = self.np
        self._hash.update(buf)
        mv = memoryview(buf).cast("B")
        size = self.dtype.itemsize
        if self._rem:                 # complete the split item; never copy the whole chunk
            need = size - len(self._rem)
            head, mv = self._rem + bytes(mv[:need]), mv[need:]
            self._rem = b""
            if len(head) < size:
                self._rem = head
                return
            self._take(np.frombuffer(head, dtype=self.dtype))
        n = len(mv) - len(mv) % size
        self._rem = bytes(mv[n:])
        if n:
            self._take(np.frombuffer(mv[:n], dtype=self.dtype))

    def _take(self, a) -> None:
        if self.dtype.kind in "biufc":
            first = (-self._index) % self.stride
            if first < a.shape[0]:
                self._samples.append(a[first::self.stride].copy())
        self._index += a.shape[0]

    def facts(self) -> dict:
        np = self.np
        out = {"voxel_hash": self._hash.hexdigest()[:32]}
        if self._samples:
            s = np.concatenate(self._samples)
            if s.dtype.kind == "c":
                s = np.abs(s)
            with np.errstate(invalid="ignore", over="ignore"):
                s = s.astype(np.float64)
                if self.slope != 1.0 or self.inter != 0.0:
                    s = s * self.slope + self.inter
            s = s[np.isfinite(s)]
            if s.size:
                p1, p50, p99 = np.percentile(s, [1, 50, 99])
                out["signature"] = [round(float(p1), 4), round(float(p50), 4), round(float(p99), 4)]
        return out
