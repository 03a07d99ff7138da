"""Load plain-data pickles without running anything they ask for.

A pickle is a program for a small stack machine. GLOBAL / STACK_GLOBAL import any name,
REDUCE / NEWOBJ / OBJ / INST call it, BUILD calls `__setstate__`, EXT1/2/4 reach copyreg's
extension registry and PERSID/BINPERSID the loader's own hook. `pickle.Unpickler` with a
strict `find_class` is the usual defence and it is not enough: for protocol >= 4 the
machinery resolves a dotted name (`numpy.dtypes` + `__builtins__.get`) attribute by
attribute, so every allowed module is a door to all it can reach, and REDUCE calls an
allowed callable with whatever arguments the file chose.

So pickle's own machine is never used here. `pickletools.genops` decodes the opcodes (a
parser: it executes nothing) and `_Machine` runs a fixed subset of them:

* the data opcodes: numbers, strings, bytes, lists, tuples, dicts, sets, the memo, marks;
  APPEND/SETITEM/ADDITEMS only into real lists, dicts and sets (pickle itself would call
  any object's `append`, `__setitem__` or `add`);
* GLOBAL / STACK_GLOBAL looked up in `ALLOWED`, a table of exact (module, name) pairs; the
  file's strings are only keys into it: never imported, never split on dots;
* REDUCE only on an entry of that table, whose guard checks every argument and builds the
  value itself;
* BUILD only on the numpy arrays and dtypes those guards made, with a state rebuilt from
  checked parts (numpy never sees the file's own state tuple);
* every other opcode (INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1/2/4, PERSID, BINPERSID,
  NEXT_BUFFER, READONLY_BUFFER) refuses the file.

Everything that is refused raises `Refused`, whose message names what the file asked for
and says that it was not executed. Memory is bounded by the file: no guard allocates more
than the bytes the pickle itself carries.

Two back ends build the numpy values: `numpy` (real arrays, for code that hands them to
nnU-Net) and `light` (stand-ins with a shape and, when short, their items), which lets a
scan read nnU-Net's `.pkl` files without importing numpy; a value the stand-ins cannot
model makes `loads` fall back to numpy.

`loads` first tries `walk`: the same machine and the same light back end, fed by a decoder
of the binary opcodes nnU-Net's pickles use that leaves every byte payload of `SKIP` bytes
or more in the file (`class_locations` is ~1 MB of voxel coordinates whose bytes no check
reads, only their length). `walk` never answers where the reference path would not: any
opcode it does not decode, any refusal, any error, a skipped payload used as anything but
an array's data, or one left in the value, and it raises `Unsure`; `loads` then runs the
reference path (pickletools' decoder, the whole file), which gives the verdict and message.
"""
from __future__ import annotations

import collections
import math
import pickle
import pickletools
import re
import struct

from ..errors import ForbiddenGlobal, Malformed, Refused

__all__ = [
    "ALLOWED",
    "Array",
    "Dtype",
    "ForbiddenGlobal",
    "Malformed",
    "NeedNumpy",
    "Refused",
    "Unsure",
    "loads",
    "loads_numpy",
    "walk",
]


class NeedNumpy(Exception):
    """The light back end met a value only real numpy can build (structured or rare dtypes).
    A signal, not an error: `loads` catches it and asks numpy (no DataguardError)."""


class Unsure(Exception):
    """`walk` cannot vouch for this file (a signal, not a verdict): the reference path decides."""


SKIP = 4096      # byte payloads this long are left in the file by `walk` (an array of them is never short)


class _Skipped:
    """A byte payload `walk` did not copy: `_raw` takes it as an array's data, by its length.
    Whatever would look inside it (hash, compare, len, truth, repr) raises Unsure instead."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int):
        self.nbytes = nbytes

    def _inspected(self, *args):
        raise Unsure("a skipped payload was used as a value")

    __hash__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _inspected
    __len__ = __bool__ = __iter__ = __contains__ = __getitem__ = _inspected
    __repr__ = __str__ = __format__ = __reduce__ = __reduce_ex__ = _inspected


# --- the allow-list ---------------------------------------------------------------------------
# (module, name) exactly as a pickle writes it -> the role its guard plays. Why each is harmless:
#   _reconstruct    numpy's array pickle: REDUCE(ndarray, (0,), b'b') makes an empty array; the
#                   guard accepts exactly those arguments and nothing else
#   ndarray         only ever an argument of _reconstruct: calling it is refused
#   dtype           np.dtype(spec, align, copy) for a numeric, bool, bytes or str spec (no object,
#                   void, structured or datetime dtype), always a fresh copy, never numpy's cache
#   scalar          a numpy scalar from a checked dtype and exactly itemsize bytes
#   _frombuffer     protocol 5's array pickle: checked dtype, shape, order, and exactly
#                   prod(shape) * itemsize bytes
#   set frozenset list tuple dict OrderedDict   containers from an already-built list, tuple,
#                   set or dict (their elements are values this machine made)
#   slice complex   numbers in, a number-like value out
#   bytearray bytes from bytes, or from str + 'latin-1' (never an int: no allocation the file
#                   does not pay for); protocols 0-2 write b'' as bytes()
#   _codecs.encode  how protocols 0-2 write bytes: str + 'latin-1' only, done by str.encode
#   numpy.dtypes.*DType   the plain numeric, bool, bytes and str dtype classes, each by name: an
#                   inert token (what pickling a dtype *class* writes); calling one is refused
# `__builtin__.*` are the same pairs as protocols 0-2 write them (pickle's fix_imports); no
# prefix, no dotted name and no `__`-name ever matches, and copyreg's helpers are not listed.
_NUMPY_ROLES = {
    "_reconstruct": ("numpy.core.multiarray", "numpy._core.multiarray"),
    "scalar": ("numpy.core.multiarray", "numpy._core.multiarray"),
    "_frombuffer": ("numpy.core.numeric", "numpy._core.numeric"),
    "ndarray": ("numpy",),
    "dtype": ("numpy",),
}
_BUILTIN_ROLES = ("set", "frozenset", "list", "tuple", "dict", "slice", "complex", "bytearray", "bytes")

_DTYPE_CLASSES = ("BoolDType", "ByteDType", "BytesDType", "CLongDoubleDType", "Complex128DType", "Complex64DType",
                  "Float16DType", "Float32DType", "Float64DType", "Int16DType", "Int32DType", "Int64DType",
                  "Int8DType", "IntDType", "LongDType", "LongDoubleDType", "LongLongDType", "ShortDType",
                  "StrDType", "UByteDType", "UInt16DType", "UInt32DType", "UInt64DType", "UInt8DType",
                  "UIntDType", "ULongDType", "ULongLongDType", "UShortDType")   # no Object, Void, StringDType, datetime

ALLOWED: dict[tuple[str, str], str] = {
    **{(m, name): name for name, mods in _NUMPY_ROLES.items() for m in mods},
    **{("numpy.dtypes", name): "dtype-class" for name in _DTYPE_CLASSES},
    **{(m, name): name for name in _BUILTIN_ROLES for m in ("builtins", "__builtin__")},
    ("collections", "OrderedDict"): "OrderedDict",
    ("_codecs", "encode"): "encode",
}

# numeric, bool, bytes and str dtypes; object (O), void/structured (V), datetime (M, m) refused
_DTYPE_SPEC = re.compile(r"[<>|=]?(?:\?|b1|[iu][1248]|f(?:2|4|8|12|16)|c(?:8|16|24|32)|[SU]\d{0,6})")
_MAX_DIMS = 32
_MAX_TEXT = 1 << 20                          # a bytes/str dtype of more than 1 MiB per item is no label


class _Global:
    """What GLOBAL pushes: an inert token naming an allowed pair; only REDUCE may use it."""
    __slots__ = ("module", "name", "role")

    def __init__(self, module: str, name: str, role: str):
        self.module, self.name, self.role = module, name, role

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


def _kind(x) -> str:
    """How a message names a value the file tried to use: the global it is, or its type."""
    return f"the global {x!r}" if type(x) is _Global else f"a value of type {type(x).__name__}"


def _hostile(token: _Global, why: str) -> Refused:
    return Refused(f"{token!r} called with {why}")


def _is_int(x) -> bool:
    return type(x) is int


def _shape(token: _Global, shape) -> tuple[int, ...]:
    if not (type(shape) in (tuple, list) and len(shape) <= _MAX_DIMS and all(_is_int(n) and n >= 0 for n in shape)):
        raise _hostile(token, f"a shape that is not a tuple of sizes ({_brief(shape)})")
    return tuple(shape)


def _brief(x) -> str:
    r = type(x).__name__ if isinstance(x, (bytes, bytearray)) and len(x) > 32 else repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def _dtype_state(token: _Global, state, kind: str):
    """(byte order, item size or -1) from a dtype's pickled state, or Refused."""
    if not (type(state) is tuple and len(state) == 8 and _is_int(state[0]) and state[0] in (3, 4)
            and type(state[1]) is str and state[1] in ("<", ">", "|", "=")
            and state[2] is None and state[3] is None and state[4] is None
            and all(_is_int(v) for v in state[5:8])):
        raise Refused(f"a dtype state numpy's plain dtypes never have ({_brief(state)})")
    size = state[5]
    if kind in "SU" and not (0 <= size <= _MAX_TEXT and (kind == "S" or size % 4 == 0)):
        raise Refused(f"a {kind} dtype of {size} bytes")
    return state[1], size


# --- the builtins back end (shared) ---------------------------------------------------------------
_ITERABLES = (list, tuple, set, frozenset)


def _container(kind):
    def build(token, args):
        if args == ():
            return kind()
        if len(args) == 1 and type(args[0]) in _ITERABLES:
            return kind(args[0])
        raise _hostile(token, f"arguments that are not one list, tuple or set ({_brief(args)})")
    return build


def _mapping(kind):
    def build(token, args):
        if args == ():
            return kind()
        if len(args) == 1 and type(args[0]) is dict:
            return kind(args[0])
        if len(args) == 1 and type(args[0]) in (list, tuple) and all(
                type(p) in (list, tuple) and len(p) == 2 for p in args[0]):
            return kind(args[0])
        raise _hostile(token, f"arguments that are not key/value pairs ({_brief(args)})")
    return build


def _slice(token, args):
    if 1 <= len(args) <= 3 and all(a is None or _is_int(a) for a in args):
        return slice(*args)
    raise _hostile(token, f"non-integer bounds ({_brief(args)})")


def _complex(token, args):
    if len(args) <= 2 and all(type(a) in (int, float) for a in args):
        return complex(*args)
    raise _hostile(token, f"arguments that are not two numbers ({_brief(args)})")


def _latin1(token, args) -> bytes:
    if len(args) == 2 and type(args[0]) is str and type(args[1]) is str and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")
    raise _hostile(token, f"arguments that are not (str, 'latin-1') ({_brief(args)})")


def _bytearray(token, args):
    if args == ():
        return bytearray()
    if len(args) == 1 and type(args[0]) in (bytes, bytearray):
        return bytearray(args[0])
    return bytearray(_latin1(token, args))


def _bytes(token, args) -> bytes:
    return bytes(_bytearray(token, args))


def _not_callable(token, args):
    raise Refused(f"{token!r} called directly ({_brief(args)})")


_BUILTINS = {
    "set": _container(set), "frozenset": _container(frozenset), "list": _container(list),
    "tuple": _container(tuple), "dict": _mapping(dict), "slice": _slice, "complex": _complex,
    "bytearray": _bytearray, "bytes": _bytes, "encode": _latin1, "ndarray": _not_callable, "dtype-class": _not_callable,
    "OrderedDict": _mapping(collections.OrderedDict),
}




def _raw(token: _Global, raw, shape, itemsize: int) -> bytes:
    if type(raw) is _Skipped:             # only `walk` makes these, for the light back end
        if raw.nbytes != math.prod(shape) * itemsize or (len(shape) <= 1 and math.prod(shape) <= _SHORT_ITEMS):
            raise Unsure("a skipped payload that is not a long array's data")
        return raw
    if type(raw) not in (bytes, bytearray):
        what = "an object array" if type(raw) is list else f"array data of type {type(raw).__name__}"
        raise Refused(f"{what} (numpy would need pickle to build it)")
    if len(raw) != math.prod(shape) * itemsize:
        raise _hostile(token, f"{len(raw)} bytes for shape {shape} of {itemsize}-byte items")
    return bytes(raw)


def _is_reconstruct_call(args, token) -> None:
    if not (len(args) == 3 and type(args[0]) is _Global and args[0].role == "ndarray"
            and type(args[1]) is tuple and args[1] == (0,) and type(args[2]) in (bytes, str) and args[2] in (b"b", "b")):
        raise _hostile(token, f"arguments numpy never writes ({_brief(args)})")


def _array_state(token: _Global, state):
    """(shape, dtype, fortran, raw) from an ndarray's pickled state (version 1 or the old 4-tuple)."""
    if type(state) is tuple and len(state) == 5 and _is_int(state[0]):
        state = state[1:]
    if not (type(state) is tuple and len(state) == 4 and type(state[2]) in (bool, int)):
        raise Refused(f"an array state numpy never writes ({_brief(state)})")
    return state


# --- the real numpy back end -----------------------------------------------------------------------
class _NumpyBackend:
    """Real numpy values, each built by numpy from arguments this module checked."""
    def __init__(self):
        import numpy as np

        self.np = np
        # what the guards made, by id (holding them keeps the ids unique while the load runs):
        self.dtypes: dict[int, object] = {}    # every dtype; BUILD may set their byte order
        self.pending: dict[int, object] = {}   # empty arrays from _reconstruct, waiting for BUILD

    def _plain(self, token, dt):
        np = self.np
        if not (isinstance(dt, np.dtype) and self.dtypes.get(id(dt)) is dt):
            raise _hostile(token, f"a dtype this pickle did not build from a plain spec ({_brief(dt)})")
        return dt

    def call(self, token: _Global, args: tuple):
        np, role = self.np, token.role
        if role == "dtype":
            if not (1 <= len(args) <= 3 and type(args[0]) is str and _DTYPE_SPEC.fullmatch(args[0])
                    and all(type(a) is bool for a in args[1:])):
                raise _hostile(token, f"a spec that is not a plain numeric, bool or text dtype ({_brief(args)})")
            dt = np.dtype(args[0], False, True)           # copy=True: never numpy's shared instance
            self.dtypes[id(dt)] = dt
            return dt
        if role == "_reconstruct":
            _is_reconstruct_call(args, token)
            a = np.ndarray.__new__(np.ndarray, (0,), np.int8)
            self.pending[id(a)] = a
            return a
        if role == "scalar":
            if len(args) != 2:
                raise _hostile(token, f"{len(args)} arguments")
            dt = self._plain(token, args[0])
            return np.frombuffer(_raw(token, args[1], (), dt.itemsize), dtype=dt)[0]
        if role == "_frombuffer":
            if not (len(args) == 4 and type(args[3]) is str and args[3] in ("C", "F")):
                raise _hostile(token, f"arguments numpy never writes ({_brief(args)})")
            dt = self._plain(token, args[1])
            shape = _shape(token, args[2])
            raw = _raw(token, args[0], shape, dt.itemsize)
            return np.frombuffer(raw, dtype=dt).reshape(shape, order=args[3]).copy(order=args[3])
        return _BUILTINS[role](token, args)

    def build(self, inst, state) -> None:
        np = self.np
        if isinstance(inst, np.dtype) and self.dtypes.get(id(inst)) is inst:
            order, size = _dtype_state(_Global("numpy", "dtype", "dtype"), state, inst.kind)
            spec = inst.str[1:]
            if inst.kind in "SU" and size >= 0:
                spec = f"{inst.kind}{size // 4 if inst.kind == 'U' else size}"
            canonical = np.dtype(spec).newbyteorder(order if order in "<>" else "=").__reduce__()[2]
            if tuple(state[5:8]) != tuple(canonical[5:8]):
                raise Refused(f"a {spec} dtype whose size, alignment or flags ({state[5:8]}) are not numpy's "
                              f"own ({canonical[5:8]})")
            inst.__setstate__(canonical)                   # numpy's own state for a dtype numpy made
            return
        if type(inst) is np.ndarray and self.pending.get(id(inst)) is inst:
            token = _Global("numpy", "ndarray", "ndarray")
            shape, dt, fortran, raw = _array_state(token, state)
            shape = _shape(token, shape)
            dt = self._plain(token, dt)
            inst.__setstate__((1, shape, dt, bool(fortran), _raw(token, raw, shape, dt.itemsize)))
            del self.pending[id(inst)]
            return
        raise Refused(f"the state of {_kind(inst)} to be set (BUILD)")


# --- the light back end: numpy-free stand-ins --------------------------------------------------------
_STRUCT = {"f8": "d", "f4": "f", "f2": "e", "i8": "q", "i4": "i", "i2": "h", "i1": "b",
           "u8": "Q", "u4": "I", "u2": "H", "u1": "B", "b1": "?"}
_SHORT_ITEMS = 64


class Dtype:
    """Stands in for numpy.dtype while unpickling: just enough to decode numbers."""
    def __init__(self, spec: str):
        spec = spec.lstrip("<>|=")
        if spec == "?":
            spec = "b1"
        if spec not in _STRUCT:
            raise NeedNumpy(spec)
        self.spec, self.order = spec, "="
        self.itemsize = struct.calcsize(_STRUCT[spec])

    def unpack(self, raw: bytes) -> list:
        return [x for (x,) in struct.iter_unpack(self.order + _STRUCT[self.spec], raw)]


class Array:
    """Stands in for a numpy array: its shape always, its items when it is short (spacing)."""
    def __init__(self):
        self.shape, self.dtype, self._items, self._built = (), None, None, False

    def set(self, shape, dtype: Dtype, raw: bytes):
        self.shape, self.dtype, self._built = tuple(shape), dtype, True
        if len(self.shape) <= 1 and math.prod(self.shape) <= _SHORT_ITEMS:
            self._items = dtype.unpack(raw)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self._items is None:
            raise NeedNumpy("iterating a large array")
        return iter(self._items)

    def __repr__(self) -> str:
        if self._items is not None and self.ndim == 1:
            return f"array({self._items!r})"
        return f"array(shape={self.shape}, dtype={self.dtype.spec if self.dtype else None})"


class _LightBackend:
    """Stand-ins for numpy's values; anything they cannot model raises NeedNumpy."""
    def call(self, token: _Global, args: tuple):
        role = token.role
        if role == "dtype":
            if not (1 <= len(args) <= 3 and type(args[0]) is str and _DTYPE_SPEC.fullmatch(args[0])
                    and all(type(a) is bool for a in args[1:])):
                raise _hostile(token, f"a spec that is not a plain numeric, bool or text dtype ({_brief(args)})")
            return Dtype(args[0])
        if role == "_reconstruct":
            _is_reconstruct_call(args, token)
            return Array()
        if role == "scalar":
            if len(args) != 2 or type(args[0]) is not Dtype:
                raise _hostile(token, f"arguments numpy never writes ({_brief(args)})")
            [x] = args[0].unpack(_raw(token, args[1], (), args[0].itemsize))
            return x
        if role == "_frombuffer":
            if not (len(args) == 4 and type(args[1]) is Dtype and type(args[3]) is str and args[3] in ("C", "F")):
                raise _hostile(token, f"arguments numpy never writes ({_brief(args)})")
            shape = _shape(token, args[2])
            a = Array()
            a.set(shape, args[1], _raw(token, args[0], shape, args[1].itemsize))
            return a
        return _BUILTINS[role](token, args)

    def build(self, inst, state) -> None:
        if type(inst) is Dtype:
            order, _ = _dtype_state(_Global("numpy", "dtype", "dtype"), state, "f")
            if tuple(state[5:8]) != (-1, -1, 0):          # numpy's numeric dtypes: numpy judges the rest
                raise NeedNumpy("dtype state")
            inst.order = "<" if order in "|=" else order
            return
        if type(inst) is Array and not inst._built:
            token = _Global("numpy", "ndarray", "ndarray")
            shape, dt, _, raw = _array_state(token, state)
            shape = _shape(token, shape)
            if type(dt) is not Dtype:
                raise _hostile(token, f"a dtype this pickle did not build from a plain spec ({_brief(dt)})")
            inst.set(shape, dt, _raw(token, raw, shape, dt.itemsize))
            return
        raise Refused(f"the state of {_kind(inst)} to be set (BUILD)")


# --- the machine ----------------------------------------------------------------------------------------
_PUSH_ARG = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
    "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT"})
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY = {"EMPTY_LIST": list, "EMPTY_TUPLE": tuple, "EMPTY_DICT": dict, "EMPTY_SET": set}
_REFUSED_OPCODES = {
    "INST": "INST (a class looked up and instantiated by name)",
    "OBJ": "OBJ (a class instantiated from the stack)",
    "NEWOBJ": "NEWOBJ (cls.__new__ on a class from the stack)",
    "NEWOBJ_EX": "NEWOBJ_EX (cls.__new__ with keyword arguments)",
    "EXT1": "EXT1 (copyreg's extension registry)", "EXT2": "EXT2 (copyreg's extension registry)",
    "EXT4": "EXT4 (copyreg's extension registry)",
    "PERSID": "PERSID (the loader's persistent-id hook)", "BINPERSID": "BINPERSID (the loader's persistent-id hook)",
    "NEXT_BUFFER": "NEXT_BUFFER (an out-of-band buffer)", "READONLY_BUFFER": "READONLY_BUFFER (an out-of-band buffer)",
}


def _run(ops, backend):
    """Run (opcode name, argument) pairs on `backend`; the value at STOP."""
    stack: list = []
    metastack: list[list] = []
    memo: dict = {}

    def pop_mark() -> list:
        nonlocal stack
        if not metastack:
            raise Malformed("no MARK to pop to")
        items, stack = stack, metastack.pop()
        return items

    def top(kind, what):
        if not stack or type(stack[-1]) not in kind:
            if not stack:
                raise Malformed(f"{what} on an empty stack")
            raise Refused(f"{what} on {_kind(stack[-1])}")
        return stack[-1]

    for name, arg in ops:
        if name in _PUSH_ARG:
            stack.append(arg)
        elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            if not stack:
                raise Malformed(f"{name} on an empty stack")
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise Malformed(f"memo key {arg} is not set")
            stack.append(memo[arg])
        elif name == "MARK":
            metastack.append(stack)
            stack = []
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name in _EMPTY:
            stack.append(_EMPTY[name]())
        elif name == "APPEND":
            v = stack.pop()
            top((list,), "APPEND").append(v)
        elif name == "APPENDS":
            items = pop_mark()
            top((list,), "APPENDS").extend(items)
        elif name in ("SETITEM", "SETITEMS"):
            items = [stack.pop(-2), stack.pop()] if name == "SETITEM" else pop_mark()
            if len(items) % 2:
                raise Malformed(f"{name} with an odd number of items")
            d = top((dict, collections.OrderedDict), name)
            for i in range(0, len(items), 2):
                d[items[i]] = items[i + 1]
        elif name == "ADDITEMS":
            items = pop_mark()
            top((set,), "ADDITEMS").update(items)
        elif name == "LIST":
            items = pop_mark()               # before `stack` is read: pop_mark rebinds it
            stack.append(items)
        elif name in ("TUPLE", "FROZENSET"):
            items = pop_mark()
            stack.append(tuple(items) if name == "TUPLE" else frozenset(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(stack) < n:
                raise Malformed(f"{name} on a stack of {len(stack)}")
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "DICT":
            items = pop_mark()
            if len(items) % 2:
                raise Malformed("DICT with an odd number of items")
            stack.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})
        elif name == "POP":
            if stack:
                stack.pop()
            else:
                pop_mark()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            if not stack:
                raise Malformed("DUP on an empty stack")
            stack.append(stack[-1])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, sep, gname = arg.partition(" ")
                if not sep or " " in gname:
                    raise Refused(f"the global {arg!r}")
            else:
                if len(stack) < 2:
                    raise Malformed("STACK_GLOBAL on a short stack")
                module, gname = stack.pop(-2), stack.pop()
                if type(module) is not str or type(gname) is not str:
                    raise Refused(f"a global named by a {type(module).__name__} and a {type(gname).__name__}")
            role = ALLOWED.get((module, gname))
            if role is None:
                raise ForbiddenGlobal(module, gname)
            stack.append(_Global(module, gname, role))
        elif name == "REDUCE":
            if len(stack) < 2:
                raise Malformed("REDUCE on a short stack")
            args, func = stack.pop(), stack.pop()
            if type(func) is not _Global:
                raise Refused(f"a call of {_kind(func)} (REDUCE)")
            if type(args) is not tuple:
                raise _hostile(func, f"arguments that are a {type(args).__name__}, not a tuple")
            stack.append(backend.call(func, args))
        elif name == "BUILD":
            if len(stack) < 2:
                raise Malformed("BUILD on a short stack")
            state = stack.pop()
            backend.build(stack[-1], state)
        elif name in ("PROTO", "FRAME"):
            pass
        elif name == "STOP":
            if len(stack) != 1 or metastack:
                raise Malformed("STOP with a stack that does not hold exactly one value")
            return stack[0]
        elif name in _REFUSED_OPCODES:
            raise Refused(f"the opcode {_REFUSED_OPCODES[name]}")
        else:                                             # a new opcode in a future Python: refuse it
            raise Refused(f"the opcode {name}")
    raise Malformed("pickle data ended without STOP")


def loads(data: bytes):
    """A plain-data pickle's value, numpy arrays as light stand-ins (`Array`) where they can be.

    `walk` first; the reference path wherever it is unsure. Falls back to real numpy for
    values the stand-ins cannot model. Raises `Refused` for anything outside plain data, and
    `pickle.UnpicklingError` / `ValueError` for garbage.
    """
    try:
        return walk(data)
    except Unsure:
        pass
    try:
        return _checked(data, _LightBackend())
    except NeedNumpy:
        return loads_numpy(data)


def loads_numpy(data: bytes):
    """A plain-data pickle's value with real numpy arrays, dtypes and scalars."""
    return _checked(data, _NumpyBackend())


def _reference_ops(data: bytes):
    """pickletools' own decoder (a parser: it runs nothing), as (name, argument) pairs."""
    for op, arg, _pos in pickletools.genops(data):
        yield op.name, arg


def _checked(data: bytes, backend):
    try:
        return _run(_reference_ops(bytes(data)), backend)
    except (Refused, NeedNumpy, pickle.UnpicklingError):
        raise
    except (IndexError, KeyError, TypeError, ValueError, EOFError, OverflowError, MemoryError,
            UnicodeDecodeError, struct.error, RecursionError) as e:
        raise Malformed(f"{type(e).__name__}: {e}") from None


# --- the fast walk ----------------------------------------------------------------------------------------
# the binary opcodes of protocols 2-5 that plain data uses, by name -> how their argument is read;
# the rest (text protocol 0, GLOBAL, INST, OBJ, NEWOBJ*, EXT*, PERSID*, buffers, unknown bytes) -> Unsure
_ARG_READERS = {
    **dict.fromkeys(("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET", "MARK", "MEMOIZE", "NONE", "NEWTRUE",
                     "NEWFALSE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "LIST", "DICT", "APPEND", "APPENDS",
                     "SETITEM", "SETITEMS", "ADDITEMS", "FROZENSET", "POP", "POP_MARK", "DUP", "STACK_GLOBAL",
                     "REDUCE", "BUILD", "STOP")),
    **dict.fromkeys(("PROTO", "BININT1", "BINPUT", "BINGET"), "u1"),
    "BININT2": "<H", "BININT": "<i", "LONG_BINPUT": "<I", "LONG_BINGET": "<I", "FRAME": "<Q", "BINFLOAT": ">d",
    "LONG1": ("long", "<B"), "LONG4": ("long", "<i"),
    "SHORT_BINUNICODE": ("text", "<B"), "BINUNICODE": ("text", "<I"), "BINUNICODE8": ("text", "<Q"),
    "SHORT_BINSTRING": ("latin1", "<B"), "BINSTRING": ("latin1", "<i"),
    "SHORT_BINBYTES": ("bytes", "<B"), "BINBYTES": ("bytes", "<I"), "BINBYTES8": ("bytes", "<Q"),
    "BYTEARRAY8": ("bytearray", "<Q"),
}
def _reader(spec):
    """(how, unpack_from, size) for an argument spec of _ARG_READERS."""
    if spec is None or spec == "u1":
        return spec, None, 1
    how, fmt = ("fixed", spec) if type(spec) is str else spec
    st = struct.Struct(fmt)
    return how, st.unpack_from, st.size


_FAST_OPS = {op.code.encode("latin-1")[0]: (op.name, *_reader(_ARG_READERS[op.name]))
             for op in pickletools.opcodes if op.name in _ARG_READERS}


def _fast_ops(data: bytes):
    """(name, argument) pairs as pickletools decodes them, except that byte payloads of SKIP
    bytes or more are `_Skipped` (their length only). Raises Unsure on anything else."""
    pos, end = 0, len(data)
    ops = _FAST_OPS
    while pos < end:
        entry = ops.get(data[pos])
        if entry is None:
            raise Unsure(f"opcode {data[pos]:#x} at {pos}")
        name, how, unpack, size = entry
        pos += 1
        if how is None:
            yield name, None
            if name == "STOP":
                return
            continue
        if how == "u1":
            arg = data[pos]
            pos += 1
        elif how == "fixed":
            (arg,) = unpack(data, pos)
            pos += size
        else:
            (n,) = unpack(data, pos)
            pos += size
            if n < 0 or pos + n > end:
                raise Unsure(f"{name} runs past the end of the data")
            if n >= SKIP and how in ("bytes", "bytearray"):
                arg = _Skipped(n)
            else:
                raw = data[pos:pos + n]
                arg = (int.from_bytes(raw, "little", signed=True) if how == "long"
                       else str(raw, "utf-8", "surrogatepass") if how == "text"
                       else raw.decode("latin-1") if how == "latin1"
                       else bytearray(raw) if how == "bytearray" else raw)
            pos += n
        yield name, arg
    raise Unsure("no STOP")


def walk(data: bytes):
    """`loads` for the files it can vouch for, faster: the light back end on `_fast_ops`.

    Returns exactly what the reference path returns, or raises `Unsure` (never Refused: a
    file the reference path refuses makes it unsure, and the reference path says why).
    """
    data = data if type(data) is bytes else bytes(data)
    try:
        value = _run(_fast_ops(data), _LightBackend())
    except Exception as e:          # noqa: BLE001 - a refusal, garbage, NeedNumpy, Unsure: not ours to judge
        raise Unsure(f"{type(e).__name__}: {e!s:.200}") from None
    if _holds_skipped(value):
        raise Unsure("a skipped payload is part of the value")
    return value


def _holds_skipped(value) -> bool:
    """Whether a `_Skipped` is anywhere in the value (containers may share and nest themselves)."""
    seen: set[int] = set()
    todo = [value]
    while todo:
        v = todo.pop()
        t = type(v)
        if t is _Skipped:
            return True
        if t in (list, tuple) or t is dict or t is collections.OrderedDict:
            if id(v) in seen:
                continue
            seen.add(id(v))
            todo.extend(v.values() if t is dict or t is collections.OrderedDict else v)
    return False
