"""DG203/DG202/DG210 for nnU-Net >= 2.6 blosc2 cases (`case.b2nd`, `case_seg.b2nd`).

Every chunk is decompressed (blosc2 checks its own block checksums when present and
fails on truncated frames); values are summarised chunk by chunk, memory stays at
one chunk.
"""
from __future__ import annotations

from ..findings import Finding, Fix, finding
from .base import FileTask, ValueSummary, summary_findings

_configured = False


def _blosc2():
    global _configured
    import blosc2

    if not _configured:
        # files are checked in parallel processes already; one thread each is faster
        blosc2.set_nthreads(1)
        _configured = True
    return blosc2


def check_b2nd(task: FileTask, data: bytes | None = None) -> tuple[list[Finding], dict]:
    """`data`: the file's bytes when the caller read them already (for the hash): the frame is
    parsed from memory instead of opened again (half the time on nnU-Net's 2d cases)."""
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
    schunk = arr.schunk
    expected_chunks = 1
    for s, c in zip(arr.shape, arr.chunks):
        expected_chunks *= -(-s // c) if c else 0
    if schunk.nchunks != expected_chunks:
        return [bad(f"frame holds {schunk.nchunks} chunks, shape {shape} needs {expected_chunks}")], facts
    summary = ValueSummary(dtype, track_values=(role == "seg"), check_finite=(role == "data"))
    for i in range(schunk.nchunks):
        try:
            buf = schunk.decompress_chunk(i)
        except Exception as e:
            return [bad(f"chunk {i} of {schunk.nchunks} fails to decompress: {e}")], facts
        summary.feed(buf)
    return summary_findings(task, summary, role, facts), facts
