"""Nothing a pickle, .npy or .npz says is ever executed: crafted files, where nnU-Net keeps
them, read through the CLI under an audit hook (tests/audit.py) that records every process,
exec of a string, socket, native call and stray write. Each file must be an error finding
that says what was refused, and the hook must stay silent.
"""
from __future__ import annotations

import collections
import json
import pickle
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataguard.cli
from audit import watch
from conftest import make_tiny_pre
from dataguard.checks import safe_pickle
from dataguard.checks.base import FileTask
from dataguard.checks.pickles import check_pkl
from pickle_corpus import corpus, hostile_extension, object_npy

CFG = "nnUNetPlans_3d_fullres"
# crafted streams that are not even well-formed pickles: an error finding (DG204), not a refusal
MALFORMED = {"opcode/unknown"}


def _scan_json(args, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    rc = dataguard.cli.main(args)
    return rc, json.loads(capsys.readouterr().out)


def _hostile_dataset(tmp_path, marker):
    """One preprocessed dataset whose case_NNN.pkl is corpus entry NNN, plus object arrays
    in an unpacked .npy and in a .npz member."""
    files = corpus(marker)
    names = sorted(files)
    cases = {f"case_{i:03d}": (1, 2, 3) for i in range(len(names))}
    ds = make_tiny_pre(tmp_path, case_labels={**cases, "npy_obj": (1,), "npz_obj": (1,)})
    cfg = ds / CFG
    for i, name in enumerate(names):
        (cfg / f"case_{i:03d}.pkl").write_bytes(files[name])
    (cfg / "npy_obj.npy").write_bytes(object_npy(marker))            # nnU-Net's unpacked data array
    import zipfile

    (cfg / "npz_obj.npz").unlink()
    with zipfile.ZipFile(cfg / "npz_obj.npz", "w") as z:               # 'data' member an object array
        z.writestr("data.npy", object_npy(marker))
        z.writestr("seg.npy", object_npy(marker))
    return ds, {f"preprocessed/{CFG}/case_{i:03d}.pkl": name for i, name in enumerate(names)}


def test_crafted_pickles_and_object_arrays_scanned_by_the_cli_run_nothing(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    # warm up: the first scan imports lazily (dataclasses compile generated code from strings)
    warm = make_tiny_pre(tmp_path / "warm")
    _scan_json(["scan", str(warm), "--manifest-dir", str(tmp_path / "m0"), "--format", "json", "--no-progress"],
               capsys)
    ds, by_path = _hostile_dataset(tmp_path, marker)
    man = tmp_path / "manifests"
    with hostile_extension(), watch(allow_writes=[man]) as events:
        rc, out = _scan_json(["scan", str(ds), "--manifest-dir", str(man), "--format", "json", "--no-progress"],
                             capsys)
    assert events == [], events
    assert not marker.exists()
    assert rc == 1
    found = {}
    for f in out["findings"]:
        found.setdefault(f["path"], []).append(f)
    missing, wrong = [], []
    for path, name in by_path.items():
        fs = [f for f in found.get(path, []) if f["severity"] == "error"]
        if not fs:
            missing.append(name)
            continue
        want = "DG204" if name in MALFORMED else "DG205"
        if not any(f["code"] == want and (want == "DG204" or "not executed" in f["message"]) for f in fs):
            wrong.append((name, [(f["code"], f["message"]) for f in fs]))
    assert not missing, f"no error finding for {missing}"
    assert not wrong, wrong
    for rel in (f"preprocessed/{CFG}/npy_obj.npy", f"preprocessed/{CFG}/npz_obj.npz"):
        assert any(f["code"] == "DG202" and "object array" in f["message"] for f in found[rel]), found.get(rel)


def test_the_reported_exploit_is_named_not_misread(tmp_path, capsys):
    """The issue's two exploits: the finding names the global, never 'properties are a int'."""
    from pickle_corpus import eval_through, sg

    marker = tmp_path / "PWNED"
    ds = make_tiny_pre(tmp_path)
    for case, name in (("case_0", "__builtins__.get"), ("case_1", "_add_dtype_helper.__builtins__.get")):
        (ds / CFG / f"{case}.pkl").write_bytes(eval_through(sg("numpy.dtypes", name), marker))
    with watch(allow_writes=[tmp_path / "m"]) as events:
        rc, out = _scan_json(["scan", str(ds), "--manifest-dir", str(tmp_path / "m"), "--format", "json",
                              "--no-progress"], capsys)
    assert events == [] and not marker.exists() and rc == 1
    msgs = {f["case"]: f["message"] for f in out["findings"] if f["code"] == "DG205"}
    assert msgs["case_0"].startswith("pickle asks for numpy.dtypes.__builtins__.get: not executed")
    assert msgs["case_1"].startswith("pickle asks for numpy.dtypes._add_dtype_helper.__builtins__.get: not executed")
    assert not any("properties are a" in f["message"] for f in out["findings"])


def test_splits_show_reads_label_lists_without_running_them(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    ds, _ = _hostile_dataset(tmp_path, marker)
    dataguard.cli.main(["splits", "show", str(ds), "--manifest-dir", str(tmp_path / "m0")])   # warm up
    shutil.rmtree(tmp_path / "m0")
    with hostile_extension(), watch(allow_writes=[tmp_path / "m"]) as events:
        dataguard.cli.main(["splits", "show", str(ds), "--manifest-dir", str(tmp_path / "m")])
    assert events == [] and not marker.exists()


def test_every_crafted_pickle_is_refused_by_both_loaders(tmp_path):
    marker = tmp_path / "PWNED"
    not_refused = []
    with hostile_extension(), watch() as events:
        for name, data in corpus(marker).items():
            for load in (safe_pickle.loads, safe_pickle.loads_numpy):
                try:
                    load(data)
                except safe_pickle.Refused:
                    continue
                except pickle.UnpicklingError:
                    if name in MALFORMED:
                        continue
                not_refused.append((name, load.__name__))
    assert events == [] and not marker.exists()
    assert not_refused == [], not_refused


def _with_big_payloads(data: bytes) -> list[bytes]:
    """The same pickle after a long array's data (skipped by the fast walk) in front of it."""
    return [data, pickle.dumps(np.arange(2 * safe_pickle.SKIP, dtype=np.int64), protocol=4)[:-1]
            + pickle.POP + data[2:]]


def test_the_fast_walk_vouches_for_no_crafted_pickle(tmp_path):
    """`walk` refuses what the reference path refuses: on every crafted file it is unsure (the
    reference path then says why), never a value, and nothing runs."""
    marker = tmp_path / "PWNED"
    answered = []
    with hostile_extension(), watch() as events:
        for name, data in corpus(marker).items():
            for variant in _with_big_payloads(data):
                try:
                    safe_pickle.walk(variant)
                except safe_pickle.Unsure:
                    continue
                answered.append(name)
    assert events == [] and not marker.exists()
    assert answered == [], answered


def _canon(v, seen=None):
    """A comparable form of what the loaders return (stand-ins have no __eq__; NaN != NaN)."""
    seen = set() if seen is None else seen
    t = type(v)
    if t in (list, tuple, dict, set, frozenset, collections.OrderedDict):
        if id(v) in seen:
            return ("cycle", t.__name__)
        seen = seen | {id(v)}
        if t in (dict, collections.OrderedDict):
            return (t.__name__, tuple((_canon(k, seen), _canon(x, seen)) for k, x in v.items()))
        items = tuple(_canon(x, seen) for x in v)
        return (t.__name__, tuple(sorted(items, key=repr)) if t in (set, frozenset) else items)
    if t is safe_pickle.Array:
        return ("Array", v.shape, v.dtype.spec, v.dtype.order, v._items if v._items is None else repr(v._items))
    if t is safe_pickle.Dtype:
        return ("Dtype", v.spec, v.order, v.itemsize)
    return (t.__name__, repr(v))


def _verdict(load, data):
    try:
        return "value", _canon(load(data))
    except safe_pickle.Refused as e:
        return "refused", str(e)
    except Exception as e:  # noqa: BLE001 - garbage of any kind
        return "error", type(e).__name__


def _reference(data):
    try:
        return safe_pickle._checked(data, safe_pickle._LightBackend())
    except safe_pickle.NeedNumpy:
        return safe_pickle.loads_numpy(data)


def test_the_fast_walk_returns_what_the_reference_path_returns():
    """Real nnU-Net properties in every protocol, big class_locations included: `walk` answers
    (it is the path a scan takes), with the reference path's value; `loads` gives the same."""
    from conftest import props

    big = {1: np.arange(40_000, dtype=np.int64).reshape(10_000, 4), 2: np.zeros((0, 4), np.int64),
           3: np.ones((3, 4), np.int64)}
    for value in (props(), {**props(), "class_locations": big},
                  {**props(), "nibabel_stuff": {"original_affine": np.eye(4)}, "class_locations": big}):
        for proto in (2, 3, 4, 5):
            data = pickle.dumps(value, protocol=proto)
            want = _verdict(_reference, data)
            assert want[0] == "value"
            assert _verdict(safe_pickle.loads, data) == want
            if proto >= 4:                        # protocols 2-3 name globals with GLOBAL: the reference path
                assert _verdict(safe_pickle.walk, data) == want, proto


def test_a_long_payload_used_as_a_value_goes_to_the_reference_path():
    """Bytes the walk did not read may only be a long array's data: as a value, a key or a set
    member the walk is unsure and the reference path answers (exactly)."""
    blob = bytes(range(256)) * 20
    for value in ({"x": blob}, {blob: 1}, {"s": {blob}}, [blob, blob], {"b": bytearray(blob)}):
        for proto in (4, 5):
            data = pickle.dumps(value, protocol=proto)
            with pytest.raises(safe_pickle.Unsure):
                safe_pickle.walk(data)
            assert _verdict(safe_pickle.loads, data) == _verdict(_reference, data)
    data = pickle.dumps({"x": blob}, protocol=4)
    assert safe_pickle.loads(data) == {"x": blob}
    arr = pickle.dumps(np.frombuffer(blob, np.uint8), protocol=4)     # an array's data: the walk answers
    assert _verdict(safe_pickle.walk, arr) == _verdict(_reference, arr)


def test_check_pkl_finds_the_same_through_both_paths(tmp_path):
    """Findings and facts of the scan's check do not depend on which path read the file."""
    from conftest import props

    task = FileTask("x.pkl", "preprocessed/c/x.pkl", "pkl", "config", "x")
    cases = [props(), {**props(), "class_locations": {1: np.zeros((10_000, 4), np.int64), 2: []}},
             {**props(), "spacing": np.zeros(3)}, {**props(), "class_locations": {"a": np.zeros((900, 4))}},
             {k: v for k, v in props().items() if k != "spacing"}, [1, 2]]
    for value in cases:
        data = pickle.dumps(value, protocol=4)
        fast = check_pkl(task, data)
        real_walk = safe_pickle.walk
        try:
            safe_pickle.walk = _never_sure
            slow = check_pkl(task, data)
        finally:
            safe_pickle.walk = real_walk
        assert fast == slow, value


def _never_sure(data):
    raise safe_pickle.Unsure("test: reference path only")


def test_real_properties_still_load_exactly(tmp_path):
    """What nnU-Net writes (every protocol) comes back equal to pickle's own load."""
    from conftest import props

    value = {**props(), "nibabel_stuff": {"original_affine": np.eye(4), "reoriented_affine": np.eye(4)},
             "class_locations": {1: np.arange(40, dtype=np.int64).reshape(10, 4), 2: np.zeros((0, 4), np.int64)}}
    for proto in range(6):
        data = pickle.dumps(value, protocol=proto)
        got, want = safe_pickle.loads_numpy(data), pickle.loads(data)
        assert got.keys() == want.keys()
        for k in ("spacing", "shape_before_cropping", "bbox_used_for_cropping", "sitk_stuff"):
            assert got[k] == want[k]
        assert all(np.array_equal(got["class_locations"][k], want["class_locations"][k])
                   and got["class_locations"][k].dtype == want["class_locations"][k].dtype for k in want["class_locations"])
        assert np.array_equal(got["nibabel_stuff"]["original_affine"], want["nibabel_stuff"]["original_affine"])
    assert np.dtype("f8").byteorder == "="          # numpy's shared dtype was never mutated by a BUILD


def test_the_allow_list_is_exact_pairs_only():
    for (module, name), role in safe_pickle.ALLOWED.items():
        assert "." not in name and not name.startswith("__") and " " not in module + name
        assert role
    assert ("numpy.dtypes", "ObjectDType") not in safe_pickle.ALLOWED
    assert ("builtins", "getattr") not in safe_pickle.ALLOWED


# --- random opcode streams over the allowed names ------------------------------------------------------
_NAMES = sorted(safe_pickle.ALLOWED) + [("os", "system"), ("numpy.dtypes", "__builtins__.get"), ("builtins", "getattr")]
_simple = st.sampled_from([pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE, pickle.EMPTY_LIST, pickle.EMPTY_TUPLE,
                           pickle.EMPTY_DICT, pickle.EMPTY_SET, pickle.MARK, pickle.TUPLE, pickle.TUPLE1,
                           pickle.TUPLE2, pickle.TUPLE3, pickle.LIST, pickle.DICT, pickle.APPEND, pickle.APPENDS,
                           pickle.SETITEM, pickle.SETITEMS, pickle.ADDITEMS, pickle.FROZENSET, pickle.POP,
                           pickle.POP_MARK, pickle.DUP, pickle.MEMOIZE, pickle.REDUCE, pickle.BUILD, pickle.NEWOBJ,
                           pickle.STACK_GLOBAL, pickle.OBJ, pickle.STOP])
_ints = st.integers(-(2 ** 31), 2 ** 31 - 1).map(lambda i: pickle.BININT + i.to_bytes(4, "little", signed=True))
_small = st.integers(0, 255).map(lambda i: pickle.BININT1 + bytes([i]))
_text = st.sampled_from(["f8", "i8", "u1", "b1", "U4", "S3", "O", "V8", "<", ">", "|", "C", "F", "latin-1", "b",
                         "eval", "x"]).map(lambda s: pickle.SHORT_BINUNICODE + bytes([len(s)]) + s.encode())
_bytes = st.binary(max_size=24).map(lambda b: pickle.SHORT_BINBYTES + bytes([len(b)]) + b)
_global = st.sampled_from(_NAMES).map(lambda mn: (pickle.SHORT_BINUNICODE + bytes([len(mn[0])]) + mn[0].encode()
                                                  + pickle.SHORT_BINUNICODE + bytes([len(mn[1])]) + mn[1].encode()
                                                  + pickle.STACK_GLOBAL))
_get = st.integers(0, 8).map(lambda i: pickle.BINGET + bytes([i]))
_stream = st.lists(st.one_of(_simple, _ints, _small, _text, _bytes, _global, _global, _get), max_size=60).map(
    lambda ops: pickle.PROTO + b"\x04" + b"".join(ops) + pickle.STOP)


# long payloads the fast walk skips, and whole arrays built from them
_long = st.integers(safe_pickle.SKIP, safe_pickle.SKIP + 64).map(
    lambda n: pickle.BINBYTES + n.to_bytes(4, "little") + b"\x01" * n)
_long_array = st.integers(safe_pickle.SKIP // 8, safe_pickle.SKIP // 8 + 8).map(
    lambda n: pickle.dumps(np.ones((n, 2), np.int64), protocol=4)[2:-1])
_mixed = st.lists(st.one_of(_simple, _ints, _small, _text, _bytes, _global, _get, _long, _long_array), max_size=60).map(
    lambda ops: pickle.PROTO + b"\x04" + b"".join(ops) + pickle.STOP)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_stream, _mixed))
def test_random_opcode_streams_the_fast_walk_answers_as_the_reference_path(data):
    """Wherever `walk` answers, the reference path gives the same value; where the reference
    path refuses or fails, `walk` is unsure. Nothing runs either way."""
    with watch() as events:
        want = _verdict(_reference, data)
        got = _verdict(safe_pickle.walk, data)
        assert _verdict(safe_pickle.loads, data) == want
    assert events == []
    if got[0] != "error":
        assert got == want
    else:
        assert got[1] == "Unsure"


_LONG = [b"\x02" * safe_pickle.SKIP, bytearray(b"\x03" * safe_pickle.SKIP),
         np.arange(safe_pickle.SKIP, dtype=np.int64).reshape(-1, 4), np.ones(safe_pickle.SKIP, np.uint8)]
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8),
                  st.sampled_from(_LONG), st.integers(0, 70).map(lambda n: np.arange(n, dtype=np.float64)))
_values = st.recursive(_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.tuples(kids, kids), st.sets(st.integers(), max_size=3),
    st.dictionaries(st.one_of(st.integers(), st.text(max_size=4)), kids, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values, st.sampled_from([2, 3, 4, 5]))
def test_random_plain_values_the_fast_walk_answers_as_the_reference_path(value, proto):
    """Plain data with long arrays and long bytes (the same objects shared, so memoized):
    wherever `walk` answers it is the reference path's value."""
    data = pickle.dumps(value, protocol=proto)
    want = _verdict(_reference, data)
    got = _verdict(safe_pickle.walk, data)
    assert want[0] == "value"
    assert got == want or got == ("error", "Unsure")
    assert _verdict(safe_pickle.loads, data) == want


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stream)
def test_random_opcode_streams_run_nothing_and_end_as_error_findings(data):
    task = FileTask("x.pkl", "preprocessed/c/x.pkl", "pkl", "config", "x")
    with watch() as events:
        findings, _ = check_pkl(task, data)
        for load in (safe_pickle.loads, safe_pickle.loads_numpy):
            try:
                load(data)
            except pickle.UnpicklingError:           # Refused and Malformed are UnpicklingErrors
                pass
    assert events == []
    assert findings and all(f.severity.name == "ERROR" and f.code in ("DG204", "DG205") for f in findings)


@pytest.mark.nnunet
def test_ensemble_refuses_a_crafted_properties_file(trained_models, tmp_path, capsys):
    """A `.pkl` beside a model's probabilities asks for os.system: exit 2, named, nothing written."""
    marker = tmp_path / "PWNED"
    fold = trained_models["trainer_dir"] / "fold_1" / "validation"
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        shutil.copytree(fold, d)
        for f in ("dataset.json", "plans.json"):
            shutil.copy(trained_models["trainer_dir"] / f, d / f)
    assert dataguard.cli.main(["ensemble", "-i", str(a), "-i", str(b), "-o", str(tmp_path / "warm")]) == 0
    victims = sorted(a.glob("*.pkl"))
    for p in victims:
        p.write_bytes(corpus(marker)["reduce/os.system/p4"])
    for p in b.glob("*.pkl"):
        p.unlink()
    capsys.readouterr()
    with watch(allow_writes=[tmp_path / "ens"]) as events:
        rc = dataguard.cli.main(["ensemble", "-i", str(a), "-i", str(b), "-o", str(tmp_path / "ens")])
    err = capsys.readouterr().err
    assert events == [] and not marker.exists()
    assert rc == 2 and "pickle asks for posix.system: not executed" in err, err
    assert not (tmp_path / "ens").exists()
    # an object array where the probabilities should be: refused by name, never unpickled
    for p in victims:
        shutil.copy(fold / p.name, p)
    npz = sorted(a.glob("*.npz"))[0]
    np.savez(npz, probabilities=np.array([object()], dtype=object))
    capsys.readouterr()
    with watch(allow_writes=[tmp_path / "ens2"]) as events:
        rc = dataguard.cli.main(["ensemble", "-i", str(a), "-i", str(b), "-o", str(tmp_path / "ens2")])
    err = capsys.readouterr().err
    assert events == [] and rc == 2 and "object array" in err, err


def test_the_audit_hook_sees_what_a_payload_does(tmp_path):
    """The proof above can fail: pickle's own loader runs the corpus, and the hook records it."""
    marker = tmp_path / "PWNED"
    files = corpus(marker)
    with watch() as events:
        pickle.loads(files["reduce/eval/p4"])
    assert marker.exists()
    assert any(e.startswith("exec of code from <string>") for e in events), events
    assert any(e.startswith("os.system") for e in events), events
    with watch(allow_writes=[tmp_path / "ok"]) as events:
        (tmp_path / "elsewhere.txt").write_text("x")
        (tmp_path / "ok").mkdir()
        (tmp_path / "ok" / "fine.txt").write_text("x")
    assert events == [f"write: open {tmp_path / 'elsewhere.txt'}"], events


def test_no_module_unpickles_with_the_standard_loaders():
    """The only ways in: safe_pickle (data), checkpoint_trust (torch, weights_only=True)."""
    import ast
    from pathlib import Path

    import dataguard

    bad = []
    for path in Path(dataguard.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        rel = path.relative_to(Path(dataguard.__file__).parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                kws = {k.arg: k.value for k in node.keywords}
                if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.loads", "marshal.loads"):
                    bad.append(f"{rel}:{node.lineno} {name}")
                if name in ("np.load", "numpy.load") and not (
                        isinstance(kws.get("allow_pickle"), ast.Constant) and kws["allow_pickle"].value is False):
                    bad.append(f"{rel}:{node.lineno} {name} without allow_pickle=False")
                if name == "torch.load" and rel != "checkpoint_trust.py":
                    bad.append(f"{rel}:{node.lineno} torch.load")
                if name.endswith(".load") and "weights_only" in kws and not (
                        isinstance(kws["weights_only"], ast.Constant) and kws["weights_only"].value is True):
                    bad.append(f"{rel}:{node.lineno} weights_only not True")
    assert bad == [], bad


def test_ensemble_reads_a_properties_file_bounded(trained_models, tmp_path, capsys):
    """A sparse 2.2 GB `.pkl` beside probabilities is refused by its size (exit 2, named), never
    read whole; a FIFO named so is no properties file (never opened, so no wait for a writer)."""
    import os
    import resource

    fold = trained_models["trainer_dir"] / "fold_1" / "validation"
    a = tmp_path / "a"
    shutil.copytree(fold, a)
    for f in ("dataset.json", "plans.json"):
        shutil.copy(trained_models["trainer_dir"] / f, a / f)
    victim = sorted(a.glob("*.pkl"))[0]
    victim.unlink()
    with open(victim, "wb") as f:
        f.truncate(2200 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with watch(allow_writes=[tmp_path / "ens"]) as events:
        rc = dataguard.cli.main(["ensemble", "-i", str(a), "-i", str(a), "-o", str(tmp_path / "ens")])
    err = capsys.readouterr().err
    assert events == [] and rc == 2 and "not nnU-Net's properties" in err and victim.name in err, err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1 << 20      # KB: far below 2.2 GB
    if hasattr(os, "mkfifo"):
        victim.unlink()
        os.mkfifo(victim)
        rc = dataguard.cli.main(["ensemble", "-i", str(a), "-i", str(a), "-o", str(tmp_path / "ens")])
        assert rc == 2 and "no properties file" in capsys.readouterr().err      # not opened, no hang
