"""DG203/DG202/DG210 for nnU-Net >= 2.6 blosc2 cases (`case.b2nd`, `case_seg.b2nd`).

Every chunk is decompressed (blosc2 checks its own block checksums when present and
fails on truncated frames); values are summarised chunk by chunk.

What a frame claims is checked before anything is decompressed, so memory and time follow
the file, not its claims (a few hundred bytes can declare gigabytes):
- the layout must agree with the declared array: item size, chunk and block shapes (a block
  no bigger than its chunk, a chunk no bigger than the shape rounded up to whole blocks, so a
  (1, 4, 8, 8) array cannot come in one 2 GB chunk), their byte sizes, the number of chunks,
  and each chunk's own header (its bytes and block size);
- a chunk blosc2 stores as a special value (all zeros, NaN, one repeated value: 32-40 bytes
  for any size; blosc2 writes an all-background chunk so) is summarised from its header,
  never expanded;
- other chunks are decompressed whole up to PIECE bytes, larger ones a few blocks at a time,
  so memory stays at one piece; a block (what blosc2 must expand at once) is at most MAX_BLOCK.
"""
from __future__ import annotations

import math

from ..findings import Finding, Fix, finding
from .base import FileTask, ValueSummary, summary_findings

_configured = False

PIECE = 32 << 20          # bytes decompressed at once at most (nnU-Net's chunks: <= 6 MB)
MAX_BLOCK = 64 << 20      # a block is expanded whole by blosc2 (nnU-Net's: <= 128 KB)
MAX_CHUNKS = 1 << 16      # chunks of a file beyond one per 8 bytes of it (nnU-Net: a few hundred)
HEADER = 32               # bytes of a blosc2 chunk header (extended header, blosc2 >= 2)
# special-value chunks (c-blosc2 BLOSC2_SPECIAL_*, bits 4-6 of the header's byte 31)
ZERO, NAN, VALUE, UNINIT = 1, 2, 3, 4


def _blosc2():
    global _configured
    import blosc2

    if not _configured:
        # files are checked in parallel processes already; one thread each is faster
        blosc2.set_nthreads(1)
        _configured = True
    return blosc2


class _Summary(ValueSummary):
    def feed_repeated(self, item: bytes, n: int) -> None:
        """`n` items equal to `item` (one item's bytes): what feeding them records, in O(1)."""
        if n <= 0 or not (self.track_values or self.check_finite):
            return
        a = self.np.frombuffer(item, dtype=self.dtype)
        if self.check_finite and not bool(self.np.isfinite(a).all()):
            self._nonfinite += n
        if self.track_values:
            v = int(a[0])
            self._big_counts[v] = self._big_counts.get(v, 0) + n


def layout_problem(shape, chunks, blocks, itemsize: int, schunk, size: int) -> str | None:
    """Why the frame's layout cannot be the declared array's, or would expand beyond the limits;
    None when it is consistent. Reads only the metadata."""
    nd = len(shape)
    if len(chunks) != nd or len(blocks) != nd:
        return f"chunks {chunks} / blocks {blocks} do not have the {nd} axes of shape {shape}"
    if any(c <= 0 for c in chunks) or any(b <= 0 for b in blocks) or any(s < 0 for s in shape):
        return f"shape {shape}, chunks {chunks}, blocks {blocks}: sizes must be positive"
    if any(b > c for b, c in zip(blocks, chunks)):
        return f"blocks {blocks} larger than chunks {chunks}"
    padded = tuple(-(-s // b) * b for s, b in zip(shape, blocks))
    if any(s and c > p for s, c, p in zip(shape, chunks, padded)):
        return (f"chunks {chunks} larger than the shape {shape} rounded up to whole blocks {padded}: "
                f"a chunk of {math.prod(chunks) * itemsize} bytes for an array of "
                f"{math.prod(shape) * itemsize}")
    if itemsize <= 255 and schunk.typesize != itemsize:
        return f"frame item size {schunk.typesize} differs from the dtype's {itemsize}"
    want_chunk, want_block = math.prod(chunks) * itemsize, math.prod(blocks) * itemsize
    # blosc2 stores a chunk as whole blocks: a chunk that is not a multiple of its blocks
    # (nnU-Net's chunks often are not: (1, 1, 71, 66) in blocks of (1, 1, 64, 64)) is padded
    padded_chunk = math.prod(-(-c // b) * b for c, b in zip(chunks, blocks)) * itemsize
    if schunk.chunksize not in (want_chunk, padded_chunk) or schunk.blocksize != want_block:
        return (f"frame chunk/block bytes {schunk.chunksize}/{schunk.blocksize} differ from chunks {chunks} / "
                f"blocks {blocks} of {itemsize}-byte items ({want_chunk} or, padded to whole blocks, "
                f"{padded_chunk}/{want_block})")
    if want_block > MAX_BLOCK:
        return f"blocks of {want_block} bytes exceed the {MAX_BLOCK >> 20} MB limit one block may expand to"
    expected = math.prod(-(-s // c) for s, c in zip(shape, chunks))
    if schunk.nchunks != expected:
        return f"frame holds {schunk.nchunks} chunks, shape {shape} needs {expected}"
    if expected > max(MAX_CHUNKS, size // 8):
        return (f"{expected} chunks in a file of {size} bytes exceed the limit of "
                f"{max(MAX_CHUNKS, size // 8)} (one per 8 bytes of the file, at least {MAX_CHUNKS})")
    return None


def _special(chunk: bytes, dtype) -> tuple[int, bytes | None]:
    """(special kind, one item's bytes) of a compressed chunk; the item is None where the
    value is not known from the header alone (not special, uninitialised, malformed)."""
    kind = (chunk[31] >> 4) & 7 if len(chunk) >= HEADER else 0
    size = dtype.itemsize
    if kind == ZERO and len(chunk) == HEADER:
        return kind, bytes(size)
    if kind == NAN and len(chunk) == HEADER and dtype.kind == "f" and size in (4, 8):
        import numpy as np

        return kind, np.full(1, np.nan, dtype=dtype).tobytes()
    if kind == VALUE and len(chunk) == HEADER + size:
        return kind, bytes(chunk[HEADER:])
    return kind, None


def check_b2nd(task: FileTask, data: bytes | None = None, size: int | None = None) -> tuple[list[Finding], dict]:
    """`data`: the file's bytes when the caller read them already (for the hash): the frame is
    parsed from memory instead of opened again (half the time on nnU-Net's 2d cases).
    `size`: the file's size (bounds how many chunks it may declare)."""
    role = "seg" if task.rel.endswith("_seg.b2nd") else "data"
    bad = lambda msg: finding("DG203", task.rel, msg, case=task.case, fix=Fix.REPREPROCESS)  # noqa: E731
    blosc2 = _blosc2()
    try:
        try:
            if data is None:
                raise ValueError("no bytes in memory")
            arr = blosc2.ndarray_from_cframe(data, copy=False)    # `data` outlives arr: held below
        except Exception:  # noqa: BLE001 - damaged: open the file, whose error names what failed
            arr = blosc2.open(task.path, mode="r")
    except Exception as e:  # blosc2 raises RuntimeError/ValueError/... on damaged frames
        detail = str(e).replace(task.path, task.rel.rsplit("/", 1)[-1])
        return [bad(f"cannot open blosc2 frame (truncated or damaged): {type(e).__name__}: {detail}")], {}
    if not hasattr(arr, "shape") or not hasattr(arr, "schunk"):
        return [bad("not a blosc2 NDArray (b2nd) file")], {}
    shape, dtype = tuple(int(s) for s in arr.shape), arr.dtype
    facts = {"shape": list(shape), "dtype": str(dtype)}
    if dtype.hasobject or dtype.itemsize == 0:
        return [bad(f"unsupported item type {dtype}")], facts
    schunk = arr.schunk
    size = len(data) if size is None and data is not None else size or 0
    problem = layout_problem(shape, tuple(int(c) for c in arr.chunks), tuple(int(b) for b in arr.blocks),
                             dtype.itemsize, schunk, size)
    if problem is not None:
        return [bad(f"blosc2 layout does not match the array: {problem}")], facts
    summary = _Summary(dtype, track_values=(role == "seg"), check_finite=(role == "data"))
    chunk_bytes, block_bytes = schunk.chunksize, schunk.blocksize
    for i in range(schunk.nchunks):
        try:
            chunk = schunk.get_chunk(i)
            nbytes, cbytes, blocksize = blosc2.get_cbuffer_sizes(chunk)
        except Exception as e:
            return [bad(f"chunk {i} of {schunk.nchunks} is unreadable: {e}")], facts
        if nbytes != chunk_bytes or blocksize != block_bytes or cbytes != len(chunk):
            return [bad(f"chunk {i} of {schunk.nchunks} claims {nbytes} bytes in blocks of {blocksize} "
                        f"({cbytes} compressed, {len(chunk)} stored); the array's chunks are {chunk_bytes} bytes "
                        f"in blocks of {block_bytes}")], facts
        kind, item = _special(chunk, dtype)
        del chunk
        if item is not None:
            summary.feed_repeated(item, chunk_bytes // dtype.itemsize)
            continue
        try:
            _feed_chunk(schunk, i, summary)
        except Exception as e:
            return [bad(f"chunk {i} of {schunk.nchunks} fails to decompress: {e}")], facts
    return summary_findings(task, summary, role, facts), facts


def _feed_chunk(schunk, i: int, summary) -> None:
    """Decompress chunk `i` into the summary: whole when small, else PIECE bytes (whole blocks)
    at a time, of which blosc2 expands only the blocks asked for."""
    if schunk.chunksize <= PIECE:
        summary.feed(schunk.decompress_chunk(i))
        return
    items = schunk.chunksize // schunk.typesize
    step = max(1, PIECE // schunk.blocksize) * (schunk.blocksize // schunk.typesize)
    start = i * items
    for lo in range(start, start + items, step):
        summary.feed(schunk.get_slice(lo, min(lo + step, start + items)))
