"""DG201/DG202/DG210 for legacy nnU-Net `.npz` cases (keys `data`, `seg`) and unpacked `.npy`.

Every zip member is inflated to the end and its CRC compared: corruption inside a
zlib stream ("invalid stored block lengths") is invisible to a header peek. Inflation
uses ISA-L when installed (about 2x zlib), streams in bounded pieces, and summarises
values on the way (non-finite data, segmentation labels) so nothing is read twice.
"""
from __future__ import annotations

import struct
import zipfile

from ..errors import MemberError
from ..findings import Finding, Fix, finding
from .base import (
    CHUNK,
    MAX_OUT,
    FileTask,
    ValueSummary,
    expected_nbytes,
    parse_npy_header,
    summary_findings,
)

try:  # ISA-L is a declared dependency, zlib the fallback that always exists
    from isal import isal_zlib as _z
except ImportError:  # pragma: no cover
    import zlib as _z

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")
HEAD_BYTES = 4096


def _member_stream(f, zinfo: zipfile.ZipInfo):
    """Yield the inflated bytes of one member, verifying CRC and length at the end."""
    f.seek(zinfo.header_offset)
    hdr = f.read(_LOCAL_HEADER.size)
    if len(hdr) < _LOCAL_HEADER.size or hdr[:4] != b"PK\x03\x04":
        raise MemberError("local file header missing or damaged")
    fields = _LOCAL_HEADER.unpack(hdr)
    f.seek(fields[-2] + fields[-1], 1)   # name length + extra length
    remaining = zinfo.compress_size
    crc, total = 0, 0
    if zinfo.compress_type == zipfile.ZIP_STORED:
        while remaining:
            buf = f.read(min(CHUNK, remaining))
            if not buf:
                raise MemberError(f"truncated: {remaining} bytes of stored data missing")
            remaining -= len(buf)
            crc = _z.crc32(buf, crc)
            total += len(buf)
            yield buf
    elif zinfo.compress_type == zipfile.ZIP_DEFLATED:
        d = _z.decompressobj(-15)
        while not d.eof:
            if d.unconsumed_tail:
                buf = d.unconsumed_tail
            elif remaining:
                buf = f.read(min(CHUNK, remaining))
                if not buf:
                    raise MemberError(f"truncated: {remaining} compressed bytes missing")
                remaining -= len(buf)
            else:
                buf = b""     # input exhausted: drain output zlib still holds back
            try:
                out = d.decompress(buf, MAX_OUT)
            except _z.error as e:
                raise MemberError(f"zlib error: {e}") from None
            if out:
                crc = _z.crc32(out, crc)
                total += len(out)
                if total > zinfo.file_size:
                    raise MemberError(f"inflates to more than the {zinfo.file_size} bytes recorded")
                yield out
            elif not buf:
                raise MemberError("compressed stream ends early (truncated)")
    else:
        raise MemberError(f"unsupported compression method {zinfo.compress_type}")
    if total != zinfo.file_size:
        raise MemberError(f"length mismatch: {total} bytes, zip directory says {zinfo.file_size}")
    if crc != zinfo.CRC:
        raise MemberError(f"CRC mismatch (stored {zinfo.CRC:08x}, computed {crc:08x})")


def member_bytes(path, name: str, limit: int = 1 << 34) -> bytes:
    """One zip member inflated whole by ISA-L in a single call, its CRC and length checked
    (MemberError otherwise): how the ensemble reads a probability file nnU-Net wrote."""
    with open(path, "rb") as f:
        try:
            zinfo = zipfile.ZipFile(f).getinfo(name)
        except (KeyError, zipfile.BadZipFile) as e:
            raise MemberError(f"no member {name}: {e}") from None
        if zinfo.file_size > limit or zinfo.flag_bits & 0x1:
            raise MemberError(f"{name}: {zinfo.file_size} bytes or encrypted: not read")
        f.seek(zinfo.header_offset)
        hdr = f.read(_LOCAL_HEADER.size)
        if len(hdr) < _LOCAL_HEADER.size or hdr[:4] != b"PK\x03\x04":
            raise MemberError("local file header missing or damaged")
        fields = _LOCAL_HEADER.unpack(hdr)
        f.seek(fields[-2] + fields[-1], 1)
        raw = f.read(zinfo.compress_size)
    if len(raw) != zinfo.compress_size:
        raise MemberError(f"truncated: {zinfo.compress_size - len(raw)} compressed bytes missing")
    if zinfo.compress_type == zipfile.ZIP_STORED:
        out = raw
    elif zinfo.compress_type == zipfile.ZIP_DEFLATED:
        try:
            # the directory's size is a claim: never allocate more than deflate can expand to (1032:1)
            out = _z.decompress(raw, -15, max(1, min(zinfo.file_size, 1032 * len(raw) + 1024)))
        except _z.error as e:
            raise MemberError(f"zlib error: {e}") from None
    else:
        raise MemberError(f"unsupported compression method {zinfo.compress_type}")
    if len(out) != zinfo.file_size:
        raise MemberError(f"length mismatch: {len(out)} bytes, zip directory says {zinfo.file_size}")
    if _z.crc32(out) != zinfo.CRC:
        raise MemberError("CRC mismatch")
    return out


def summarise_npy_stream(chunks, role: str, nbytes_total: int):
    """Parse a .npy header from a byte stream and summarise its values.

    Returns (dtype, shape, summary). Raises MemberError when the header and the
    amount of data disagree (truncation, absurd shapes).
    """
    it = iter(chunks)
    head = b""
    for buf in it:
        head += bytes(buf)
        if len(head) >= HEAD_BYTES or len(head) >= nbytes_total:
            break
    try:
        dtype, shape, _fortran, hlen = parse_npy_header(head)
    except Exception as e:  # numpy raises ValueError/SyntaxError on junk headers
        raise MemberError(f"bad .npy header: {e}") from None
    if dtype.hasobject:
        return dtype, shape, None
    want = hlen + expected_nbytes(dtype, shape)
    if want != nbytes_total:
        raise MemberError(f"header says shape {shape} {dtype} ({want} bytes) but member holds {nbytes_total}")
    summary = ValueSummary(dtype, track_values=(role == "seg"), check_finite=(role == "data"))
    summary.feed(memoryview(head)[hlen:])
    for buf in it:
        summary.feed(buf)
    return dtype, shape, summary


def check_npz(task: FileTask, f) -> tuple[list[Finding], dict]:
    out: list[Finding] = []
    facts: dict = {}
    bad = lambda msg: finding("DG201", task.rel, msg, case=task.case, fix=Fix.REPREPROCESS)  # noqa: E731
    wrong = lambda msg: finding("DG202", task.rel, msg, case=task.case, fix=Fix.REPREPROCESS)  # noqa: E731
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        return [bad(f"not a readable zip archive: {e}")], facts
    members = {zi.filename: zi for zi in zf.infolist()}
    shapes = {}
    for key in ("data", "seg"):
        zi = members.get(f"{key}.npy")
        if zi is None:
            out.append(wrong(f"missing array '{key}' (members: {', '.join(sorted(members)) or 'none'})"))
            continue
        try:
            dtype, shape, summary = summarise_npy_stream(_member_stream(f, zi), key, zi.file_size)
        except MemberError as e:
            out.append(bad(f"{key}.npy: {e}"))
            continue
        if summary is None:
            out.append(wrong(f"'{key}' is an object array (would need pickle to load)"))
            continue
        shapes[key] = shape
        facts[f"{key}_shape"] = list(shape)
        facts[f"{key}_dtype"] = str(dtype)
        out += summary_findings(task, summary, key, facts)
    for extra in sorted(set(members) - {"data.npy", "seg.npy"}):
        facts.setdefault("extra_members", []).append(extra)
    out += seg_consistency(shapes, wrong)
    return out, facts


def seg_consistency(shapes: dict, wrong) -> list[Finding]:
    """seg spatial shape == data spatial shape (DG202)."""
    d, s = shapes.get("data"), shapes.get("seg")
    if d is not None and s is not None and tuple(d[1:]) != tuple(s[1:]):
        return [wrong(f"seg shape {tuple(s)} does not match data spatial shape {tuple(d[1:])}")]
    return []


def _file_chunks(f, start: int):
    f.seek(start)
    while True:
        buf = f.read(CHUNK)
        if not buf:
            return
        yield buf


def check_npy(task: FileTask, f, size: int) -> tuple[list[Finding], dict]:
    """Unpacked legacy arrays: `case.npy` (data) and `case_seg.npy` (seg)."""
    role = "seg" if task.rel.endswith("_seg.npy") else "data"
    try:
        dtype, shape, summary = summarise_npy_stream(_file_chunks(f, 0), role, size)
    except MemberError as e:
        return [finding("DG201", task.rel, str(e), case=task.case, fix=Fix.REPREPROCESS)], {}
    if summary is None:
        return [finding("DG202", task.rel, "object array (would need pickle to load)",
                        case=task.case, fix=Fix.REPREPROCESS)], {}
    facts = {"shape": list(shape), "dtype": str(dtype)}
    return summary_findings(task, summary, role, facts), facts
