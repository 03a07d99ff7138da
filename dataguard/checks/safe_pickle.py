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
and says that it was not executed.

A load is bounded by its file (`_run`, the limits below): containers nest at most MAX_DEPTH deep
(CPython hashes a tuple recursively, without a guard: a million-deep one as a dict key killed the
process), what the opcodes build stays under BYTES_PER_FILE_BYTE times the file (at least
MIN_BYTES), and the work beyond one step per opcode (items copied by a call, keys hashed and
compared, keys of equal hash included) under WORK_PER_OPCODE per opcode read (plus MIN_WORK). A
limit reached is a `Malformed` whose message starts "limit reached:" and names it.

A value this module returns is the one CPython's C unpickler (`pickle.load`, what nnU-Net runs)
gives for the same bytes (with `loads`, numpy's values as the stand-ins below model them). Where pickletools' decoder and the C unpickler read a file differently,
it is refused as `Malformed` ("... CPython's pickle.loads ... would not read it as dataguard
did"): text numbers in any form but the one Python's pickler writes (`I010` is 10 to one and
8 to the other), non-finite text floats, unknown protocols, frames that run past the data or
that an opcode runs past, memo indices far above the values memoized so far, escapes in a GLOBAL
name, Python 2 strings outside ASCII, `__builtin__` names at protocol 3 and above (pickle.loads
maps them only below 3), numpy states numpy's own __setstate__ refuses. tests/test_pickle_bounds.py
checks this against pickle.loads on generated opcode streams.

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

import _compat_pickle
import collections
import io
import itertools
import math
import pickle
import pickletools
import re
import reprlib
import struct
import sys

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

    __slots__ = ("nbytes", "kind")

    def __init__(self, nbytes: int, kind: str = "bytes"):
        self.nbytes, self.kind = nbytes, kind       # kind: "bytes" or "bytearray", what the opcode pushes

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

    # pickle.loads gives one object for every spelling of a name (numpy.core/_core, __builtin__):
    # as a dict key or a set member the tokens must be equal where those objects are
    def __eq__(self, other) -> bool:
        return type(other) is _Global and (other.role, other.name) == (self.role, self.name)

    def __hash__(self) -> int:
        return hash((self.role, self.name))


def _kind(x) -> str:
    """How a message names a value the file tried to use: the global it is, or its type."""
    return f"the global {x!r}" if type(x) is _Global else f"a value of type {type(x).__name__}"


def _hostile(token: _Global, why: str) -> Refused:
    return Refused(f"{token!r} called with {why}")


def _is_int(x) -> bool:
    return type(x) is int


def _shape(token: _Global, shape) -> tuple[int, ...]:
    if type(shape) in (tuple, list) and len(shape) <= _MAX_DIMS:
        for n in shape:
            if type(n) is not int or n < 0:
                break
        else:
            return tuple(shape)
    raise _hostile(token, f"a shape that is not a tuple of sizes ({_brief(shape)})")


class _BriefRepr(reprlib.Repr):
    """repr for messages: bounded in depth, width and time whatever the value (a huge int is its size)."""

    def repr_int(self, x, level):
        return repr(x) if x.bit_length() <= 128 else f"<int of {x.bit_length()} bits>"


_BRIEF = _BriefRepr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother = 3, 60, 60
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = _BRIEF.maxfrozenset = 6


def _brief(x) -> str:
    r = type(x).__name__ if isinstance(x, (bytes, bytearray)) and len(x) > 32 else _BRIEF.repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def _dtype_state(token: _Global, state, kind: str):
    """(byte order, item size or -1) from a dtype's pickled state, or Refused."""
    if not (type(state) is tuple and len(state) == 8 and _is_int(state[0]) and state[0] in (3, 4)
            and type(state[1]) is str and state[1] in ("<", ">", "|", "=")
            and state[2] is None and state[3] is None and state[4] is None
            and type(state[5]) is int and type(state[6]) is int and type(state[7]) is int):
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




def _raw(token: _Global, raw, shape, itemsize: int, buffer: bool = False) -> bytes:
    """An array's or a scalar's data, exactly prod(shape) * itemsize bytes: a bytes object (numpy's
    __setstate__ and scalar() take nothing else), or for `buffer` (_frombuffer) a bytearray too."""
    if type(raw) is _Skipped:             # only `walk` makes these, for the light back end
        if raw.nbytes != math.prod(shape) * itemsize or (len(shape) <= 1 and math.prod(shape) <= _SHORT_ITEMS) or (
                raw.kind != "bytes" and not buffer):
            raise Unsure("a skipped payload that is not a long array's data")
        return raw
    if type(raw) is bytearray and not buffer:
        raise _differently(f"{token!r} data in a bytearray (numpy reads only bytes there)")
    if type(raw) not in (bytes, bytearray):
        what = "an object array" if type(raw) is list else f"array data of type {type(raw).__name__}"
        raise Refused(f"{what} (numpy would need pickle to build it)")
    if len(raw) != math.prod(shape) * itemsize:
        raise _hostile(token, f"{len(raw)} bytes for shape {shape} of {itemsize}-byte items")
    return bytes(raw)


def _is_reconstruct_call(args, token) -> None:
    if not (len(args) == 3 and type(args[0]) is _Global and args[0].role == "ndarray"
            and type(args[1]) is tuple and args[1] == (0,) and type(args[1][0]) is int and type(args[2]) in (bytes, str) and args[2] in (b"b", "b")):
        raise _hostile(token, f"arguments numpy never writes ({_brief(args)})")


def _array_state(token: _Global, state):
    """(shape, dtype, fortran, raw) from an ndarray's pickled state (version 0 or 1, or the old 4-tuple:
    numpy's __setstate__ takes no other version, a shape that is not a tuple, nor a flag past a C int)."""
    if type(state) is tuple and len(state) == 5 and _is_int(state[0]) and state[0] in (0, 1):
        state = state[1:]
    if not (type(state) is tuple and len(state) == 4 and type(state[0]) is tuple
            and (type(state[2]) is bool or _is_int(state[2]) and -(2 ** 31) <= state[2] < 2 ** 31)):
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
            raw = _raw(token, args[0], shape, dt.itemsize, buffer=True)
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

    __hash__ = None            # numpy's arrays are unhashable: one as a key fails in pickle.loads too

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


_NATIVE_ORDERS = ("=", "<" if sys.byteorder == "little" else ">")


def _native(dt: Dtype) -> None:
    """Arrays of a non-native byte order: numpy converts some on the way in (which, by protocol and
    version, is numpy's business), so only numpy models them."""
    if dt.order not in _NATIVE_ORDERS and dt.itemsize > 1:
        raise NeedNumpy("an array of non-native byte order")


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
            _native(args[1])
            a.set(shape, args[1], _raw(token, args[0], shape, args[1].itemsize, buffer=True))
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
            _native(dt)
            inst.set(shape, dt, _raw(token, raw, shape, dt.itemsize))
            return
        raise Refused(f"the state of {_kind(inst)} to be set (BUILD)")


# --- limits -----------------------------------------------------------------------------------------------
# A pickle is a program, and a few KB of it can nest a million deep (CPython's tuple hash recurses until
# the process dies), copy one payload a thousand times, or build one big set a million times. `_run`
# keeps three counts and stops at the first limit reached, with a `Malformed` that names it (DG204):
MAX_DEPTH = 100            # containers in containers: nnU-Net's properties nest 4 deep, and 100 keeps
                           # CPython's recursion (hash, ==, repr) and every recursive reader far from its end
BYTES_PER_FILE_BYTE = 16   # memory built, per byte of the file: nnU-Net's properties (arrays, a few small
MIN_BYTES = 64 << 20       # containers) build 2-3x their size; a floor, so a small file never fails on an estimate
WORK_PER_OPCODE = 8        # steps (an item copied, a key hashed or compared) per opcode read so far: plain data
MIN_WORK = 1_000_000       # takes 1-3 (each item is pushed by an opcode of its own); a floor for tiny files
MEMO_SLACK = 4096          # a memo index above the values memoized so far + this: pickle.loads allocates to it

_LIMIT = "limit reached:"


def _too_deep() -> Malformed:
    return Malformed(f"{_LIMIT} nesting deeper than {MAX_DEPTH}")


# --- what pickle.loads reads differently ------------------------------------------------------------------
# pickletools decodes text numbers with int()/float() and undoes escapes in GLOBAL names; CPython's C
# unpickler (what nnU-Net's pickle.load runs) uses strtol(base 0), PyLong_FromString(base 0) and the raw
# name. So '010' is 10 to one and 8 to the other. Only the forms Python's own pickler writes pass:
_TEXT_FORMS = {
    "INT": (re.compile(rb"(?:0|00|01|-?[1-9][0-9]*)\n"), "a plain decimal (a leading 0 is octal to pickle.loads)"),
    "LONG": (re.compile(rb"(?:0|-?[1-9][0-9]*)L?\n"), "a plain decimal (pickle.loads reads it in base 0)"),
    "FLOAT": (re.compile(rb"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\n"), "a plain decimal number"),
    "PUT": (re.compile(rb"(?:0|[1-9][0-9]*)\n"), "a plain memo index"),
    "GET": (re.compile(rb"(?:0|[1-9][0-9]*)\n"), "a plain memo index"),
}
_MAX_DIGITS = 4300            # CPython's own limit on int(str) (sys.int_info.default_max_str_digits)
_CHECKED_ARGS = frozenset({*_TEXT_FORMS, "STRING", "GLOBAL", "BINSTRING", "SHORT_BINSTRING"})


def _differently(what: str) -> Malformed:
    return Malformed(f"{what}: CPython's pickle.loads (nnU-Net's reader) would not read it as dataguard did")


def _shown(raw: bytes) -> str:
    text = raw.rstrip(b"\n").replace(b"\n", b" ")
    return repr(text[:40])[1:] + ("..." if len(text) > 40 else "")


def _check_text(name: str, arg, raw: bytes) -> None:
    """Refuse a text opcode (protocol 0) whose argument pickle.loads could read otherwise."""
    if name in ("BINSTRING", "SHORT_BINSTRING"):           # Python 2's str: pickle.loads decodes it as ASCII
        if not arg.isascii():
            raise _differently(f"{name} {_brief(arg)} with bytes outside ASCII (pickle.loads decodes it as ASCII)")
        return
    if name == "STRING":
        if len(raw) < 3:                                   # a lone quote: '' to pickletools, an error to pickle
            raise _differently(f"STRING {_shown(raw)} with a single quote")
        return
    if name == "GLOBAL":
        # escapes are undone by pickletools, never by pickle.loads; an allowed pair is plain ASCII identifiers,
        # so its two lines must be exactly its names (anything else not allowed is refused by name later)
        module, _, gname = arg.partition(" ")
        if (module, gname) in ALLOWED and raw != f"{module}\n{gname}\n".encode():
            raise _differently(f"text GLOBAL {_shown(raw)}, not the plain names {module} {gname}")
        return
    pattern, plain = _TEXT_FORMS[name]
    if len(raw) > _MAX_DIGITS + 2 or not pattern.fullmatch(raw):
        raise _differently(f"text {name} {_shown(raw)} that is not {plain}")
    if name == "FLOAT" and not math.isfinite(arg):
        raise _differently(f"text FLOAT {_shown(raw)}, not a finite number")


def _c_pair(module: str, name: str, proto: int) -> tuple[str, str]:
    """The (module, name) pickle.loads imports for a global: below protocol 3 it maps Python 2's names."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return module, name


# the allowed pairs pickle.loads resolves to the same object, below protocol 3 and from 3 on (`__builtin__`
# names exist only through the mapping; a Python 2 module name is no module at all in Python 3)
_USABLE = tuple({pair: role for pair, role in ALLOWED.items()
                 if _c_pair(*pair, proto)[0] not in _compat_pickle.IMPORT_MAPPING
                 and ALLOWED.get(_c_pair(*pair, proto)) == role} for proto in (0, 3))


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
# `_run` dispatches on these small numbers (one dict lookup per opcode, then int compares), the most
# frequent first
_KIND = {
    **dict.fromkeys(_PUSH_ARG, 0), "MEMOIZE": 1, **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), 2),
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), 3), "MARK": 4, **dict.fromkeys(_CONSTANTS, 5),
    **dict.fromkeys(_EMPTY, 6), "APPEND": 7, "APPENDS": 8, "SETITEM": 9, "SETITEMS": 9, "ADDITEMS": 10, "LIST": 11,
    "TUPLE": 12, "FROZENSET": 12, "TUPLE1": 13, "TUPLE2": 13, "TUPLE3": 13, "DICT": 14, "POP": 15, "POP_MARK": 16,
    "DUP": 17, "GLOBAL": 18, "STACK_GLOBAL": 18, "REDUCE": 19, "BUILD": 20, "PROTO": 21, "FRAME": 22, "STOP": 23,
}
# what the empty containers take (CPython 64-bit, rounded up); payloads take sys.getsizeof
_EMPTY_BYTES = {"EMPTY_LIST": 64, "EMPTY_TUPLE": 0, "EMPTY_DICT": 72, "EMPTY_SET": 224}
_SIZED = (str, bytes, bytearray, list, tuple, set, frozenset, dict, collections.OrderedDict)


def _length(x) -> int:
    """len() of a payload or container; a skipped payload's length; 0 for anything else."""
    t = type(x)
    if t is _Skipped:
        return x.nbytes
    return len(x) if t in _SIZED else 0


_COPIES = {"list": 8, "tuple": 8, "set": 48, "frozenset": 48, "dict": 64, "OrderedDict": 128}   # bytes per item


def _call_cost(role: str, args: tuple):
    """(bytes, steps, keys to hash) of calling an allowed global on `args`, known before the call."""
    per_item = _COPIES.get(role)
    if per_item is None:
        if role in ("bytearray", "bytes", "encode"):
            return 64 + (_length(args[0]) if args else 0), 0, None
        if role == "_frombuffer":                   # the data is copied once or twice on the way in
            return 128 + 2 * (_length(args[0]) if args else 0), 0, None
        if role == "scalar":
            return 64 + (_length(args[1]) if len(args) > 1 else 0), 0, None
        return 128, 1, None                         # a dtype, an empty array, a slice, a complex number
    first = args[0] if args else None
    n = _length(first)
    keys = None
    if role in ("set", "frozenset") and type(first) in (list, tuple):
        keys = first
    elif role in ("dict", "OrderedDict") and type(first) in (list, tuple):
        keys = [p[0] for p in first if type(p) in (list, tuple) and len(p) == 2]
    return 224 + per_item * n, n, keys


def _container_depths(value) -> int:
    """The deepest nesting of lists, tuples, dicts and sets in `value`, without recursion (shared parts
    counted once, a cycle cut where it closes); stops early past MAX_DEPTH."""
    kinds = (list, tuple, dict, collections.OrderedDict, set, frozenset)
    if type(value) not in kinds:
        return 0
    depth: dict[int, int] = {}
    path: set[int] = set()
    todo = [(value, False)]
    while todo:
        v, done = todo.pop()
        i = id(v)
        if done:
            path.discard(i)
            below = 0
            for c in (itertools.chain(v.keys(), v.values()) if type(v) in (dict, collections.OrderedDict) else v):
                if type(c) in kinds:
                    below = max(below, depth.get(id(c), 0))
            depth[i] = below + 1
            if below + 1 > MAX_DEPTH:
                return below + 1
            continue
        if i in depth or i in path:
            continue
        path.add(i)
        if len(path) > MAX_DEPTH:
            return len(path)
        todo.append((v, True))
        for c in (itertools.chain(v.keys(), v.values()) if type(v) in (dict, collections.OrderedDict) else v):
            if type(c) in kinds and id(c) not in depth and id(c) not in path:
                todo.append((c, False))
    return depth.get(id(value), 0)


def _over(built: int, max_bytes: int, size: int, n_ops: int) -> Malformed:
    """The limit a load passed: bytes built, or steps of work after `n_ops` opcodes."""
    if built > max_bytes:
        return Malformed(f"{_LIMIT} builds more than {max_bytes:,} bytes ({BYTES_PER_FILE_BYTE} times the file's "
                         f"{size:,}, at least {MIN_BYTES >> 20} MiB)")
    return Malformed(f"{_LIMIT} more than {MIN_WORK + WORK_PER_OPCODE * n_ops:,} steps of work ({WORK_PER_OPCODE} "
                     f"per opcode read, {n_ops:,} so far, + {MIN_WORK:,})")


class _Keys:
    """What hashing keys into dicts and sets costs in one load, charged before CPython does it: a tuple's
    hash and == recurse through its items (the hash without a guard: a million-deep tuple kills the
    process), shared parts are hashed once per use, and keys of equal hash (ints equal modulo 2**61-1,
    crafted complex numbers and tuples) make every insertion compare against all the earlier ones."""
    __slots__ = ("shapes", "hashes")

    def __init__(self):
        self.shapes: dict[int, tuple] = {}   # id -> (tuple or frozenset, depth, weight); holds them alive
        self.hashes: dict[int, list] = {}    # hash -> [first key, keys seen with it]

    def weigh(self, x) -> int:
        """How long hashing or comparing `x` takes: its items, counted through shared parts."""
        t = type(x)
        if t is int:
            return 1 + (x.bit_length() >> 10)
        if t is not tuple and t is not frozenset:
            return 1
        known = self.shapes.get(id(x))
        return known[2] if known is not None and known[0] is x else self.measure(x)

    def measure(self, x) -> int:
        """Depth and weight of a tuple or frozenset and of those inside it not measured yet, without
        recursion; refuses one nested deeper than MAX_DEPTH."""
        shapes = self.shapes
        path = [(x, iter(x))]
        while path:
            v, items = path[-1]
            for c in items:
                tc = type(c)
                if tc is tuple or tc is frozenset:
                    known = shapes.get(id(c))
                    if known is None or known[0] is not c:
                        if len(path) >= MAX_DEPTH:
                            raise _too_deep()
                        path.append((c, iter(c)))
                        break
            else:
                path.pop()
                depth = weight = 1
                for c in v:
                    tc = type(c)
                    if tc is tuple or tc is frozenset:
                        _, d, w = shapes[id(c)]
                        depth = max(depth, d + 1)
                        weight += w
                    else:
                        weight += 1 + (c.bit_length() >> 10) if tc is int else 1
                if depth > MAX_DEPTH:
                    raise _too_deep()
                shapes[id(v)] = (v, depth, weight)
        return shapes[id(x)][2]

    def charge(self, keys, work: int, n_ops: int) -> int:
        """`work` plus hashing `keys` into a dict or set; refuses before a hash that would pass the limit."""
        allowance = MIN_WORK + WORK_PER_OPCODE * n_ops
        hashes = self.hashes
        for k in keys:
            t = type(k)
            if t is str or t is bytes:              # hashed once, with this process's own key: no collisions
                work += 1
                continue
            if t is Dtype:                          # numpy's dtypes hash and compare by value
                raise NeedNumpy("a dtype as a key")
            if t is _Global and k.role == "dtype-class":
                raise _differently(f"the dtype class {k!r} as a key or set member (which of numpy's names "
                                   f"are one class, IntDType and Int32DType, depends on numpy and the platform)")
            work += self.weigh(k)
            if work > allowance:
                raise _over(0, 1, 0, n_ops)
            h = hash(k)
            seen = hashes.get(h)
            if seen is None:
                hashes[h] = [k, 1]
            elif seen[0] is not k and (type(seen[0]) is not t or not seen[0] == k):
                seen[1] += 1
                work += seen[1]
        if work > allowance:
            raise _over(0, 1, 0, n_ops)
        return work


def _run(ops, backend, size: int):
    """Run (kind, opcode name, argument) triples on `backend` (kind: `_KIND[name]`, -1 for an opcode
    it does not run); the value at STOP. `size`: the file's bytes.

    Counts, as it goes, the bytes it builds, the steps of work beyond the opcodes themselves, and how
    many containers it made (no value nests deeper than that: only past MAX_DEPTH is the value walked
    at STOP). Not counted: what an opcode pushes of its own (a number, a string or bytes from the file,
    a stack slot, a memo reference), at most ~20 bytes per byte of the file in CPython; counted: every
    object an opcode makes out of nothing or out of others (containers, memo entries, globals, copies).
    """
    stack: list = []
    metastack: list[list] = []
    memo: dict = {}
    proto = 0
    max_bytes = max(MIN_BYTES, BYTES_PER_FILE_BYTE * size)
    built = work = containers = 0
    keys = _Keys()

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

    for n_ops, (k, name, arg) in enumerate(ops, 1):
        if k == 0:                                     # a number, a string, bytes
            stack.append(arg)
        elif k == 1:                                   # MEMOIZE
            if not stack:
                raise Malformed("MEMOIZE on an empty stack")
            built += 80
            if built > max_bytes:
                raise _over(built, max_bytes, size, n_ops)
            memo[len(memo)] = stack[-1]
        elif k == 2:                                   # PUT, BINPUT, LONG_BINPUT
            if not stack:
                raise Malformed(f"{name} on an empty stack")
            if not 0 <= arg <= len(memo) + MEMO_SLACK:
                raise _differently(f"{name} {arg} with {len(memo)} values memoized (pickle.loads allocates up "
                                   f"to the index)")
            built += 80
            if built > max_bytes:
                raise _over(built, max_bytes, size, n_ops)
            memo[arg] = stack[-1]
        elif k == 3:                                   # GET, BINGET, LONG_BINGET
            if arg not in memo:
                raise Malformed(f"memo key {arg} is not set")
            stack.append(memo[arg])
        elif k == 4:                                   # MARK
            containers += 1                  # the list LIST makes of it
            built += 72
            if built > max_bytes:
                raise _over(built, max_bytes, size, n_ops)
            metastack.append(stack)
            stack = []
        elif k == 5:                                   # NONE, NEWTRUE, NEWFALSE
            stack.append(_CONSTANTS[name])
        elif k == 6:                                   # EMPTY_LIST, _TUPLE, _DICT, _SET
            containers += 1
            built += _EMPTY_BYTES[name]
            if built > max_bytes:
                raise _over(built, max_bytes, size, n_ops)
            stack.append(_EMPTY[name]())
        elif k == 7:                                   # APPEND
            v = stack.pop()
            top((list,), "APPEND").append(v)
        elif k == 8:                                   # APPENDS
            items = pop_mark()
            built, work = built + 8 * len(items), work + len(items)
            if built > max_bytes or work > MIN_WORK + WORK_PER_OPCODE * n_ops:
                raise _over(built, max_bytes, size, n_ops)
            top((list,), "APPENDS").extend(items)
        elif k == 9:                                   # SETITEM, SETITEMS
            items = [stack.pop(-2), stack.pop()] if name == "SETITEM" else pop_mark()
            if len(items) % 2:
                raise Malformed(f"{name} with an odd number of items")
            d = top((dict, collections.OrderedDict), name)
            built, work = built + 40 * len(items), work + len(items)
            if built > max_bytes or work > MIN_WORK + WORK_PER_OPCODE * n_ops:
                raise _over(built, max_bytes, size, n_ops)
            work = keys.charge(items[0::2], work, n_ops)
            for i in range(0, len(items), 2):
                d[items[i]] = items[i + 1]
        elif k == 10:                                  # ADDITEMS
            items = pop_mark()
            s = top((set,), "ADDITEMS")
            built, work = built + 48 * len(items), work + len(items)
            if built > max_bytes or work > MIN_WORK + WORK_PER_OPCODE * n_ops:
                raise _over(built, max_bytes, size, n_ops)
            work = keys.charge(items, work, n_ops)
            s.update(items)
        elif k == 11:                                  # LIST
            items = pop_mark()               # before `stack` is read: pop_mark rebinds it
            stack.append(items)
        elif k == 12:                                  # TUPLE, FROZENSET
            items = pop_mark()
            containers += 1
            if name == "TUPLE":
                built, work = built + 64 + 8 * len(items), work + len(items)
                if built > max_bytes or work > MIN_WORK + WORK_PER_OPCODE * n_ops:
                    raise _over(built, max_bytes, size, n_ops)
                value = tuple(items)
            else:
                built, work = built + 224 + 48 * len(items), work + len(items)
                if built > max_bytes or work > MIN_WORK + WORK_PER_OPCODE * n_ops:
                    raise _over(built, max_bytes, size, n_ops)
                work = keys.charge(items, work, n_ops)
                value = frozenset(items)
            if containers > MAX_DEPTH:       # else it cannot nest that deep: measuring it would cost time
                keys.weigh(value)
            stack.append(value)
        elif k == 13:                                  # TUPLE1, TUPLE2, TUPLE3
            n = int(name[-1])
            if len(stack) < n:
                raise Malformed(f"{name} on a stack of {len(stack)}")
            items = tuple(stack[-n:])
            del stack[-n:]
            containers += 1
            built += 72
            if built > max_bytes:
                raise _over(built, max_bytes, size, n_ops)
            if containers > MAX_DEPTH:
                keys.weigh(items)
            stack.append(items)
        elif k == 14:                                  # DICT
            items = pop_mark()
            if len(items) % 2:
                raise Malformed("DICT with an odd number of items")
            containers += 1
            built, work = built + 80 + 40 * len(items), work + len(items)
            if built > max_bytes or work > MIN_WORK + WORK_PER_OPCODE * n_ops:
                raise _over(built, max_bytes, size, n_ops)
            work = keys.charge(items[0::2], work, n_ops)
            stack.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})
        elif k == 15:                                  # POP
            if stack:
                stack.pop()
            else:
                pop_mark()
        elif k == 16:                                  # POP_MARK
            pop_mark()
        elif k == 17:                                  # DUP
            if not stack:
                raise Malformed("DUP on an empty stack")
            stack.append(stack[-1])
        elif k == 18:                                  # GLOBAL, STACK_GLOBAL
            if name == "GLOBAL":
                module, sep, gname = arg.partition(" ")
                if not sep or " " in gname:
                    raise Refused(f"the global {_brief(arg)}")
            else:
                if len(stack) < 2:
                    raise Malformed("STACK_GLOBAL on a short stack")
                module, gname = stack.pop(-2), stack.pop()
                if type(module) is not str or type(gname) is not str:
                    raise Refused(f"a global named by a {type(module).__name__} and a {type(gname).__name__}")
            role = _USABLE[proto >= 3].get((module, gname))
            if role is None:
                if (module, gname) not in ALLOWED:
                    raise ForbiddenGlobal(module, gname)
                c_module, c_name = _c_pair(module, gname, proto)
                raise _differently(f"the global {module}.{gname} in a protocol {proto} pickle (pickle.loads "
                                   f"looks up {c_module}.{c_name})")
            built += 80
            if built > max_bytes:
                raise _over(built, max_bytes, size, n_ops)
            stack.append(_Global(module, gname, role))
        elif k == 19:                                  # REDUCE
            if len(stack) < 2:
                raise Malformed("REDUCE on a short stack")
            args, func = stack.pop(), stack.pop()
            if type(func) is not _Global:
                raise Refused(f"a call of {_kind(func)} (REDUCE)")
            if type(args) is not tuple:
                raise _hostile(func, f"arguments that are a {type(args).__name__}, not a tuple")
            nbytes, steps, hashed = _call_cost(func.role, args)
            built, work = built + nbytes, work + steps
            if built > max_bytes or work > MIN_WORK + WORK_PER_OPCODE * n_ops:
                raise _over(built, max_bytes, size, n_ops)
            if hashed is not None:
                work = keys.charge(hashed, work, n_ops)
            value = backend.call(func, args)
            if type(value) in _SIZED:
                containers += 1
                if containers > MAX_DEPTH:
                    keys.weigh(value)
            stack.append(value)
        elif k == 20:                                  # BUILD
            if len(stack) < 2:
                raise Malformed("BUILD on a short stack")
            state = stack.pop()
            if type(state) is tuple and state:
                built += 2 * _length(state[-1])    # an array's data, copied in
                if built > max_bytes or work > MIN_WORK + WORK_PER_OPCODE * n_ops:
                    raise _over(built, max_bytes, size, n_ops)
            backend.build(stack[-1], state)
        elif k == 21:                                  # PROTO
            if arg > pickle.HIGHEST_PROTOCOL:
                raise _differently(f"protocol {arg} (pickle.loads knows 0-{pickle.HIGHEST_PROTOCOL})")
            proto = arg
        elif k == 22:                                  # FRAME
            pass                                          # checked where the bytes are: the op readers
        elif k == 23:                                  # STOP
            if len(stack) != 1 or metastack:
                raise Malformed("STOP with a stack that does not hold exactly one value")
            if containers > MAX_DEPTH and _container_depths(stack[0]) > MAX_DEPTH:    # else none can be
                raise _too_deep()
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
    `pickle.UnpicklingError` / `ValueError` for garbage (`Malformed`: also a limit reached, or
    a form CPython's pickle.loads would read otherwise).
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
    """pickletools' own decoder (a parser: it runs nothing), as `_run`'s (kind, name, argument) triples;
    text arguments and frames checked on the file's own bytes (what pickle.loads reads)."""
    f = io.BytesIO(data)
    frame_end = 0
    for op, arg, pos in pickletools.genops(f):
        end = f.tell()
        name = op.name
        if pos < frame_end < end:
            raise _differently(f"{name} at byte {pos} running past the end of its FRAME (byte {frame_end})")
        if name == "FRAME":
            if pos < frame_end:
                raise _differently(f"a FRAME at byte {pos} inside the frame that ends at byte {frame_end}")
            if arg > len(data) - end:
                raise _differently(f"a FRAME of {arg:,} bytes where {len(data) - end:,} remain")
            frame_end = end + arg
        elif name in _CHECKED_ARGS:
            _check_text(name, arg, data[pos + 1:end])
        yield _KIND.get(name, -1), name, arg


def _checked(data: bytes, backend):
    data = bytes(data)
    try:
        return _run(_reference_ops(data), backend, len(data))
    except (Refused, NeedNumpy, pickle.UnpicklingError):
        raise
    except (IndexError, KeyError, TypeError, ValueError, EOFError, OverflowError, MemoryError,
            UnicodeDecodeError, struct.error, RecursionError) as e:
        raise Malformed(f"{type(e).__name__}: {_brief(str(e))}") from None


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


_FAST_OPS = {op.code.encode("latin-1")[0]: (_KIND[op.name], op.name, *_reader(_ARG_READERS[op.name]))
             for op in pickletools.opcodes if op.name in _ARG_READERS}


def _fast_ops(data: bytes):
    """`_run`'s (kind, name, argument) triples as pickletools decodes them, except that byte payloads of SKIP
    bytes or more are `_Skipped` (their length only). Raises Unsure on anything else, a frame
    that runs past the data or an opcode past its frame's end included."""
    pos, end = 0, len(data)
    frame_end = 0
    ops = _FAST_OPS
    while pos < end:
        entry = ops.get(data[pos])
        if entry is None:
            raise Unsure(f"opcode {data[pos]:#x} at {pos}")
        kind, name, how, unpack, size = entry
        if how is None:                         # one byte: never past a frame's end
            pos += 1
            yield kind, name, None
            if name == "STOP":
                return
            continue
        start = pos
        pos += 1
        if how == "u1":
            arg = data[pos]
            pos += 1
        elif how == "fixed":
            (arg,) = unpack(data, pos)
            pos += size
            if name == "FRAME":
                if start < frame_end or arg > end - pos:
                    raise Unsure("a FRAME inside a frame, or longer than the data")
                frame_end = pos + arg
        else:
            (n,) = unpack(data, pos)
            pos += size
            if n < 0 or pos + n > end:
                raise Unsure(f"{name} runs past the end of the data")
            if n >= SKIP and how in ("bytes", "bytearray"):
                arg = _Skipped(n, how)
            else:
                raw = data[pos:pos + n]
                arg = (int.from_bytes(raw, "little", signed=True) if how == "long"
                       else str(raw, "utf-8", "surrogatepass") if how == "text"
                       else _ascii(raw) if how == "latin1"
                       else bytearray(raw) if how == "bytearray" else raw)
            pos += n
        if start < frame_end < pos:
            raise Unsure(f"{name} runs past the end of its frame")
        yield kind, name, arg
    raise Unsure("no STOP")


def _ascii(raw: bytes) -> str:
    if not raw.isascii():                   # pickle.loads would fail: the reference path says why
        raise Unsure("a Python 2 string outside ASCII")
    return raw.decode("ascii")


def walk(data: bytes):
    """`loads` for the files it can vouch for, faster: the light back end on `_fast_ops`.

    Returns exactly what the reference path returns, or raises `Unsure` (never Refused: a
    file the reference path refuses makes it unsure, and the reference path says why).
    """
    data = data if type(data) is bytes else bytes(data)
    try:
        value = _run(_fast_ops(data), _LightBackend(), len(data))
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
