"""Zip members read as a grader's `zipfile` would, but in bounded pieces and without trusting
the archive's size fields.

A submission zip comes from anyone: its central directory may claim any size (zip64: 1 TiB), a
member may be encrypted or use a method Python cannot read (99: WinZip AES), a few KB of deflate
or bzip2 may inflate to gigabytes, and two entries may point at the same data (the overlapping
zip bomb). `member_problem` names what the headers alone show; `MemberReader` inflates one
member in pieces of at most `MAX_OUT` bytes and stops, with a `RawError` (DG606 for the caller),
as soon as the member inflates past its declared size or past what a NIfTI of its header's shape
can be (`nifti_bound`), and at its end checks the declared size and the CRC against what did
inflate. Nothing but the piece in hand and the first bytes (kept for the reader's seek back to
the start) is held.
"""
from __future__ import annotations

import bz2
import io
import lzma
import math
import struct
import zipfile
import zlib

from ..checks.base import CHUNK, MAX_OUT
from ..errors import RawError

GZIP_MAGIC = b"\x1f\x8b"
HEAD_ROOM = 1 << 20         # bytes a member may inflate to before its NIfTI header is known
KEEP = 64 << 10             # first bytes kept, so the reader may seek back to the start
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
           zipfile.ZIP_LZMA: "lzma"}
OTHER_METHODS = {1: "shrink", 6: "implode", 9: "deflate64", 93: "zstandard", 95: "xz", 98: "PPMd",
                 99: "WinZip AES encryption"}
_ENCRYPTED, _PATCHED, _STRONG, _UTF8 = 0x1, 0x20, 0x40, 0x800


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a grader cannot read this member, from its central-directory header alone."""
    if info.compress_type == 99:
        return ("compression method 99 (WinZip AES encryption): encrypted, so a grader cannot open it; zip "
                "the predictions without a password")
    if info.flag_bits & (_ENCRYPTED | _STRONG):
        return ("encrypted (password-protected): a grader cannot open it; zip the predictions without a "
                "password")
    if info.flag_bits & _PATCHED:
        return "stored as compressed patched data (flag bit 5), which zip readers do not support"
    if info.compress_type not in METHODS:
        name = OTHER_METHODS.get(info.compress_type, "unknown")
        return (f"compression method {info.compress_type} ({name}), which Python's zipfile (and so most "
                f"graders) cannot read; zip with deflate or without compression")
    return None


def data_ends(zf: zipfile.ZipFile) -> dict[int, int]:
    """header offset -> where the next member (or the central directory) starts: a member's data
    must end there. Entries sharing one offset share their data (a zip bomb's shape)."""
    starts = sorted({i.header_offset for i in zf.infolist()})
    end_of_data = getattr(zf, "start_dir", None)
    out = {}
    for a, b in zip(starts, starts[1:] + [end_of_data]):
        out[a] = b
    return out


def nifti_bound(head: bytes) -> tuple[int, str] | None:
    """(bytes, what) a member starting with `head` may inflate to at most: a NIfTI of its
    header's shape and type (vox_offset + voxels, plus what gzip adds), with the words for a
    message; None while `head` is too short to tell. A header that cannot be parsed gives
    HEAD_ROOM: the NIfTI reader names what is wrong with it."""
    gz = head[:2] == GZIP_MAGIC
    plain = _gunzip_head(head) if gz else head[:540]
    if plain is None or len(plain) < 348:
        return None
    try:
        import nibabel as nib
        import numpy as np

        size_le, size_be = int.from_bytes(plain[:4], "little"), int.from_bytes(plain[:4], "big")
        if 540 in (size_le, size_be):
            if len(plain) < 540:
                return None
            klass = nib.Nifti2Header
        elif 348 in (size_le, size_be):
            klass = nib.Nifti1Header
        else:
            return HEAD_ROOM, "no NIfTI header"
        hdr = klass.from_fileobj(io.BytesIO(plain), check=False)
        shape = tuple(int(x) for x in hdr.get_data_shape())
        dtype = np.dtype(hdr.get_data_dtype())
        offset = int(hdr.get_data_offset())
    except Exception:                   # noqa: BLE001 - any header nibabel rejects: the reader says why
        return HEAD_ROOM, "no readable NIfTI header"
    if any(d < 0 for d in shape) or offset < 0:
        return HEAD_ROOM, "no readable NIfTI header"
    voxels = offset + dtype.itemsize * math.prod(shape)
    # gzip adds at most 5 bytes per 64 KiB stored block, headers and trailers; a bgzip file one
    # header per block: an eighth more, and a header's room, is more than any writer adds
    most = voxels + (voxels // 8 if gz else 0) + HEAD_ROOM
    return most, f"a NIfTI of its header's shape {shape} {dtype} ({voxels} bytes)"


def _gunzip_head(data: bytes) -> bytes | None:
    """The first 540 inflated bytes of a gzip stream (across members), fewer when it ends first;
    None when `data` stops before them."""
    out = b""
    d = zlib.decompressobj(31)
    try:
        while len(out) < 540:
            out += d.decompress(data, 540 - len(out))
            if len(out) >= 540:
                break
            if not d.eof:
                return None                         # needs more input
            data = d.unused_data.lstrip(b"\x00")
            if not data:
                return out
            d = zlib.decompressobj(31)
    except zlib.error:
        return b""
    return out


class _Inflater:
    """One member's decompressor, giving at most MAX_OUT bytes per piece whatever the ratio."""

    def __init__(self, method: int):
        self.method = method
        self.d = {zipfile.ZIP_STORED: None, zipfile.ZIP_DEFLATED: zlib.decompressobj(-15),
                  zipfile.ZIP_BZIP2: bz2.BZ2Decompressor(), zipfile.ZIP_LZMA: _ZipLzma()}[method]

    def feed(self, data: bytes):
        d = self.d
        if d is None:
            for i in range(0, len(data), MAX_OUT):
                yield data[i:i + MAX_OUT]
            return
        if self.method == zipfile.ZIP_DEFLATED:
            while data and not d.eof:
                out = d.decompress(data, MAX_OUT)
                data = d.unconsumed_tail
                if out:
                    yield out
            while not d.eof:                        # output zlib still holds for input it took
                out = d.decompress(b"", MAX_OUT)
                if not out:
                    break
                yield out
            return
        if d.eof:                                   # bytes after the end of the stream: ignored, as zipfile does
            return
        out = d.decompress(data, MAX_OUT)
        if out:
            yield out
        while not d.eof and not d.needs_input:
            out = d.decompress(b"", MAX_OUT)
            if not out and d.needs_input:
                break
            yield out


class _ZipLzma:
    """zipfile's LZMA layout (version, properties size, properties, raw LZMA1) with bounded output."""

    def __init__(self):
        self.head = b""
        self.d = None
        self.eof, self.needs_input = False, True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self.d is None:
            self.head += data
            if len(self.head) < 4:
                return b""
            (psize,) = struct.unpack("<H", self.head[2:4])
            if len(self.head) < 4 + psize:
                return b""
            props = self.head[4:4 + psize]
            self.d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[
                lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)])     # what zipfile calls
            data, self.head = self.head[4 + psize:], b""
        out = self.d.decompress(data, max_length)
        self.eof, self.needs_input = self.d.eof, self.d.needs_input
        return out


def _compressed(zf: zipfile.ZipFile, info: zipfile.ZipInfo, end: int | None):
    """The member's stored bytes (compressed), read in CHUNKs after checking its local header."""
    fp = zf.fp
    if fp is None:
        raise RawError("the archive is closed")
    fp.seek(info.header_offset)
    fh = fp.read(zipfile.sizeFileHeader)
    if len(fh) != zipfile.sizeFileHeader or fh[:4] != zipfile.stringFileHeader:
        raise RawError("its local header is missing or damaged")
    fields = struct.unpack(zipfile.structFileHeader, fh)
    name = fp.read(fields[zipfile._FH_FILENAME_LENGTH])
    local = name.decode("utf-8" if fields[zipfile._FH_GENERAL_PURPOSE_FLAG_BITS] & _UTF8 else "cp437",
                        errors="replace")
    if local != info.orig_filename:
        raise RawError(f"its local header names it {local[:80]!r}: zip readers disagree on what this member is")
    pos = info.header_offset + zipfile.sizeFileHeader + len(name) + fields[zipfile._FH_EXTRA_FIELD_LENGTH]
    if end is not None and pos + info.compress_size > end:
        raise RawError("its data overlaps the next member's (the shape of a zip bomb): not read")
    left = info.compress_size
    while left > 0:
        fp.seek(pos)
        buf = fp.read(min(CHUNK, left))
        if not buf:
            raise RawError("its data ends early: the archive is truncated")
        pos += len(buf)
        left -= len(buf)
        yield buf


class MemberReader:
    """One zip member's inflated bytes as a read-only file (read, tell, seek) for the NIfTI reader.

    Inflated in pieces; stops with RawError past the member's declared size or past what a NIfTI
    of its header's shape can be (`nifti_bound`; HEAD_ROOM until the header is read), and at the
    end when the declared size or the CRC differ from what inflated. `seek` goes back only within
    the first KEEP bytes; `seek(0, 2)` answers the declared size (the file's size, as a zip reader
    believes it) without inflating anything."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, end: int | None = None):
        self.info = info
        self.declared = info.file_size
        self.bound, self.what = HEAD_ROOM, "its NIfTI header"
        self._pieces = self._inflate(zf, info, end)
        self._buf = b""              # inflated, not yet served
        self._kept = b""             # the first KEEP bytes served
        self._pos = 0
        self._virtual: int | None = None    # where seek(0, 2) "moved" to

    # --- the inflation, with its limits ---------------------------------------------------
    def _inflate(self, zf, info, end):
        inflater = _Inflater(info.compress_type)
        crc = size = 0
        # the first pieces, until the NIfTI header gives the bound; a member declared no larger than
        # HEAD_ROOM never gets past it (nor past its declared size): no header to read twice
        head: list[bytes] | None = [] if self.declared > HEAD_ROOM else None
        try:
            for data in _compressed(zf, info, end):
                for out in inflater.feed(data):
                    size += len(out)
                    if size > self.declared:
                        raise RawError(f"inflates past its declared size ({self.declared} bytes): the "
                                       f"archive's size fields are wrong")
                    if head is not None:
                        head.append(out)
                        got = nifti_bound(b"".join(head)[:HEAD_ROOM])
                        if got is not None or size >= HEAD_ROOM:
                            self.bound, self.what = got or (HEAD_ROOM, "no NIfTI header in its first bytes")
                            head = None
                    if size > self.bound:
                        raise RawError(f"inflates past {self.bound} bytes, more than {self.what} can be: "
                                       f"stopped reading (a decompression bomb?)")
                    crc = zlib.crc32(out, crc)
                    yield out
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError, struct.error) as e:
            raise RawError(f"cannot inflate it ({METHODS.get(info.compress_type)}): {e}") from None
        if size != self.declared:
            raise RawError(f"declares {self.declared} bytes but inflates to {size}: the archive's size "
                           f"fields are wrong")
        if crc != info.CRC:
            raise RawError(f"bad CRC-32 for {info.filename[:120]!r} ({crc:08x}, the archive says {info.CRC:08x}): "
                           f"the member is corrupt")

    def _more(self) -> bool:
        piece = next(self._pieces, None)
        if piece is None:
            return False
        self._buf += piece
        return True

    # --- the file interface -----------------------------------------------------------------
    def read(self, n: int = -1) -> bytes:
        if self._virtual is not None and self._virtual != self._pos:
            return b""
        if n is None or n < 0:
            while self._more():
                pass
            n = len(self._buf)
        while len(self._buf) < n and self._more():
            pass
        out, self._buf = self._buf[:n], self._buf[n:]
        if self._pos < KEEP:
            self._kept += out[: KEEP - self._pos]
        self._pos += len(out)
        return out

    def tell(self) -> int:
        return self._pos if self._virtual is None else self._virtual

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            self._virtual = self.declared + offset
            return self._virtual
        target = offset if whence == 0 else self.tell() + offset
        self._virtual = None
        if target == self._pos:
            return target
        if target < self._pos:
            if self._pos > len(self._kept) or target < 0:
                raise RawError("the member reader cannot seek back that far")
            self._buf = self._kept[target:self._pos] + self._buf
            self._pos = target
            return target
        while self._pos < target:
            if not self.read(min(CHUNK, target - self._pos)):
                break
        return self._pos

    def close(self) -> None:
        self._pieces.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
