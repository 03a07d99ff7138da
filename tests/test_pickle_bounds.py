"""The safe unpickler's bounds, and a clean scan meaning what nnU-Net will read (issue 27, 2 and 3).

- Three small files that crashed, blew up or hung the scan (a million-deep tuple, one payload
  copied 250 times, one big frozenset built 300,000 times) are DG204 findings naming the limit,
  through the CLI under the audit hook, in a child process whose time and peak memory are read.
- Nine properties files that pickletools' decoder and CPython's C unpickler (nnU-Net's
  `pickle.load`) read differently are DG204 findings that say so.
- A differential test: generated opcode streams over the allowed names and the opcodes the loader
  runs; for every stream the safe loader accepts, `pickle.loads` (and `pickle.load` of a file) in a
  child process succeeds and gives an equal value.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import make_tiny_pre, props
from dataguard.checks import safe_pickle
from dataguard.checks.base import FileTask
from dataguard.checks.pickles import check_pkl
from pickle_corpus import (bytearray_copies_bomb, c_unpickler_mismatches, deep_tuple_bomb,
                           frozenset_work_bomb, sg, su)

TESTS = Path(__file__).parent
CFG = "nnUNetPlans_3d_fullres"
TASK = FileTask("x.pkl", "preprocessed/c/x.pkl", "pkl", "config", "x")
MAX_SECONDS = 5          # the scan of a whole tiny dataset with one bomb in it
MAX_RSS_MB = 500         # the child's peak: interpreter, numpy, dataguard, the file and what the loader built


# --- running a scan in a child: a crash fails the test, time and peak memory are measured ---------------
# the child's own peak (VmHWM, reset at exec): ru_maxrss of RUSAGE_SELF keeps the peak of the forked
# parent (pytest, 1+ GB once models are trained) across exec
_PEAK = r"""
import resource
def _hwm_kb():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""
_SCAN_CHILD = _PEAK + r"""
import contextlib, io, json, resource, sys, time
sys.path[:0] = [sys.argv[1]]
from audit import watch
import dataguard.cli
warm, ds, man0, man = sys.argv[2:6]
args = ["--format", "json", "--no-progress"]
with contextlib.redirect_stdout(io.StringIO()):         # warm up: lazy imports compile generated code
    dataguard.cli.main(["scan", warm, "--manifest-dir", man0, *args])
out = io.StringIO()
t = time.perf_counter()
with watch(allow_writes=[man]) as events, contextlib.redirect_stdout(out):
    rc = dataguard.cli.main(["scan", ds, "--manifest-dir", man, *args])
seconds = time.perf_counter() - t
rss = max(_hwm_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"rc": rc, "events": events, "seconds": seconds, "rss_mb": rss / 1024,
                  "findings": json.loads(out.getvalue())["findings"]}))
"""


def scan_in_child(tmp_path: Path, pkl: bytes, timeout: float = 120) -> dict:
    """Scan a tiny dataset whose case_0.pkl is `pkl`, through the CLI under the audit hook, in a child
    process: its exit code (a segfault is -11), rc, audit events, seconds, peak RSS and case_0's findings."""
    warm = make_tiny_pre(tmp_path / "warm")
    ds = make_tiny_pre(tmp_path / "bomb")
    (ds / CFG / "case_0.pkl").write_bytes(pkl)
    proc = subprocess.run([sys.executable, "-c", _SCAN_CHILD, str(TESTS), str(warm), str(ds), str(tmp_path / "m0"),
                           str(tmp_path / "m")], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"the scan's process exited {proc.returncode}: {proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["case_0"] = [f for f in out.pop("findings") if f.get("case") == "case_0" or "case_0" in f.get("path", "")]
    return out


def assert_limit_finding(result: dict, limit: str) -> None:
    assert result["events"] == [], result["events"]
    assert result["rc"] == 1, result
    msgs = [f["message"] for f in result["case_0"] if f["code"] == "DG204"]
    assert any("limit reached" in m and limit in m for m in msgs), result["case_0"]
    assert result["seconds"] < MAX_SECONDS, result["seconds"]
    assert result["rss_mb"] < MAX_RSS_MB, result["rss_mb"]


def test_a_million_deep_tuple_is_a_finding_not_a_segfault(tmp_path):
    """The issue's file: `}` `)` + TUPLE1 x 10**6 + `K\\x00s.` killed the scan (exit 139, hashing
    the tuple as a dict key recursed in C)."""
    data = deep_tuple_bomb()
    assert data == b"\x80\x04}" + b")" + b"\x85" * 10 ** 6 + b"K\x00s."
    assert_limit_finding(scan_in_child(tmp_path, data), f"nesting deeper than {safe_pickle.MAX_DEPTH}")


def test_one_payload_copied_250_times_is_a_finding_not_2_gb(tmp_path):
    """An 8 MiB payload copied 250 times by builtins.bytearray in an otherwise valid properties
    file: 2.0 GB and a clean scan before."""
    data = bytearray_copies_bomb()
    assert len(data) < 9 << 20
    result = scan_in_child(tmp_path, data)
    assert_limit_finding(result, "bytes")
    msg = next(f["message"] for f in result["case_0"] if f["code"] == "DG204")
    assert f"builds more than {safe_pickle.BYTES_PER_FILE_BYTE * len(data):,} bytes" in msg, msg


def test_a_frozenset_built_300000_times_is_a_finding_not_a_hang(tmp_path):
    """frozenset() of one 100k list, 300,000 times (each popped): past 2 minutes before."""
    result = scan_in_child(tmp_path, frozenset_work_bomb())
    assert_limit_finding(result, "steps of work")


# --- more of each family, straight at the loader (a child each: a regression must not hang pytest) -------
_LOAD_CHILD = _PEAK + r"""
import json, resource, sys, time
from dataguard.checks import safe_pickle
data = open(sys.argv[1], "rb").read()
t = time.perf_counter()
try:
    safe_pickle.loads(data)
    verdict = "accepted"
except Exception as e:
    verdict = f"{type(e).__name__}: {e}"
print(json.dumps({"verdict": verdict, "seconds": time.perf_counter() - t, "rss_mb": _hwm_kb() / 1024}))
"""


def load_in_child(tmp_path: Path, data: bytes, timeout: float = 60) -> dict:
    path = tmp_path / "x.pkl"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(path)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _tuple_dag(levels: int) -> bytes:
    """T0 = (), T(k+1) = (Tk, Tk): `levels` opcodes pairs, 2**levels items when hashed."""
    return pickle.EMPTY_TUPLE + (pickle.DUP + pickle.TUPLE2) * levels


def _colliding_ints(n: int) -> list[int]:
    """Distinct ints with one hash: k * (2**61 - 1) + 1 (CPython reduces int hashes modulo 2**61 - 1)."""
    return [k * (2 ** 61 - 1) + 1 for k in range(1, n + 1)]


def _long1(i: int) -> bytes:
    raw = i.to_bytes((i.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


LOADER_BOMBS = {
    # nesting: a list 300,000 deep, from as many MARKs (no hash, no call: only the value is deep)
    "deep-list": (pickle.PROTO + b"\x04" + pickle.MARK * 300_000 + pickle.EMPTY_LIST + pickle.LIST * 300_000
                  + pickle.STOP, "nesting deeper than"),
    # nesting: a deep tuple as a set member (hashed by ADDITEMS) and as a frozenset member
    "deep-tuple-in-set": (pickle.PROTO + b"\x04" + pickle.EMPTY_SET + pickle.MARK + pickle.EMPTY_TUPLE
                          + pickle.TUPLE1 * 100_000 + pickle.ADDITEMS + pickle.STOP, "nesting deeper than"),
    # work: a tuple of 2**80 items when hashed, 160 opcodes, as a dict key
    "tuple-dag-key": (pickle.PROTO + b"\x04" + pickle.EMPTY_DICT + _tuple_dag(80) + pickle.NONE + pickle.SETITEM
                      + pickle.STOP, "steps of work"),
    # work: 40,000 distinct int keys of one hash: every insertion compares with all the earlier ones
    "colliding-int-keys": (pickle.PROTO + b"\x04" + pickle.EMPTY_DICT + pickle.MARK
                           + b"".join(_long1(i) + pickle.NONE for i in _colliding_ints(40_000))
                           + pickle.SETITEMS + pickle.STOP, "steps of work"),
    # bytes: a million empty sets (224 bytes each) from a million one-byte opcodes
    "empty-set-flood": (pickle.PROTO + b"\x04" + pickle.MARK + pickle.EMPTY_SET * 10 ** 6 + pickle.LIST
                        + pickle.STOP, "bytes"),
    # work (before 3 GB of copies): list() of one 200k list, 2,000 times, each copy kept
    "list-copies": (pickle.PROTO + b"\x04" + sg("builtins", "list") + pickle.MEMOIZE + pickle.POP + pickle.EMPTY_LIST
                    + pickle.MARK + pickle.NONE * 200_000 + pickle.APPENDS + pickle.MEMOIZE + pickle.POP + pickle.MARK
                    + (pickle.BINGET + b"\x00" + pickle.BINGET + b"\x01" + pickle.TUPLE1 + pickle.REDUCE) * 2_000
                    + pickle.LIST + pickle.STOP, "steps of work"),
}


@pytest.mark.parametrize("name", sorted(LOADER_BOMBS))
def test_each_limit_stops_its_family_fast(tmp_path, name):
    data, limit = LOADER_BOMBS[name]
    out = load_in_child(tmp_path, data)
    assert out["verdict"].startswith("Malformed: limit reached") and limit in out["verdict"], out
    assert out["seconds"] < MAX_SECONDS, out
    assert out["rss_mb"] < MAX_RSS_MB, out


def test_plain_data_of_every_size_is_under_the_limits():
    """What nnU-Net writes, large, and dense plain data (many small containers and keys) still loads,
    through both paths and both back ends, equal to pickle's own load."""
    rng = np.random.default_rng(0)
    big = {**props(), "class_locations": {k: rng.integers(0, 500, (100_000, 4)) for k in (1, 2)}}
    dense = {"ints": {i: [i, float(i), str(i)] for i in range(20_000)}, "tuples": {(i, i + 1): None for i in range(10_000)},
             "sets": [{i, -i} for i in range(5_000)], "nested": [[[[i]]] for i in range(5_000)]}
    deep = [1]
    for i in range(safe_pickle.MAX_DEPTH - 2):      # {"deep": ...} nests exactly MAX_DEPTH deep
        deep = [deep] if i % 2 else (deep,)
    for value in (big, dense, {"deep": deep}):
        for proto in (2, 4, 5):
            data = pickle.dumps(value, protocol=proto)
            assert _differs(safe_pickle.loads_numpy(data), pickle.loads(data), light=False) is None
            assert type(safe_pickle.loads(data)) is dict


# --- what pickle.loads reads differently ---------------------------------------------------------------
MISMATCHES = c_unpickler_mismatches()
_REPORT_CHILD = r"""
import pickle, sys, warnings
warnings.simplefilter("ignore")
data = sys.stdin.buffer.read()
try:
    value = pickle.loads(data)
except Exception as e:
    print("error", type(e).__name__)
else:
    print("value", pickle.dumps(value, protocol=4).hex())
"""


@pytest.mark.parametrize("name", sorted(MISMATCHES))
def test_what_pickle_loads_reads_otherwise_is_a_finding(name):
    """Each file passed the scan before: six fail in pickle.loads, three load to other values (a text
    INT with a leading 0 is decimal to pickletools, octal to the C unpickler)."""
    data, kind, source = MISMATCHES[name]
    proc = subprocess.run([sys.executable, "-c", _REPORT_CHILD], input=data, capture_output=True, timeout=60)
    what, _, rest = proc.stdout.decode().strip().partition(" ")
    if kind == "fails":
        assert what == "error", f"pickle.loads read {name}"
    else:                                         # it loads, to something else than the file's decoded value
        assert what == "value" and _differs(source, pickle.loads(bytes.fromhex(rest)), light=False)
    with pytest.raises(safe_pickle.Malformed, match="pickle.loads"):
        safe_pickle.loads(data)
    with pytest.raises(safe_pickle.Malformed, match="pickle.loads"):
        safe_pickle.loads_numpy(data)
    findings, facts = check_pkl(TASK, data)
    assert [f.code for f in findings] == ["DG204"] and "pickle.loads" in findings[0].message, findings
    assert facts == {}


def test_the_scan_reports_each_of_them(tmp_path, capsys):
    from audit import watch

    import dataguard.cli

    warm = make_tiny_pre(tmp_path / "warm")
    dataguard.cli.main(["scan", str(warm), "--manifest-dir", str(tmp_path / "m0"), "--format", "json",
                        "--no-progress"])
    names = sorted(MISMATCHES)
    ds = make_tiny_pre(tmp_path, case_labels={f"case_{i}": (1, 2, 3) for i in range(len(names))})
    for i, name in enumerate(names):
        (ds / CFG / f"case_{i}.pkl").write_bytes(MISMATCHES[name][0])
    capsys.readouterr()
    with watch(allow_writes=[tmp_path / "m"]) as events:
        rc = dataguard.cli.main(["scan", str(ds), "--manifest-dir", str(tmp_path / "m"), "--format", "json",
                                 "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    assert events == [] and rc == 1
    for i, name in enumerate(names):
        msgs = [f["message"] for f in out["findings"] if f.get("case") == f"case_{i}" and f["code"] == "DG204"]
        assert any("pickle.loads" in m for m in msgs), (name, msgs)


def test_python_writes_only_what_passes():
    """The canonical forms: every protocol of Python's own pickler, the text protocols included."""
    value = {**props(), "floats": [0.1, -2.5e-300, 1e300, 1e-05, -0.0], "ints": [0, 1, -1, 2 ** 31, -(2 ** 70), True],
             "strs": ["a'b\"c\\", "\u00e9\n", "\ud7ff"], "bytes": [b"", b"\x00\xff'\\"], "set": {1, 2}, "fs": frozenset({3}),
             "od": collections.OrderedDict(a=1), "dtypes": [np.dtype(">i4"), np.dtype("S3"), np.dtype("U2")],
             "arrays": [np.arange(6).reshape(2, 3), np.asfortranarray(np.ones((2, 2))), np.array(3.5)]}
    for proto in range(6):
        data = pickle.dumps(value, protocol=proto)
        assert _differs(safe_pickle.loads_numpy(data), pickle.loads(data), light=False) is None, proto
        assert _differs(safe_pickle.loads(data), pickle.loads(data), light=True) is None, proto


# --- the differential test ------------------------------------------------------------------------------
_MUTABLE = (list, dict, collections.OrderedDict, set, bytearray, np.ndarray, safe_pickle.Array)


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _resolve(token):
    """The object pickle.loads gives for an allowed (module, name)."""
    import importlib

    module = "builtins" if token.module == "__builtin__" else token.module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(module), token.name)


def _light_dtype_differs(a, b) -> str | None:
    """A light Dtype stand-in against numpy's dtype: kind, size and effective byte order."""
    if not isinstance(b, np.dtype):
        return f"a Dtype stand-in where pickle.loads gives {type(b).__name__}"
    kind, size = ("b", 1) if a.spec == "b1" else (a.spec[0], int(a.spec[1:]))
    order = "|" if size == 1 else ("<" if a.order in "=<" and sys.byteorder == "little" or a.order == "<" else ">")
    if (b.kind, b.itemsize, b.str[0]) != (kind, size, order):
        return f"dtype {a.order}{a.spec} where pickle.loads gives {b.str}"
    return None


def _differs(a, b, light: bool, pairs: dict | None = None, path: str = "value") -> str | None:
    """None when `a` (the safe loader's value) is what pickle.loads gave (`b`), else where they differ.

    Exact types (1 is not True, 1.0 is not 1), floats by their bits (NaN, -0.0), dict order, numpy
    arrays by dtype, shape, memory order and bytes, dtypes by their pickled state, and the same
    sharing and cycles (a bijection between the mutable objects of both). `light`: `loads`' stand-ins
    (Array, Dtype, Python scalars for numpy's) are compared for what they model."""
    pairs = {} if pairs is None else pairs
    ta, tb = type(a), type(b)
    if ta is safe_pickle._Global:
        return None if b is _resolve(a) else f"{path}: the global {a!r} is {b!r} to pickle.loads"
    if ta in _MUTABLE:
        if id(a) in pairs:
            return None if pairs[id(a)] is b else f"{path}: shared or cyclic differently"
        pairs[id(a)] = b
    if light and ta is safe_pickle.Dtype:
        why = _light_dtype_differs(a, b)
        return f"{path}: {why}" if why else None
    if light and ta is safe_pickle.Array:
        if tb is not np.ndarray:
            return f"{path}: an Array stand-in where pickle.loads gives {tb.__name__}"
        if a.shape != b.shape:
            return f"{path}: shape {a.shape} vs {b.shape}"
        why = _light_dtype_differs(a.dtype, b.dtype)
        if why:
            return f"{path}: {why}"
        if a._items is not None:
            return _differs(list(a._items), b.reshape(-1).tolist(), False, {}, path + ".items")
        return None
    if light and isinstance(b, np.generic) and ta in (bool, int, float, complex):
        b, tb = b.item(), type(b.item())          # the stand-ins decode numpy's scalars to Python's
    if ta is not tb:
        return f"{path}: {ta.__name__} {a!r:.80} vs {tb.__name__} {b!r:.80}"
    if ta is float:
        return None if _bits(a) == _bits(b) else f"{path}: {a!r} vs {b!r}"
    if ta is complex:
        return None if (_bits(a.real), _bits(a.imag)) == (_bits(b.real), _bits(b.imag)) else f"{path}: {a} vs {b}"
    if ta in (tuple, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            why = _differs(x, y, light, pairs, f"{path}[{i}]")
            if why:
                return why
        return None
    if ta in (dict, collections.OrderedDict):
        if len(a) != len(b):
            return f"{path}: {len(a)} keys vs {len(b)}"
        for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items())):
            why = (_differs(ka, kb, light, pairs, f"{path}.key{i}")
                   or _differs(va, vb, light, pairs, f"{path}[{ka!r:.40}]"))
            if why:
                return why
        return None
    if ta in (set, frozenset):
        if len(a) != len(b):
            return f"{path}: {len(a)} members vs {len(b)}"
        rest = list(b)
        for x in a:
            match = next((i for i, y in enumerate(rest) if _differs(x, y, light, {}, path) is None), None)
            if match is None:
                return f"{path}: {x!r:.80} has no equal in pickle.loads' set"
            rest.pop(match)
        return None
    if ta is np.ndarray:
        # memory order, not strides: numpy's own _frombuffer gives a view, whose strides along an empty
        # or one-long axis are not a copy's
        if (a.dtype.str, a.shape, a.flags.c_contiguous, a.flags.f_contiguous) != (
                b.dtype.str, b.shape, b.flags.c_contiguous, b.flags.f_contiguous):
            return f"{path}: array {a.dtype.str}{a.shape} vs {b.dtype.str}{b.shape} (or its memory order)"
        if type(a.dtype) is not type(b.dtype) or a.tobytes(order="A") != b.tobytes(order="A"):
            return f"{path}: array data"
        return None
    if isinstance(a, np.dtype):
        return None if a.__reduce__() == b.__reduce__() else f"{path}: dtype {a!r} vs {b!r}"
    if isinstance(a, np.generic):
        if a.dtype.__reduce__() != b.dtype.__reduce__() or a.tobytes() != b.tobytes():
            return f"{path}: numpy scalar {a!r} vs {b!r}"
        return None
    return None if a == b else f"{path}: {a!r:.80} vs {b!r:.80}"


def _verdict(data: bytes) -> dict:
    """In the worker: what each safe loader makes of `data`, and whether pickle.loads agrees."""
    ours = {}
    for load in (safe_pickle.loads, safe_pickle.loads_numpy):
        try:
            ours[load.__name__] = load(data)
        except pickle.UnpicklingError:             # Refused and Malformed: a refusal
            continue
        except Exception as e:  # noqa: BLE001 - anything else escaping the safe loader is a bug
            return {"accepted": [], "problem": f"{load.__name__} raised {type(e).__name__}: {e}"}
    if not ours:
        return {"accepted": []}
    for reader in ("pickle.loads", "pickle.load"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = pickle.loads(data) if reader == "pickle.loads" else pickle.load(io.BytesIO(data))
        except Exception as e:  # noqa: BLE001
            return {"accepted": sorted(ours), "problem": f"{reader} failed: {type(e).__name__}: {e!s:.200}"}
        for name, value in ours.items():
            why = _differs(value, theirs, light=name == "loads")
            if why:
                return {"accepted": sorted(ours), "problem": f"{name} and {reader} differ at {why}"}
    return {"accepted": sorted(ours)}


def _serve() -> None:
    """The worker: length-prefixed streams in, one JSON verdict per line out."""
    inp, out = sys.stdin.buffer, sys.stdout
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        out.write(json.dumps(_verdict(inp.read(int.from_bytes(head, "little")))) + "\n")
        out.flush()


class Worker:
    """One child process for many streams; restarted when a stream killed it."""

    def __init__(self):
        self.proc = None

    def ask(self, data: bytes, timeout: float = 30) -> dict:
        import select

        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, cwd=TESTS, env={**os.environ, "PYTHONPATH": str(TESTS)})
        self.proc.stdin.write(len(data).to_bytes(4, "little") + data)
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.close()
            return {"accepted": ["?"], "problem": f"the child died or hung ({'no answer' if ready else 'timeout'})"}
        return json.loads(line)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


# streams: the allowed names and every opcode the loader runs, in well-formed values and in soup
def _b(code: bytes, payload: bytes, width: int) -> bytes:
    return code + len(payload).to_bytes(width, "little") + payload


def _text(code: bytes, text: bytes) -> bytes:
    return code + text + b"\n"


TEXT_INTS = [b"0", b"1", b"00", b"01", b"-0", b"-00", b"010", b"007", b"+5", b" 5", b"5 ", b"1_0", b"0x10", b"-1",
             b"2147483648", b"9223372036854775808", b"-9223372036854775809", b"08", b"", b"1.0"]
TEXT_LONGS = [b"0L", b"0", b"5L", b"-5L", b"010L", b"010", b"+5L", b" 5L", b"0x5L", b"1_0L", b"LL", b"L", b"5LL",
              b"123456789012345678901234567890L", b"-0L", b"00L"]
TEXT_FLOATS = [b"1.5", b"-0.0", b"1e500", b"-1e500", b"inf", b"-inf", b"nan", b"1e-05", b"0.1", b".5", b"5.", b"1E5",
               b"1_0.0", b" 1.0", b"1.0 ", b"0x1p3", b"1e308", b"2.5e-324", b"1e-400", b"01.5", b"+1.5", b"infinity"]
TEXT_INDICES = [b"0", b"1", b"2", b"01", b"00", b"+1", b"-1", b" 1", b"1_0", b"3", b"010"]
STRINGS = [b"'abc'", b"'", b"\"q\"", b"'a\\x41'", b"'\\xe9'", b"'\xe9'", b"'\\q'", b"'a'b'", b"''", b"\"'",
           b"'\\n\\t\\\\'"]
WORDS = ["f8", "i8", "u1", "b1", "?", "<f8", ">i4", "|b1", "=i2", "f2", "c16", "S3", "U4", "S0", "U", "O", "V8", "M8",
         "C", "F", "latin1", "latin-1", "utf-8", "b", "<", ">", "|", "=", "x", "", "\u00e9"]
_ALLOWED = sorted(safe_pickle.ALLOWED)


def _template_values() -> list:
    return [np.arange(3).astype(t) for t in ("<f8", ">f8", "f4", "f2", "i8", ">i4", "i2", "i1", "u8", "u4", "u2",
                                            "u1", "?", "c8", "c16", "S3", "U2")] + [
        np.array(2.5), np.zeros((2, 0)), np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.arange(70.0),
        np.float64(1.5), np.int32(-7), np.bool_(True), np.float16(0.5), np.complex64(1 + 2j), np.uint8(200),
        np.dtype("f8"), np.dtype(">i2"), np.dtype("S5"), np.dtype("U3"), np.dtype("?"), np.dtypes.Float64DType,
        bytearray(b"ab"), b"\x00\xff", collections.OrderedDict(a=1), {1, 2}, frozenset({(1, 2)}), complex(1, -0.0),
        slice(1, None, 2), (1.0, 2.0, 3.0), "\u00e9"]


def _templates() -> list[tuple[bytes, list[bytes]]]:
    """Each value's opcodes (no PROTO, FRAME or STOP) as pickle writes them, protocols 0-5."""
    import pickletools

    out = []
    for value in _template_values():
        for proto in range(6):
            try:
                data = pickle.dumps(value, protocol=proto)
            except Exception:  # noqa: BLE001
                continue
            ops = [(op.name, pos) for op, _, pos in pickletools.genops(data)]
            ends = [pos for _, pos in ops[1:]] + [len(data)]
            pieces = [data[pos:end] for (name, pos), end in zip(ops, ends) if name not in ("PROTO", "FRAME", "STOP")]
            out.append((b"".join(pieces), pieces))
    return out


TEMPLATES = _templates()
_PUSHERS = (pickle.BININT1, pickle.BININT, pickle.BININT2, pickle.SHORT_BINUNICODE, pickle.BINUNICODE, pickle.NONE,
            pickle.NEWTRUE, pickle.NEWFALSE, pickle.SHORT_BINBYTES, pickle.BINBYTES, pickle.BINFLOAT, pickle.INT,
            pickle.LONG, pickle.FLOAT, pickle.UNICODE, pickle.STRING, pickle.LONG1)

atoms = st.one_of(
    st.sampled_from([pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE, pickle.EMPTY_LIST, pickle.EMPTY_TUPLE,
                     pickle.EMPTY_DICT, pickle.EMPTY_SET]),
    st.integers(-(2 ** 31), 2 ** 31 - 1).map(lambda i: pickle.BININT + i.to_bytes(4, "little", signed=True)),
    st.integers(0, 255).map(lambda i: pickle.BININT1 + bytes([i])),
    st.integers(0, 65535).map(lambda i: pickle.BININT2 + i.to_bytes(2, "little")),
    st.binary(max_size=9).map(lambda b: pickle.LONG1 + bytes([len(b)]) + b),
    st.binary(max_size=9).map(lambda b: _b(pickle.LONG4, b, 4)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: pickle.BINFLOAT + struct.pack(">d", f)),
    st.sampled_from(TEXT_INTS).map(lambda t: _text(pickle.INT, t)),
    st.integers(-(10 ** 20), 10 ** 20).map(lambda i: _text(pickle.INT, str(i).encode())),
    st.sampled_from(TEXT_LONGS).map(lambda t: _text(pickle.LONG, t)),
    st.sampled_from(TEXT_FLOATS).map(lambda t: _text(pickle.FLOAT, t)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: _text(pickle.FLOAT, repr(f).encode())),
    st.sampled_from(WORDS).map(lambda s: su(s)),
    st.text(max_size=6).map(lambda s: _b(pickle.BINUNICODE, s.encode("utf-8", "surrogatepass"), 4)),
    st.binary(max_size=6).map(lambda b: _b(pickle.SHORT_BINUNICODE, b, 1)),       # invalid UTF-8, surrogates
    st.binary(max_size=6).map(lambda b: _b(pickle.BINUNICODE8, b, 8)),
    st.sampled_from([b"abc", b"\\u00e9", b"\\u12", b"x\\y", b"\\U0001F600", b"\xe9"]).map(
        lambda t: _text(pickle.UNICODE, t)),
    st.binary(max_size=8).map(lambda b: _b(pickle.SHORT_BINBYTES, b, 1)),
    st.binary(max_size=8).map(lambda b: _b(pickle.BINBYTES, b, 4)),
    st.binary(max_size=8).map(lambda b: _b(pickle.BINBYTES8, b, 8)),
    st.binary(max_size=8).map(lambda b: _b(pickle.BYTEARRAY8, b, 8)),
    st.binary(max_size=6).map(lambda b: _b(pickle.SHORT_BINSTRING, b, 1)),
    st.binary(max_size=6).map(lambda b: _b(pickle.BINSTRING, b, 4)),
    st.sampled_from(STRINGS).map(lambda t: _text(pickle.STRING, t)),
    st.integers(0, 12).map(lambda i: pickle.BINGET + bytes([i])),
    st.sampled_from([0, 1, 2, 5, 300, 0xFFFFFFF0]).map(lambda i: pickle.LONG_BINGET + i.to_bytes(4, "little")),
    st.sampled_from(TEXT_INDICES).map(lambda t: _text(pickle.GET, t)),
    st.sampled_from(TEMPLATES).map(lambda t: t[0]),
)

globals_ = st.one_of(
    st.sampled_from(_ALLOWED).map(lambda mn: sg(*mn)),
    st.sampled_from(_ALLOWED).map(lambda mn: _text(pickle.GLOBAL, mn[0].encode() + b"\n" + mn[1].encode())),
    st.sampled_from([b"numpy\ndt\\x79pe", b"__builtin\\x5f_\nset", b"builtins\nset ", b"builtins \nset",
                     b"numpy\ndtype\\", b"numpy.\ndtype", b"numpy\n_frombuffer"]).map(lambda t: _text(pickle.GLOBAL, t)),
)


def _memo_op(i: int) -> st.SearchStrategy:
    return st.sampled_from([pickle.MEMOIZE, pickle.BINPUT + bytes([i % 256]), pickle.LONG_BINPUT + i.to_bytes(4, "little"),
                            _text(pickle.PUT, str(i).encode()), _text(pickle.PUT, b"0" + str(i).encode()),
                            pickle.LONG_BINPUT + (0xFFFFFFF0).to_bytes(4, "little"), pickle.DUP + pickle.POP])


def _extend(kids):
    """Well-formed compositions: each pushes one value from values that each push one."""
    pairs = st.lists(st.tuples(kids, kids), max_size=3).map(lambda ps: b"".join(k + v for k, v in ps))
    many = st.lists(kids, max_size=4).map(b"".join)
    return st.one_of(
        st.tuples(many, st.sampled_from([pickle.TUPLE, pickle.LIST, pickle.FROZENSET])).map(
            lambda t: pickle.MARK + t[0] + t[1]),
        st.lists(kids, min_size=1, max_size=3).map(lambda ks: b"".join(ks) + [pickle.TUPLE1, pickle.TUPLE2,
                                                                               pickle.TUPLE3][len(ks) - 1]),
        many.map(lambda m: pickle.EMPTY_LIST + pickle.MARK + m + pickle.APPENDS),
        kids.map(lambda k: pickle.EMPTY_LIST + k + pickle.APPEND),
        pairs.map(lambda p: pickle.EMPTY_DICT + pickle.MARK + p + pickle.SETITEMS),
        pairs.map(lambda p: pickle.MARK + p + pickle.DICT),
        st.tuples(kids, kids).map(lambda kv: pickle.EMPTY_DICT + kv[0] + kv[1] + pickle.SETITEM),
        many.map(lambda m: pickle.EMPTY_SET + pickle.MARK + m + pickle.ADDITEMS),
        st.tuples(globals_, many).map(lambda gm: gm[0] + pickle.MARK + gm[1] + pickle.TUPLE + pickle.REDUCE),
        st.tuples(kids, kids).map(lambda ab: ab[0] + ab[1] + pickle.BUILD),
        st.tuples(kids, st.integers(0, 20).flatmap(_memo_op)).map(lambda km: km[0] + km[1]),
        st.tuples(kids, kids).map(lambda ab: ab[0] + ab[1] + pickle.POP),
        st.tuples(kids, kids).map(lambda ab: ab[0] + pickle.MARK + ab[1] + pickle.POP_MARK),
        globals_,
        st.tuples(st.sampled_from(TEMPLATES), st.integers(0, 10 ** 6), kids).map(_mutated),
    )


def _mutated(t) -> bytes:
    """A template with one of its pushed atoms replaced by another value."""
    (_, pieces), i, new = t
    spots = [j for j, p in enumerate(pieces) if p[:1] in _PUSHERS]
    if not spots:
        return b"".join(pieces)
    j = spots[i % len(spots)]
    return b"".join(pieces[:j]) + new + b"".join(pieces[j + 1:])


values = st.recursive(atoms, _extend, max_leaves=12)
_header = st.sampled_from([b"", *(pickle.PROTO + bytes([p]) for p in (0, 1, 2, 3, 4, 5, 5, 4, 6, 99))])


def _framed(body: bytes, mode: int) -> bytes:
    """`body` (ending with STOP) in frames: none, exact, running past the end, short, nested, two."""
    frame = lambda n: pickle.FRAME + n.to_bytes(8, "little")    # noqa: E731
    half = len(body) // 2
    return [body, frame(len(body)) + body, frame(len(body) + 7) + body, frame(max(len(body) - 1, 0)) + body,
            frame(len(body) + 9) + frame(len(body)) + body, frame(half) + body[:half] + frame(len(body) - half)
            + body[half:], frame(len(body)) + body + b"trailing"][mode]


_good_header = st.sampled_from([b"", *(pickle.PROTO + bytes([p]) for p in range(6))])
_good_frames = st.sampled_from([0, 0, 1, 1, 5, 6])
NUMPY_TEMPLATES = [t for t in TEMPLATES if b"numpy" in t[0]]
_numpy_whole = st.sampled_from(NUMPY_TEMPLATES).map(lambda t: t[0])
_numpy_value = st.one_of(_numpy_whole, _numpy_whole, _numpy_whole,
                         st.lists(_numpy_whole, min_size=2, max_size=4).map(lambda vs: pickle.MARK + b"".join(vs)
                                                                           + pickle.LIST),
                         st.tuples(st.sampled_from(NUMPY_TEMPLATES), st.integers(0, 10 ** 6), atoms).map(_mutated),
                         st.tuples(st.sampled_from(NUMPY_TEMPLATES), st.integers(0, 10 ** 6), values).map(_mutated))
_numpy_stream = st.tuples(_good_header, _numpy_value, _good_frames).map(
    lambda t: t[0] + _framed(t[1] + pickle.STOP, t[2]))
streams = st.one_of(
    st.tuples(_good_header, values, _good_frames).map(lambda t: t[0] + _framed(t[1] + pickle.STOP, t[2])),
    _numpy_stream, _numpy_stream,
    st.tuples(_good_header, values, _good_frames).map(lambda t: t[0] + _framed(t[1] + pickle.STOP, t[2])),
    st.tuples(_header, values, st.integers(0, 6)).map(lambda t: t[0] + _framed(t[1] + pickle.STOP, t[2])),
    st.tuples(_header, st.lists(st.one_of(atoms, globals_, st.sampled_from([
        pickle.MARK, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.LIST, pickle.DICT,
        pickle.APPEND, pickle.APPENDS, pickle.SETITEM, pickle.SETITEMS, pickle.ADDITEMS, pickle.FROZENSET, pickle.POP,
        pickle.POP_MARK, pickle.DUP, pickle.MEMOIZE, pickle.REDUCE, pickle.BUILD, pickle.BINPUT + b"\x01",
        pickle.STACK_GLOBAL])), max_size=25)).map(lambda t: t[0] + b"".join(t[1]) + pickle.STOP),
)


@settings(max_examples=6000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams)
def test_what_the_safe_loader_accepts_pickle_loads_reads_the_same(worker, data):
    answer = worker.ask(data)
    event("accepted" if answer["accepted"] else "refused")
    if answer["accepted"]:
        event("accepted, numpy" if b"numpy" in data else "accepted, builtins only")
    assert "problem" not in answer, (answer, data)


def test_the_differential_test_sees_a_difference(worker):
    """The worker is not silent: a stream the old loader accepted (a leading-zero INT) is caught when the
    safe loader is made to accept it."""
    data = _text(pickle.INT, b"010") + pickle.STOP
    assert worker.ask(data) == {"accepted": []}
    assert _differs(10, pickle.loads(data), light=False) == "value: 10 vs 8"
    assert _differs([1.0], [-0.0], light=False) and _differs({1: 2}, {True: 2}, light=False)
    assert _differs(np.arange(3), np.arange(3).astype(">i8"), light=False)
    shared = [[]] * 2
    assert _differs(shared, [[], []], light=False) == "value[1]: shared or cyclic differently"
    generated = [worker.ask(b"\x80\x04" + v + pickle.STOP) for v in (su("f8"), pickle.dumps(np.ones(3), 4)[11:-1])]
    assert generated == [{"accepted": ["loads", "loads_numpy"]}] * 2, generated


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
