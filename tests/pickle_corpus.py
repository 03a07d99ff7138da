"""Crafted pickles, as an attacker would write them, each family named by what it tries.

Every payload, if anything ran it, would create the file `marker` (so a test can also
look for it) besides whatever the audit hook records. `corpus(marker)` returns
{name: bytes}; the names say the family and the variant.
"""
from __future__ import annotations

import copyreg
import io
import os
import pickle
from contextlib import contextmanager

import numpy as np

from dataguard.checks.safe_pickle import ALLOWED


def payload(marker) -> str:
    return f"__import__('os').system('touch {os.fspath(marker)}')"


def su(s: str) -> bytes:
    b = s.encode()
    return (pickle.SHORT_BINUNICODE + bytes([len(b)]) + b) if len(b) < 256 else \
        (pickle.BINUNICODE + len(b).to_bytes(4, "little") + b)


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL (protocol 4): module and name from the stack."""
    return su(module) + su(name) + pickle.STACK_GLOBAL


def g0(module: str, name: str) -> bytes:
    """GLOBAL (protocols 0-3): 'c module\\n name\\n'."""
    return pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n"


P4 = pickle.PROTO + b"\x04"
P2 = pickle.PROTO + b"\x02"


def call(*args: bytes) -> bytes:
    """(args...) REDUCE on whatever callable is on the stack."""
    return pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def eval_through(get: bytes, marker, proto: bytes = P4) -> bytes:
    """`get` pushes something dict.get-like: get('eval')(payload)."""
    return proto + get + call(su("eval")) + call(su(payload(marker))) + pickle.STOP


def allowed_modules() -> list[str]:
    return sorted({m for m, _ in ALLOWED})


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _ReduceEx:
    def __init__(self, marker):
        self.marker = marker

    def __reduce_ex__(self, protocol):
        return os.system, (f"touch {self.marker}",)


class _SetState:
    """An object whose __setstate__ would run the payload (BUILD)."""

    def __init__(self, marker):
        self.cmd = f"touch {marker}"

    def __setstate__(self, state):                       # pragma: no cover - must never run
        os.system(state["cmd"])


@contextmanager
def hostile_extension(code: int = 240):
    """copyreg's extension registry holding os.system while the test runs."""
    copyreg.add_extension("os", "system", code)
    try:
        yield code
    finally:
        copyreg.remove_extension("os", "system", code)


def corpus(marker) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    cmd = f"touch {marker}"
    # 1. dotted names through every allowed module (protocol >= 4 resolves a.b.c attribute by attribute)
    for m in allowed_modules():
        out[f"dotted/{m}/__builtins__.get/stack_global"] = eval_through(sg(m, "__builtins__.get"), marker)
        out[f"dotted/{m}/__builtins__.get/global"] = eval_through(g0(m, "__builtins__.get"), marker, P2)
    for m, name in sorted(ALLOWED):
        out[f"dotted/{m}.{name}.__reduce_ex__"] = P4 + sg(m, f"{name}.__reduce_ex__") + call(pickle.NONE) + pickle.STOP
    out["dotted/numpy.dtypes._add_dtype_helper.__builtins__.get"] = eval_through(
        sg("numpy.dtypes", "_add_dtype_helper.__builtins__.get"), marker)
    out["dotted/__-name"] = P4 + sg("numpy", "__loader__") + pickle.STOP
    # 2. dangerous globals by name, builtins.getattr chains
    for m, name in [("builtins", "eval"), ("builtins", "exec"), ("builtins", "__import__"), ("os", "system"),
                    ("posix", "system"), ("nt", "system"), ("subprocess", "Popen"), ("subprocess", "check_output"),
                    ("importlib", "import_module"), ("pickle", "loads"), ("_pickle", "loads"),
                    ("numpy.testing._private.utils", "runstring"), ("numpy", "load"), ("torch", "load"),
                    ("runpy", "_run_code"), ("code", "InteractiveInterpreter"), ("operator", "attrgetter"),
                    ("functools", "partial"), ("builtins", "breakpoint"), ("webbrowser", "open")]:
        out[f"global/{m}.{name}"] = P4 + sg(m, name) + call(su(cmd)) + pickle.STOP
        out[f"global0/{m}.{name}"] = g0(m, name) + call(su(cmd)) + pickle.STOP
    getattr_ = sg("builtins", "getattr")
    out["getattr/chain"] = (P4 + getattr_ + pickle.MARK + getattr_ + pickle.MARK + sg("builtins", "dict")
                            + su("__class__") + pickle.TUPLE + pickle.REDUCE + su("__subclasses__")
                            + pickle.TUPLE + pickle.REDUCE + pickle.STOP)
    out["getattr/through-allowed"] = P4 + getattr_ + call(sg("numpy", "dtype"), su("__init__")) + pickle.STOP
    # 3. __reduce__ / __reduce_ex__, every protocol
    for proto in range(6):
        out[f"reduce/os.system/p{proto}"] = pickle.dumps(_Reduce(os.system, (cmd,)), protocol=proto)
        out[f"reduce/eval/p{proto}"] = pickle.dumps(_Reduce(eval, (payload(marker),)), protocol=proto)
        out[f"reduce_ex/p{proto}"] = pickle.dumps(_ReduceEx(marker), protocol=proto)
        out[f"setstate-class/p{proto}"] = pickle.dumps(_SetState(marker), protocol=proto)
        out[f"nested-in-props/p{proto}"] = pickle.dumps({"spacing": [1.0], "class_locations": {1: _Reduce(
            os.system, (cmd,))}}, protocol=proto)
    # 4. copyreg's extension registry (a test registers os.system under 240 while scanning)
    out["ext1"] = P2 + pickle.EXT1 + bytes([240]) + call(su(cmd)) + pickle.STOP
    out["ext2"] = P2 + pickle.EXT2 + (240).to_bytes(2, "little") + call(su(cmd)) + pickle.STOP
    out["ext4"] = P2 + pickle.EXT4 + (240).to_bytes(4, "little") + call(su(cmd)) + pickle.STOP
    out["copyreg/_reconstructor"] = P2 + g0("copyreg", "_reconstructor") + call(
        g0("os", "system"), pickle.NONE, pickle.NONE) + pickle.STOP
    out["copy_reg/_reconstructor"] = P2 + g0("copy_reg", "_reconstructor") + call(pickle.NONE) + pickle.STOP
    # 5. BUILD: __setstate__ / __dict__ updates on what allowed callables return, and on plain values
    od = sg("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    out["build/ordereddict-dict-state"] = (P4 + od + pickle.EMPTY_DICT + su("__setstate__") + sg("os", "system")
                                           + pickle.SETITEM + pickle.BUILD + pickle.STOP)
    out["build/ordereddict-slotstate"] = (P4 + od + pickle.NONE + pickle.EMPTY_DICT + su("__class__") + su("x")
                                          + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD + pickle.STOP)
    out["build/list"] = P4 + pickle.EMPTY_LIST + pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP
    out["build/set-token"] = P4 + sg("builtins", "set") + pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP
    f8 = sg("numpy", "dtype") + call(su("f8"), pickle.NEWFALSE, pickle.NEWTRUE)
    out["build/dtype-fields"] = (P4 + f8 + pickle.MARK + pickle.BININT1 + b"\x03" + su("<") + pickle.NONE
                                 + pickle.MARK + su("a") + pickle.TUPLE + pickle.EMPTY_DICT
                                 + pickle.BININT1 + b"\x08" + pickle.BININT1 + b"\x01" + pickle.BININT1 + b"\x3f"
                                 + pickle.TUPLE + pickle.BUILD + pickle.STOP)
    out["build/dtype-flags-claim-objects"] = (P4 + f8 + pickle.MARK + pickle.BININT1 + b"\x03" + su("<")
                                              + pickle.NONE + pickle.NONE + pickle.NONE + pickle.BININT1 + b"\x08"
                                              + pickle.BININT1 + b"\x08" + pickle.BININT1 + b"\x3f"
                                              + pickle.TUPLE + pickle.BUILD + pickle.STOP)
    rec = sg("numpy.core.multiarray", "_reconstruct")
    empty = rec + call(sg("numpy", "ndarray"), pickle.MARK + pickle.BININT1 + b"\x00" + pickle.TUPLE,
                       pickle.SHORT_BINBYTES + b"\x01b")
    out["build/array-object-list"] = (P4 + empty + pickle.MARK + pickle.BININT1 + b"\x01" + pickle.MARK
                                      + pickle.BININT1 + b"\x01" + pickle.TUPLE + f8 + pickle.NEWFALSE
                                      + pickle.MARK + su(payload(marker)) + pickle.LIST + pickle.TUPLE
                                      + pickle.BUILD + pickle.STOP)
    out["build/array-short-data"] = (P4 + empty + pickle.MARK + pickle.BININT1 + b"\x01" + pickle.MARK
                                     + pickle.BININT + (10 ** 9).to_bytes(4, "little") + pickle.TUPLE + f8
                                     + pickle.NEWFALSE + pickle.SHORT_BINBYTES + b"\x08" + b"\x00" * 8
                                     + pickle.TUPLE + pickle.BUILD + pickle.STOP)
    # 6. allowed numpy/builtin callables with hostile arguments
    out["numpy/object-array"] = pickle.dumps({"class_locations": {1: np.array([_Reduce(os.system, (cmd,))],
                                                                               dtype=object)}}, protocol=4)
    out["numpy/object-array-p2"] = pickle.dumps(np.array([_Reduce(os.system, (cmd,))], dtype=object), protocol=2)
    out["numpy/structured-with-object"] = pickle.dumps(np.zeros(1, dtype=[("a", "O")]), protocol=4)
    for spec in ("O", "O8", "V8", "M8[ns]", "f8,i4", "|O"):
        out[f"numpy/dtype-{spec}"] = P4 + sg("numpy", "dtype") + call(su(spec), pickle.NEWFALSE, pickle.NEWTRUE) \
            + pickle.STOP
    out["numpy/dtype-tuple-spec"] = P4 + sg("numpy", "dtype") + call(
        pickle.MARK + su("f8") + pickle.MARK + pickle.BININT1 + b"\x02" + pickle.TUPLE + pickle.TUPLE) + pickle.STOP
    out["numpy/reconstruct-set"] = P4 + rec + call(sg("builtins", "set"), pickle.EMPTY_TUPLE,
                                                   pickle.SHORT_BINBYTES + b"\x01b") + pickle.STOP
    out["numpy/reconstruct-huge"] = P4 + rec + call(sg("numpy", "ndarray"), pickle.MARK + pickle.LONG1 + b"\x06"
                                                    + (10 ** 13).to_bytes(6, "little") + pickle.TUPLE,
                                                    pickle.SHORT_BINBYTES + b"\x01b") + pickle.STOP
    out["numpy/reconstruct-object-typecode"] = P4 + rec + call(sg("numpy", "ndarray"), pickle.MARK + pickle.BININT1
                                                               + b"\x00" + pickle.TUPLE, su("O")) + pickle.STOP
    scalar = sg("numpy.core.multiarray", "scalar")
    out["numpy/scalar-payload"] = P4 + scalar + call(f8, su(payload(marker))) + pickle.STOP
    out["numpy/scalar-long-data"] = P4 + scalar + call(f8, pickle.BINBYTES + (1000).to_bytes(4, "little")
                                                       + b"\x00" * 1000) + pickle.STOP
    fb = sg("numpy.core.numeric", "_frombuffer")
    out["numpy/frombuffer-huge-shape"] = P4 + fb + call(pickle.SHORT_BINBYTES + b"\x08" + b"\x00" * 8, f8,
                                                        pickle.MARK + pickle.BININT + (10 ** 9).to_bytes(4, "little")
                                                        + pickle.TUPLE, su("C")) + pickle.STOP
    out["numpy/frombuffer-order"] = P4 + fb + call(pickle.SHORT_BINBYTES + b"\x08" + b"\x00" * 8, f8,
                                                   pickle.MARK + pickle.BININT1 + b"\x01" + pickle.TUPLE,
                                                   su("__import__")) + pickle.STOP
    out["numpy/ndarray-called"] = P4 + sg("numpy", "ndarray") + call(pickle.MARK + pickle.BININT1 + b"\x05"
                                                                     + pickle.TUPLE) + pickle.STOP
    out["numpy/dtype-class-called"] = P4 + sg("numpy.dtypes", "Float64DType") + call() + pickle.STOP
    out["builtins/bytearray-bomb"] = P4 + sg("builtins", "bytearray") + call(
        pickle.LONG1 + b"\x06" + (10 ** 13).to_bytes(6, "little")) + pickle.STOP
    out["builtins/bytearray-codec"] = P4 + sg("builtins", "bytearray") + call(su("x"), su("utf-16")) + pickle.STOP
    out["builtins/codecs-encode-rot13"] = P4 + sg("_codecs", "encode") + call(su(cmd), su("rot13")) + pickle.STOP
    out["builtins/set-of-string"] = P4 + sg("builtins", "set") + call(su(cmd)) + pickle.STOP
    out["builtins/dict-kwargs-shape"] = P4 + sg("builtins", "dict") + call(pickle.EMPTY_DICT, pickle.EMPTY_DICT) \
        + pickle.STOP
    # 7. opcodes that instantiate or look up outside GLOBAL
    out["opcode/INST"] = pickle.MARK + su(cmd) + pickle.INST + b"os\nsystem\n" + pickle.STOP
    out["opcode/OBJ"] = P2 + pickle.MARK + g0("os", "system") + su(cmd) + pickle.OBJ + pickle.STOP
    out["opcode/OBJ-allowed"] = P2 + pickle.MARK + g0("builtins", "set") + pickle.OBJ + pickle.STOP
    out["opcode/NEWOBJ"] = P4 + sg("builtins", "set") + pickle.EMPTY_TUPLE + pickle.NEWOBJ + pickle.STOP
    out["opcode/NEWOBJ_EX"] = (P4 + sg("builtins", "set") + pickle.EMPTY_TUPLE + pickle.EMPTY_DICT
                               + pickle.NEWOBJ_EX + pickle.STOP)
    out["opcode/PERSID"] = pickle.PERSID + cmd.encode() + b"\n" + pickle.STOP
    out["opcode/BINPERSID"] = P4 + su(cmd) + pickle.BINPERSID + pickle.STOP
    out["opcode/NEXT_BUFFER"] = pickle.PROTO + b"\x05" + pickle.NEXT_BUFFER + pickle.STOP
    out["opcode/READONLY_BUFFER"] = (pickle.PROTO + b"\x05" + pickle.SHORT_BINBYTES + b"\x01x"
                                     + pickle.READONLY_BUFFER + pickle.STOP)
    out["opcode/unknown"] = P4 + b"\xff" + pickle.STOP
    out["opcode/append-to-token"] = P4 + sg("builtins", "set") + su(cmd) + pickle.APPEND + pickle.STOP
    out["opcode/setitem-on-array"] = (P4 + empty + su("k") + su(cmd) + pickle.SETITEM + pickle.STOP)
    return out


def object_npy(marker) -> bytes:
    """A .npy holding an object array whose pickle would run the payload."""
    buf = io.BytesIO()
    np.save(buf, np.array([_Reduce(os.system, (f"touch {marker}",))], dtype=object), allow_pickle=True)
    return buf.getvalue()


# --- small files that blow up a naive loader (issue 27, "Readers a small file can crash") -----------
def _get(i: int) -> bytes:
    """Push memo entry i (BINGET or LONG_BINGET)."""
    return pickle.BINGET + bytes([i]) if i < 256 else pickle.LONG_BINGET + i.to_bytes(4, "little")


def props_prefix(value=None) -> bytes:
    """A valid nnU-Net properties pickle (protocol 2: no frames, explicit memo indices) without
    its STOP: a stream can go on with the dict on the stack (`+ su(key) + <value> + SETITEM`)."""
    from conftest import props

    data = pickle.dumps(props() if value is None else value, protocol=2)
    assert data.endswith(pickle.STOP)
    return data[:-1]


def with_junk(value_ops: bytes, value=None) -> bytes:
    """Valid properties with one more key, 'junk', whose value `value_ops` pushes."""
    return props_prefix(value) + su("junk") + value_ops + pickle.SETITEM + pickle.STOP


def memo_count(prefix: bytes) -> int:
    """How many memo entries a protocol-2 prefix made (its BINPUT/LONG_BINPUT indices are 0..n-1)."""
    import pickletools

    return 1 + max(arg for op, arg, _ in pickletools.genops(prefix + pickle.STOP)
                   if op.name in ("BINPUT", "LONG_BINPUT", "PUT"))


def deep_tuple_bomb(depth: int = 10 ** 6) -> bytes:
    """The issue's segfault: a dict keyed by a million-deep tuple (hashing it recurses in C)."""
    return b"\x80\x04}" + b")" + b"\x85" * depth + b"K\x00s."


def bytearray_copies_bomb(size: int = 8 << 20, copies: int = 250) -> bytes:
    """Valid properties plus 'junk': one `size`-byte payload copied `copies` times by
    builtins.bytearray (~size * copies bytes built from a file of ~size bytes)."""
    prefix = props_prefix()
    m = memo_count(prefix)
    ops = (sg("builtins", "bytearray") + pickle.MEMOIZE + pickle.POP
           + pickle.BINBYTES + size.to_bytes(4, "little") + b"\x07" * size + pickle.MEMOIZE + pickle.POP
           + pickle.MARK + (_get(m) + _get(m + 1) + pickle.TUPLE1 + pickle.REDUCE) * copies + pickle.LIST)
    return prefix + su("junk") + ops + pickle.SETITEM + pickle.STOP


def frozenset_work_bomb(items: int = 100_000, times: int = 300_000) -> bytes:
    """Valid properties plus 'junk': frozenset() of one `items`-long list, built `times` times
    (each result popped: little memory, items * times hash operations)."""
    prefix = props_prefix()
    m = memo_count(prefix)
    big = (pickle.EMPTY_LIST + pickle.MEMOIZE + pickle.MARK
           + b"".join(pickle.BININT + i.to_bytes(4, "little") for i in range(items)) + pickle.APPENDS + pickle.POP)
    ops = (sg("builtins", "frozenset") + pickle.MEMOIZE + pickle.POP + big
           + (_get(m) + _get(m + 1) + pickle.TUPLE1 + pickle.REDUCE + pickle.POP) * times + pickle.NONE)
    return prefix + su("junk") + ops + pickle.SETITEM + pickle.STOP


def bombs() -> dict[str, bytes]:
    return {"deep-tuple": deep_tuple_bomb(), "bytearray-copies": bytearray_copies_bomb(),
            "frozenset-work": frozenset_work_bomb()}


# --- pickles pickletools and CPython's C unpickler read differently (issue 27, section 3) -------------
def _ops_at(data: bytes):
    """(name, arg, start, end) of each opcode."""
    import pickletools

    ops = list(pickletools.genops(data))
    ends = [pos for _, _, pos in ops[1:]] + [len(data)]
    return [(op.name, arg, pos, end) for (op, arg, pos), end in zip(ops, ends)]


def replace_ops(data: bytes, pick, new, count: int | None = None) -> bytes:
    """`data` with every opcode for which pick(name, arg) holds replaced by new(name, arg) (bytes).
    Only for unframed pickles (protocols 0-3): nothing in them counts bytes across opcodes."""
    out, last, n = [], 0, 0
    for name, arg, start, end in _ops_at(data):
        if pick(name, arg):
            out += [data[last:start], new(name, arg)]
            last, n = end, n + 1
    assert n and (count is None or n == count), (n, count)
    return b"".join(out) + data[last:]


def text_int(text: str):
    """A replacement opcode: INT with this exact text (protocol 0)."""
    return lambda name, arg: pickle.INT + text.encode() + b"\n"


def c_unpickler_mismatches() -> dict[str, tuple[bytes, str, object]]:
    """Properties files that pickletools' decoder (what the safe loader read) and pickle.loads read
    differently: {name: (data, what pickle.loads does, the value the decoder reads or None)}. Each is
    valid properties to the decoder; 'fails': pickle.loads raises, 'differs': it returns another value."""
    from conftest import props

    out: dict[str, tuple[bytes, str, object]] = {}
    body = props_prefix() + pickle.STOP
    out["frame-past-end"] = (P4 + pickle.FRAME + (10 ** 6).to_bytes(8, "little") + body[2:], "fails", None)
    out["proto-99"] = (pickle.PROTO + bytes([99]) + body[2:], "fails", None)
    out["global-escape"] = (replace_ops(body, lambda n, a: n == "GLOBAL" and a.endswith(" scalar"),
                                        lambda n, a: pickle.GLOBAL + a.split(" ")[0].encode() + b"\nsc\\x61lar\n"),
                            "fails", None)
    out["float-1e500"] = (with_junk(pickle.FLOAT + b"1e500\n"), "fails", None)
    out["long-010L"] = (with_junk(pickle.LONG + b"010L\n"), "fails", None)
    out["long-binput-huge"] = (with_junk(pickle.NONE + pickle.LONG_BINPUT + (0xFFFFFFF0).to_bytes(4, "little")),
                               "fails", None)
    label = {**props(), "class_locations": {10: np.zeros((2, 4), np.int64)}}
    out["int-leading-zero-label"] = (replace_ops(pickle.dumps(label, protocol=2),
                                                 lambda n, a: n == "BININT1" and a == 10, text_int("010"), count=1),
                                     "differs", label)
    shape = {**props(), "shape_before_cropping": (12, 60, 60)}
    out["int-leading-zero-shape"] = (replace_ops(pickle.dumps(shape, protocol=2),
                                                 lambda n, a: n == "BININT1" and a in (12, 60),
                                                 lambda n, a: pickle.INT + b"0%d\n" % a, count=3), "differs", shape)
    dtype = {**props(), "junk": np.dtype("S12")}
    out["int-leading-zero-dtype-size"] = (replace_ops(pickle.dumps(dtype, protocol=2),
                                                      lambda n, a: n == "BININT1" and a == 12, text_int("012"),
                                                      count=1), "differs", dtype)
    return out
