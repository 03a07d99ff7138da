"""What a check receives and returns, plus the value-summary helpers they share.

Per-file checks run in worker processes (spawn start method), so tasks and results
are small picklable dataclasses; nothing relies on state inherited by fork.
"""
from __future__ import annotations

import re
from _blake2 import blake2b  # hashlib would load OpenSSL's _hashlib
from dataclasses import dataclass, field

from ..findings import Finding, Fix, finding

CHUNK = 1 << 20          # bytes read from disk at a time
MAX_OUT = 512 << 10      # inflated bytes per step: small enough to stay in cache and reuse
                         # freed memory (measured: 4 MiB steps page-fault, 1.6x slower on raw)
SMALL_RANGE = 40         # value ranges up to this wide are counted value by value
GATHER = MAX_OUT         # value counting gathers smaller pieces (blosc2 chunks: ~50 KB) to this size


def context_digest(specs: str) -> str:
    """A short digest of a task's extra context (FileTask.roundtrip, FileTask.pair)."""
    return blake2b(specs.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class FileTask:
    """One file to check. `rel` is the display/manifest key, e.g. `preprocessed/nnUNetPlans_2d/a.npz`."""
    path: str
    rel: str
    kind: str
    where: str                      # raw | dataset | config | gt
    case: str | None = None
    labels: tuple[int, ...] | None = None   # allowed segmentation values, None = unknown
    known_blake3: str | None = None         # content hash recorded with the same context, if any
    checks: tuple[str, ...] | None = None   # registered file checks to run (None: all for the kind)
    dataset: str | None = None              # DatasetXXX_Name: results are keyed by (dataset, rel)
    roundtrip: str | None = None            # raw training labels: the plans' configurations (DG405)
    pair: str | None = None                 # raw training image channel 0: JSON [its label's rel, size,
                                            # mtime] (DG406's figures are computed from both)

    def context_key(self) -> str:
        """Anything besides the bytes that the findings depend on (cache invalidation).
        A raw training label's key adds a digest of the planned configurations (DG405's round
        trip depends on them); every other file's key is what it always was."""
        key = f"{self.kind}|{self.where}|{self.case}|{self.labels}"
        if self.pair is not None:
            key = f"{key}|pair:{context_digest(self.pair)}"
        if self.roundtrip is None:
            return key
        return f"{key}|rt:{context_digest(self.roundtrip)}"


@dataclass
class FileResult:
    """What the checks found in one file, per check (the manifest caches it per check version).

    `by_check["read"]` holds what stopped the file from being read at all.
    """
    rel: str
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    blake3: str | None = None
    by_check: dict[str, list[Finding]] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    vanished: bool = False
    same_content: bool = False     # stat changed, bytes did not: recorded results still hold

    @property
    def findings(self) -> list[Finding]:
        return [f for fs in self.by_check.values() for f in fs]


class ValueSummary:
    """Streams array bytes and keeps what the checks need: non-finite count, set of values.

    Bytes may arrive split anywhere; a remainder shorter than one item is carried over.
    Counting values costs a dozen numpy calls per piece, so pieces smaller than GATHER
    are gathered first: a .b2nd segmentation comes as 24 chunks of 50 KB, and per chunk the
    calls cost more than the counting (measured: 1.21 -> 0.86 ms per 24x160x160 case). The
    finite check is one call per piece; gathering would cost it more in copies than it
    saves. `nonfinite` and `counts()` include everything fed so far.
    """
    def __init__(self, dtype, track_values: bool, check_finite: bool):
        import numpy as np

        self.np = np
        self.dtype = np.dtype(dtype)
        self.track_values = track_values and self.dtype.kind in "iub"
        self.check_finite = check_finite and self.dtype.kind in "fc"
        self._nonfinite = 0
        self._counts = None
        self._big_counts: dict[int, int] = {}
        self._rem = b""
        self._gathered: bytearray | None = None     # GATHER bytes, allocated on the first small piece
        self._fill = 0

    @property
    def nonfinite(self) -> int:
        self._flush()
        return self._nonfinite

    def feed(self, buf: bytes | memoryview) -> None:
        if not (self.track_values or self.check_finite):
            return
        buf = memoryview(buf).cast("B")
        n = len(buf)
        if self.track_values and n < GATHER // 2:
            if self._gathered is None:
                self._gathered = bytearray(GATHER)
            if self._fill + n > GATHER:
                self._flush()
            self._gathered[self._fill:self._fill + n] = buf     # a copy: the caller may reuse its buffer
            self._fill += n
            return
        self._flush()
        self._feed(buf)

    def _flush(self) -> None:
        """Summarise the gathered bytes; the buffer is then free for the next ones."""
        if self._fill:
            n, self._fill = self._fill, 0
            self._feed(memoryview(self._gathered)[:n])

    def _feed(self, buf: memoryview) -> None:
        size = self.dtype.itemsize
        if self._rem:
            # complete the split item with the first bytes of this chunk; never re-copy the chunk
            need = size - len(self._rem)
            head, buf = self._rem + bytes(buf[:need]), buf[need:]
            self._rem = b""
            if len(head) < size:
                self._rem = head
                return
            self._consume(self.np.frombuffer(head, dtype=self.dtype))
        n = len(buf) - len(buf) % size
        self._rem = bytes(buf[n:])
        if n:
            self._consume(self.np.frombuffer(buf[:n], dtype=self.dtype))

    def _finite_sum(self, a) -> bool:
        with self.np.errstate(all="ignore"):     # overflow or NaN here is the signal, not a warning
            return bool(self.np.isfinite(self.np.add.reduce(a, axis=None)))

    def _consume(self, a) -> None:
        np = self.np
        if self.check_finite and not self._finite_sum(a):
            # a finite sum proves every value finite in one pass without a temporary; only
            # a NaN, an inf or an overflowing sum lands here, and then we count exactly
            self._nonfinite += int(a.size - np.count_nonzero(np.isfinite(a)))
        if self.track_values and a.size:
            lo, hi = int(a.min()), int(a.max())
            if hi - lo <= SMALL_RANGE:
                # few distinct values (segmentations): one compare per value beats bincount's
                # 8x widening and np.unique's sort by an order of magnitude; the largest value
                # holds whatever the others do not (every value is in [lo, hi]): one pass less
                left = int(a.size)
                for v in range(lo, hi):
                    c = int(np.count_nonzero(a == v))
                    if c:
                        self._big_counts[v] = self._big_counts.get(v, 0) + c
                        left -= c
                self._big_counts[hi] = self._big_counts.get(hi, 0) + left
            elif self.dtype.itemsize <= 2:
                if not a.dtype.isnative:            # a view of the other byte order would count swapped values
                    a = a.astype(a.dtype.newbyteorder("="))
                u = a.view(np.dtype(f"u{self.dtype.itemsize}"))
                c = np.bincount(u, minlength=256 ** self.dtype.itemsize)
                self._counts = c if self._counts is None else self._counts + c
            else:
                vals, cnt = np.unique(a, return_counts=True)
                for v, c in zip(vals.tolist(), cnt.tolist()):
                    self._big_counts[int(v)] = self._big_counts.get(int(v), 0) + int(c)

    def counts(self) -> dict[int, int]:
        """Voxel count per value seen."""
        self._flush()
        out = dict(self._big_counts)
        if self._counts is not None:
            np = self.np
            idx = np.nonzero(self._counts)[0]
            bits = 8 * self.dtype.itemsize
            vals = np.where(idx >= 2 ** (bits - 1), idx - 2 ** bits, idx) if self.dtype.kind == "i" else idx
            for v, i in zip(vals.tolist(), idx.tolist()):
                out[int(v)] = out.get(int(v), 0) + int(self._counts[i])
        return dict(sorted(out.items()))

    def values(self) -> list[int]:
        return list(self.counts())


_SIMPLE_HEADER = re.compile(
    rb"\{'descr': '([<>|=][a-zA-Z]\d{1,2})', 'fortran_order': (True|False), "
    rb"'shape': \(((?:\d+, )*\d*|\d+,)\), \}\s*\n")


def parse_npy_header(head: bytes):
    """(dtype, shape, fortran_order, header_len) from the first bytes of a .npy stream.

    The header numpy itself writes for a plain array is matched directly (numpy's own
    parser runs `ast.literal_eval`, a compile per file: 0.1 s of a 200-case scan);
    anything else goes through numpy's parser.
    """
    import io

    import numpy as np

    if head[:8] == b"\x93NUMPY\x01\x00" and len(head) >= 10:
        hlen = 10 + int.from_bytes(head[8:10], "little")
        m = _SIMPLE_HEADER.fullmatch(head[10:hlen])
        if m is not None:
            shape = tuple(int(x) for x in m.group(3).split(b",") if x.strip())
            return np.dtype(m.group(1).decode()), shape, m.group(2) == b"True", hlen

    f = io.BytesIO(head)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=1 << 20)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=1 << 20)
    else:  # pragma: no cover - numpy raises before this
        raise ValueError(f"unsupported .npy version {version}")
    return dtype, tuple(int(s) for s in shape), fortran, f.tell()


def expected_nbytes(dtype, shape) -> int:
    n = dtype.itemsize
    for s in shape:
        n *= s
    return n


def values_outside(values: list[int], labels: tuple[int, ...] | None) -> list[int]:
    """Segmentation values not declared in dataset.json (-1 is nnU-Net's outside-mask marker)."""
    if labels is None:
        return []
    allowed = set(labels) | {-1}
    return [v for v in values if v not in allowed]


def summary_findings(task: FileTask, summary: "ValueSummary", role: str, facts: dict) -> list[Finding]:
    """DG202 for NaN/inf in data, DG210 for undeclared segmentation values; records seg_values."""
    out = []
    if summary.nonfinite:
        out.append(finding("DG202", task.rel, f"'{role}' holds {summary.nonfinite} non-finite values (NaN/inf)",
                           case=task.case, fix=Fix.REPREPROCESS))
    if role == "seg" and summary.track_values:
        counts = summary.counts()
        facts["seg_values"] = list(counts)
        facts["label_voxels"] = {str(k): v for k, v in counts.items()}
        bad = values_outside(facts["seg_values"], task.labels)
        if bad:
            out.append(finding("DG210", task.rel, f"segmentation holds values {bad} not declared in dataset.json",
                               case=task.case, fix=Fix.REPREPROCESS))
    return out
