"""Per-file checks of raw images and labels (NIfTI-1/2, .nii and .nii.gz): DG302, DG306, DG401–DG403.

NIfTI is streamed: the gzip stream is inflated to its end (ISA-L when installed; the
gzip trailer's CRC and length are verified), the header is parsed from the first
bytes with nibabel, and voxels are summarised chunk by chunk, so a 512x512x300 volume
never sits in memory and a header claiming a terabyte is caught by arithmetic.
Other formats nnU-Net reads (.mha, .nrrd, .png, ...) go through SimpleITK.
"""
from __future__ import annotations

import io
import math
import os

from ..errors import RawError
from ..findings import Finding, Fix, Severity, finding
from .base import CHUNK, MAX_OUT, FileTask, ValueSummary
from .metadata import SPACING_RANGE, is_spacing
from .mirroring import MAX_VOXELS
from .signature import ImageSignature, axcodes
from .strided import StridedSlices

try:
    from isal import isal_zlib as _z
except ImportError:  # pragma: no cover
    import zlib as _z

GZIP_MAGIC = b"\x1f\x8b"
CAST_TOLERANCE = 1e-3        # DG401: castable when every value is this close to an integer
NIFTI_ENDINGS = (".nii.gz", ".nii")


def _gunzip_stream(f):
    """Inflate a (possibly multi-member) gzip stream, verifying every member's CRC and length.

    Members follow each other as gzip, nibabel and SimpleITK read them (bgzip writes thousands):
    zero bytes between or after members are padding, anything else must start the next member.
    One loop with one pushed-back buffer, whatever the number of members."""
    pending = b""                                   # bytes read past the end of the last member

    def more():
        nonlocal pending
        if pending:
            buf, pending = pending, b""
            return buf
        return f.read(CHUNK)

    d = _z.decompressobj(31)
    while True:
        if d.unconsumed_tail:
            buf = d.unconsumed_tail
        else:
            buf = more()
            if not buf:
                out = d.decompress(b"", MAX_OUT)   # output zlib may still hold back
                if out:
                    yield out
                    continue
                raise RawError("gzip stream ends early (truncated file)")
        try:
            out = d.decompress(buf, MAX_OUT)
        except _z.error as e:
            raise RawError(f"gzip/zlib error: {e}") from None
        if out:
            yield out
        if d.eof:
            rest = d.unused_data.lstrip(b"\x00")
            while not rest:                         # padding up to the next member or the end
                rest = f.read(CHUNK)
                if not rest:
                    return
                rest = rest.lstrip(b"\x00")
            pending = rest
            d = _z.decompressobj(31)


def _plain_stream(f):
    for buf in iter(lambda: f.read(CHUNK), b""):
        yield buf


class _Stream:
    """Pull exact byte counts out of a chunk iterator; linear in the bytes pulled."""
    def __init__(self, chunks):
        self.it = iter(chunks)
        self.buf = b""
        self.total = 0

    def take(self, n: int) -> bytes:
        parts, have = [self.buf], len(self.buf)
        while have < n:
            nxt = next(self.it, None)
            if nxt is None:
                break
            self.total += len(nxt)
            parts.append(bytes(nxt))
            have += len(nxt)
        data = b"".join(parts)
        out, self.buf = data[:n], data[n:]
        return out

    def skip(self, n: int) -> int:
        """Drop the next `n` bytes without keeping them; how many there were (fewer at the end)."""
        dropped = min(n, len(self.buf))
        self.buf = self.buf[dropped:]
        while dropped < n:
            nxt = next(self.it, None)
            if nxt is None:
                break
            self.total += len(nxt)
            if dropped + len(nxt) > n:
                self.buf = bytes(nxt[n - dropped:])
                return n
            dropped += len(nxt)
        return dropped

    def rest(self):
        if self.buf:
            b, self.buf = self.buf, b""
            yield b
        for nxt in self.it:
            self.total += len(nxt)
            yield nxt


def _nifti_header(head: bytes):
    import nibabel as nib

    if len(head) < 348:
        raise RawError(f"file too short for a NIfTI header ({len(head)} bytes)")
    size_le = int.from_bytes(head[:4], "little")
    size_be = int.from_bytes(head[:4], "big")
    if 540 in (size_le, size_be):
        klass = nib.Nifti2Header
        if len(head) < 540:
            raise RawError("file too short for a NIfTI-2 header")
    elif 348 in (size_le, size_be):
        klass = nib.Nifti1Header
    else:
        raise RawError("not a NIfTI file (bad header size field)")
    try:
        return klass.from_fileobj(io.BytesIO(head), check=False)
    except Exception as e:
        raise RawError(f"bad NIfTI header: {e}") from None


def geometry_from_affine(affine, zooms) -> dict:
    """spacing, origin, direction (unit columns) from a NIfTI affine, as plain lists."""
    import numpy as np

    a = np.asarray(affine, dtype=float)
    rot = a[:3, :3]
    norms = np.linalg.norm(rot, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        direction = rot / np.where(norms == 0, 1, norms)
    return {"spacing": [float(z) for z in zooms[:3]], "origin": [float(x) for x in a[:3, 3]],
            "direction": [float(x) for x in direction.ravel()]}


class FloatLabelSummary:
    """Labels stored as floats: how far from integers, and which integers."""
    def __init__(self, dtype, slope: float, inter: float):
        import numpy as np

        self.np, self.dtype, self.slope, self.inter = np, np.dtype(dtype), slope, inter
        self.max_dev = 0.0
        self.nonfinite = 0
        self._counts: dict[int, int] = {}
        self._rem = b""

    def feed(self, buf) -> None:
        np = self.np
        if self._rem:
            buf = self._rem + bytes(buf)
        n = len(buf) - len(buf) % self.dtype.itemsize
        self._rem = bytes(buf[n:])
        if not n:
            return
        a = np.frombuffer(buf[:n], dtype=self.dtype).astype(np.float64)
        if self.slope != 1.0 or self.inter != 0.0:
            a = a * self.slope + self.inter
        fin = np.isfinite(a)
        if not fin.all():
            self.nonfinite += int(a.size - np.count_nonzero(fin))
            a = a[fin]
        r = np.rint(a)
        if a.size:
            self.max_dev = max(self.max_dev, float(np.max(np.abs(a - r))))
            vals, cnt = np.unique(r, return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist()):
                self._counts[int(v)] = self._counts.get(int(v), 0) + int(c)

    def counts(self) -> dict[int, int]:
        return dict(sorted(self._counts.items()))


def check_image(task: FileTask, f, scratch: dict | None = None) -> tuple[list[Finding], dict]:
    """A raw image channel or label file. Role: label when under labelsTr/labelsTs/gt_segmentations.
    `scratch`: the file's shared dict; a training image's channel 0 whose audit figures are
    due (`task.pair`) leaves its strided grid there for the audit-case check."""
    is_label = task.kind == "label"
    name = task.rel.rsplit("/", 1)[-1]
    try:
        if name.endswith(NIFTI_ENDINGS):
            facts, summary = _read_nifti(task, f, is_label, scratch)
        else:
            facts, summary = _read_sitk(task, is_label)
    except RawError as e:
        return [finding("DG302", task.rel, str(e), case=task.case)], {}
    return _judge(task, facts, summary, is_label), facts


def _read_nifti(task: FileTask, f, is_label: bool, scratch: dict | None = None):
    import numpy as np

    magic = f.read(2)
    f.seek(0)
    chunks = _gunzip_stream(f) if magic == GZIP_MAGIC else _plain_stream(f)
    s = _Stream(chunks)
    head = s.take(540)
    hdr = _nifti_header(head)
    try:
        dtype = hdr.get_data_dtype()
        shape = tuple(int(x) for x in hdr.get_data_shape())
        zooms = tuple(float(z) for z in hdr.get_zooms())
        affine = hdr.get_best_affine()
        offset = int(hdr.get_data_offset())
        slope, inter = hdr.get_slope_inter()
    except Exception as e:
        raise RawError(f"bad NIfTI header: {e}") from None
    if dtype.hasobject or dtype.itemsize == 0:
        raise RawError(f"unsupported voxel type {dtype}")
    negative = [(i, d) for i, d in enumerate(shape, 1) if d < 0]
    if negative:
        i, d = negative[0]
        raise RawError(f"bad NIfTI header: dim[{i}] = {d} is negative (nibabel cannot read it)")
    lowest = int(getattr(hdr, "single_vox_offset", 352))
    if offset < 0 or 0 < offset < lowest:            # 0 is nibabel's "right after the header fields"
        raise RawError(f"bad NIfTI header: vox_offset {offset} lies inside the {lowest}-byte header "
                       f"(nibabel cannot read it)")
    most = _most_bytes(f, magic == GZIP_MAGIC)
    if most is not None and offset > most:
        raise RawError(f"vox_offset {offset} lies beyond the end of the voxel stream: a file of this size "
                       f"holds at most {most} bytes")
    nbytes = dtype.itemsize * math.prod(shape)
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    scaled = slope != 1.0 or inter != 0.0
    float_like = dtype.kind in "fc" or scaled
    if is_label and float_like:
        summary = FloatLabelSummary(dtype, slope, inter)
    else:
        summary = ValueSummary(dtype, track_values=is_label, check_finite=not is_label)
    sig = None if is_label else ImageSignature(dtype, shape, slope, inter)
    feeds = (summary.feed,) if sig is None else (summary.feed, sig.feed)
    grid = _audit_grid(task, dtype, shape) if scratch is not None else None
    if grid is not None:
        feeds += (grid.feed,)
    if offset > len(head):
        skipped = s.skip(offset - len(head))
        if skipped < offset - len(head):
            raise RawError(f"vox_offset {offset} lies beyond the end of the voxel stream "
                           f"({len(head) + skipped} bytes)")
        seen = offset
    else:
        for feed in feeds:
            feed(head[offset:])
        seen = len(head)
    got = max(0, seen - offset)
    for buf in s.rest():
        take = buf[: max(0, nbytes - got)] if got + len(buf) > nbytes else buf
        if take:
            for feed in feeds:
                feed(take)
        got += len(buf)
    if got < nbytes:
        raise RawError(f"header says {shape} {dtype} ({nbytes} bytes of voxels) but the file holds {got}")
    facts = {"shape": list(shape), "dtype": str(dtype), "scaled": scaled, "format": f"nifti{hdr['sizeof_hdr'] // 270}",
             **geometry_from_affine(affine, zooms)}
    if sig is not None:
        facts.update(sig.facts(), axcodes=axcodes(facts["direction"]))
    if grid is not None and grid.full():
        scratch["strided"] = (grid.result(hdr), grid.stride, [float(z) for z in zooms[:3]])
    return facts, summary


def _audit_grid(task: FileTask, dtype, shape):
    """The label audit's strided collector for a training image's channel 0 whose audit-case
    check runs after this one; None otherwise (or for a shape it cannot stream)."""
    if task.pair is None or (task.checks is not None and "audit-case" not in task.checks):
        return None
    try:
        return StridedSlices(dtype, shape, MAX_VOXELS)
    except ValueError:
        return None


def _most_bytes(f, gzipped: bool) -> int | None:
    """How many bytes the stream of file `f` can hold at most: its size, or for gzip what
    deflate's largest ratio (1032:1) can expand it to; None for a stream that is no open file
    (bytes in memory, a zip member): reading to the offset finds out, in linear time."""
    try:
        size = os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None
    return size * 1032 + 1024 if gzipped else size


def _read_sitk(task: FileTask, is_label: bool):
    import numpy as np
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(task.path)
    except Exception as e:
        raise RawError(f"SimpleITK cannot read it: {str(e).strip().splitlines()[-1][:200]}") from None
    arr = sitk.GetArrayViewFromImage(img)
    dim = img.GetDimension()
    facts = {"shape": list(img.GetSize()) + ([img.GetNumberOfComponentsPerPixel()]
                                            if img.GetNumberOfComponentsPerPixel() > 1 else []),
             "dtype": str(arr.dtype), "scaled": False, "format": "sitk",
             "spacing": list(img.GetSpacing())[:3], "origin": list(img.GetOrigin())[:3],
             "direction": list(img.GetDirection()) if dim == 3 else []}
    flat = np.ascontiguousarray(arr).reshape(-1)
    if is_label and flat.dtype.kind in "fc":
        summary = FloatLabelSummary(flat.dtype, 1.0, 0.0)
    else:
        summary = ValueSummary(flat.dtype, track_values=is_label, check_finite=not is_label)
    summary.feed(flat.view(np.uint8))
    if not is_label:
        sig = ImageSignature(flat.dtype, facts["shape"])
        sig.feed(flat.view(np.uint8))
        facts.update(sig.facts(), axcodes=axcodes(facts["direction"], lps=True) if dim == 3 else None,
                     components=img.GetNumberOfComponentsPerPixel())
    return facts, summary


def _judge(task: FileTask, facts: dict, summary, is_label: bool) -> list[Finding]:
    out: list[Finding] = []
    sp = facts.get("spacing", [])
    if not all(is_spacing(x) for x in sp):
        lo, hi = SPACING_RANGE
        out.append(finding("DG306", task.rel, f"implausible spacing {tuple(sp)} (must be positive and finite, "
                                              f"from {lo:g} to {hi:g} mm)", case=task.case))
    if facts.get("direction"):
        import numpy as np

        d = np.asarray(facts["direction"]).reshape(3, 3)
        if not np.all(np.isfinite(d)) or not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
            out.append(finding("DG306", task.rel, "direction matrix is not orthonormal (sheared or degenerate affine)",
                               case=task.case))
    if summary.nonfinite:
        out.append(finding("DG306", task.rel, f"{summary.nonfinite} NaN/inf voxels", case=task.case))
    if not is_label:
        return out
    counts = summary.counts()
    if task.where == "gt":
        facts["seg_values"] = list(counts)
        return out
    facts["label_voxels"] = {str(k): v for k, v in counts.items()}
    facts["seg_values"] = list(counts)
    if isinstance(summary, FloatLabelSummary):
        facts["max_dev"] = summary.max_dev
        dtype = facts["dtype"] + (" with scl_slope/scl_inter scaling" if facts.get("scaled") else "")
        if summary.max_dev == 0:
            out.append(finding("DG401", task.rel, f"label stored as {dtype}; values are exact integers",
                               case=task.case, severity=Severity.WARNING, fix=Fix.CAST))
        else:
            castable = summary.max_dev <= CAST_TOLERANCE
            out.append(finding("DG401", task.rel,
                               f"label stored as {dtype} with non-integer values (up to {summary.max_dev:.3g} "
                               f"from an integer, e.g. 1.00000002); "
                               + ("castable to integers" if castable else "too far from integers to cast safely"),
                               case=task.case, fix=Fix.CAST if castable else None))
    bad = [] if task.labels is None else [v for v in counts if v not in set(task.labels)]
    if bad:
        out.append(finding("DG402", task.rel, f"label values {bad[:10]} are not declared in dataset.json",
                           case=task.case))
    if counts and all(v == 0 for v in counts):
        out.append(finding("DG403", task.rel, "no foreground: every voxel is background", case=task.case))
    return out
