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

from ..errors import RawError
from ..findings import Finding, Fix, Severity, finding
from .base import CHUNK, MAX_OUT, FileTask, ValueSummary
from .signature import ImageSignature, axcodes

try:
    from isal import isal_zlib as _z
except ImportError:  # pragma: no cover
    import zlib as _z

GZIP_MAGIC = b"\x1f\x8b"
CAST_TOLERANCE = 1e-3        # DG401: castable when every value is this close to an integer
NIFTI_ENDINGS = (".nii.gz", ".nii")


def _gunzip_stream(f):
    """Inflate a (possibly multi-member) gzip stream, verifying CRC and length."""
    d = _z.decompressobj(31)
    while True:
        if d.unconsumed_tail:
            buf = d.unconsumed_tail
        else:
            buf = f.read(CHUNK)
            if not buf:
                if d.eof:
                    return
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
            rest = d.unused_data
            if rest.strip(b"\x00"):                  # another gzip member follows
                d = _z.decompressobj(31)
                f = _Prefixed(rest, f)
            elif not d.unconsumed_tail:
                # trailing bytes after the last member are ignored, like gzip does
                for _ in iter(lambda: f.read(CHUNK), b""):
                    pass
                return


class _Prefixed:
    def __init__(self, head: bytes, f):
        self.head, self.f = head, f

    def read(self, n):
        if self.head:
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.f.read(n)


def _plain_stream(f):
    for buf in iter(lambda: f.read(CHUNK), b""):
        yield buf


class _Stream:
    """Pull exact byte counts out of a chunk iterator."""
    def __init__(self, chunks):
        self.it = iter(chunks)
        self.buf = b""
        self.total = 0

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            nxt = next(self.it, None)
            if nxt is None:
                break
            self.total += len(nxt)
            self.buf += bytes(nxt)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

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


def check_image(task: FileTask, f) -> tuple[list[Finding], dict]:
    """A raw image channel or label file. Role: label when under labelsTr/labelsTs/gt_segmentations."""
    is_label = task.kind == "label"
    name = task.rel.rsplit("/", 1)[-1]
    try:
        if name.endswith(NIFTI_ENDINGS):
            facts, summary = _read_nifti(task, f, is_label)
        else:
            facts, summary = _read_sitk(task, is_label)
    except RawError as e:
        return [finding("DG302", task.rel, str(e), case=task.case)], {}
    return _judge(task, facts, summary, is_label), facts


def _read_nifti(task: FileTask, f, is_label: bool):
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
    if offset > len(head):
        s.take(offset - len(head))
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
    return facts, summary


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
    bad_sp = [x for x in sp if not (x > 0) or math.isinf(x)]
    if bad_sp:
        out.append(finding("DG306", task.rel, f"implausible spacing {tuple(sp)} (must be positive and finite)",
                           case=task.case))
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
