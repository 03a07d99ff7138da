"""No input may end a scan early, and malformed metadata is a finding.

Property tests write arbitrary JSON / plain-data pickles where nnU-Net expects
dataset.json (raw and preprocessed), nnUNetPlans.json, dataset_fingerprint.json,
splits_final.json and a case's .pkl, scan, and require that nothing escapes and that
no finding is DG001 (the "a check could not finish" code): each of these inputs has its
own code (DG211, DG204, DG301, DG501). Then special files (FIFOs, folders, devices,
dangling symlinks) and file names with newlines, through the library and the CLI.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataguard
from conftest import LABELS, PLANS, codes, props, write_case_npz, write_pkl, predicted_split
from dataguard.checks import FileCheck, register, unregister
from dataguard.findings import Severity
from dataguard.checks.metadata import dataset_problems, fingerprint_problems, is_label_value, plans_problems
from dataguard.checks.pickles import REQUIRED_KEYS, present_labels, type_problems
from dataguard.splits.folds import structure_problems

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DS, CFG = "Dataset777_Tiny", "nnUNetPlans_3d_fullres"
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 2, "file_ending": ".nii.gz"}
# a valid 2-fold split of build()'s cases: the splits check then reads dataset.json's labels too
SPLITS = [{"train": ["case_0"], "val": ["case_1"]}, {"train": ["case_1"], "val": ["case_0"]}]


# --- a small dataset, built per example (hypothesis and function-scoped fixtures don't mix) ------
@functools.lru_cache(maxsize=1)
def _nifti_bytes(case: int = 0) -> tuple[bytes, bytes]:
    """An image and its label; each case's image its own voxels (identical ones are DG310).
    In Hounsfield units, as the channel name 'CT' says (air at -1000: no DG313)."""
    import nibabel as nib

    lab = (np.arange(8 * 8 * 4).reshape(8, 8, 4) % 4).astype(np.uint8)
    img = np.where(lab == 0, -1000.0, lab.astype(np.float32) * 100).astype(np.float32) + case
    out = []
    for arr in (img, lab):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "x.nii.gz"
            nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 2.0, 1.0])), p)
            out.append(p.read_bytes())
    return out[0], out[1]


def build(root: Path, *, raw: bool = False, n: int = 2) -> Path:
    """nnUNet_preprocessed/Dataset777_Tiny (legacy .npz + .pkl, n cases), optionally its raw twin."""
    pre = root / "nnUNet_preprocessed" / DS
    cfg = pre / CFG
    cfg.mkdir(parents=True)
    (pre / "dataset.json").write_text(json.dumps({**DATASET_JSON, "numTraining": n}))
    (pre / "dataset_fingerprint.json").write_text("{}")
    (pre / "nnUNetPlans.json").write_text(json.dumps(PLANS))
    for i in range(n):
        write_case_npz(cfg, f"case_{i}")
        write_pkl(cfg, f"case_{i}")
    if raw:
        r = root / "nnUNet_raw" / DS
        (r / "imagesTr").mkdir(parents=True)
        (r / "labelsTr").mkdir()
        (r / "dataset.json").write_text(json.dumps({**DATASET_JSON, "numTraining": n}))
        for i in range(n):
            img, lab = _nifti_bytes(i)
            (r / "imagesTr" / f"case_{i}_0000.nii.gz").write_bytes(img)
            (r / "labelsTr" / f"case_{i}.nii.gz").write_bytes(lab)
    return pre


def scan(pre: Path, root: Path, **kw):
    return dataguard.scan([str(pre)], manifest_dir=root / "m", jobs=1, **kw)


def no_dg001(result):
    bad = [f.to_dict() for f in result.findings if f.code == "DG001"]
    assert not bad, bad


def at(result, code: str, path: str):
    return [f for f in result.findings if f.code == code and f.path == path]


def scan_with(mutate, *, raw: bool = False):
    """Build a dataset in a temp folder, let `mutate(pre_root, raw_root)` spoil it, scan it."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        pre = build(root, raw=raw)
        mutate(pre, root / "nnUNet_raw" / DS)
        return scan(pre, root)


# --- strategies -----------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(-(10 ** 20), 10 ** 20)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


def json_bytes(values) -> st.SearchStrategy[bytes]:
    """JSON text of the values (NaN/Infinity included, as Python writes them), or raw bytes."""
    return st.one_of(values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=24),
                     st.sampled_from([b"", b"   ", b"\xef\xbb\xbf{}", b"[" * 5000, b"{\"a\": 1"]))


def either(valid, wrong=json_values):
    return st.one_of(st.just(valid), wrong)


def optional_keys(required: dict, optional: dict):
    return st.fixed_dictionaries(required, optional=optional)


label_dicts = st.dictionaries(
    st.sampled_from(["background", "a", "b", "ignore", "r"]),
    st.one_of(st.integers(-2, 5), json_values, st.lists(st.integers(0, 4), max_size=3),
              st.sampled_from([float("inf"), float("nan"), 1.0, 2.5, True, None, {}])),
    max_size=4)
labels_like = st.one_of(st.just(LABELS), label_dicts, json_values)
dataset_json_values = st.one_of(
    json_values,
    optional_keys({"labels": labels_like},
                  {"channel_names": either({"0": "CT"}, st.dictionaries(st.text(max_size=3), json_values,
                                                                        max_size=3) | json_values),
                   "modality": json_values, "numTraining": either(2), "file_ending": either(".nii.gz"),
                   "regions_class_order": json_values,
                   "dataset": json_values | st.dictionaries(st.sampled_from(["case_0", "case_1"]), json_values)}))

good_conf = PLANS["configurations"]["3d_fullres"]
config_values = st.one_of(
    json_values,
    optional_keys({}, {**{k: either(v) for k, v in good_conf.items()},
                       **{k: json_values for k in ("normalization_schemes", "use_mask_for_norm",
                                                   "preprocessor_name", "median_image_size_in_voxels",
                                                   "architecture", "next_stage", "batch_dice")},
                       "inherits_from": st.one_of(st.sampled_from(["3d_fullres", "2d", "x"]), json_values)}))
plans_values = st.one_of(
    json_values,
    optional_keys({"configurations": st.one_of(
        st.dictionaries(st.sampled_from(["3d_fullres", "2d", "x"]), config_values, max_size=3), json_values)},
        {"plans_name": either("nnUNetPlans"),
         **{k: either([0, 1, 2]) for k in ("transpose_forward", "transpose_backward")},
         **{k: json_values for k in ("original_median_spacing_after_transp", "dataset_name",
                                     "foreground_intensity_properties_per_channel")}}))
fingerprint_values = st.one_of(json_values, optional_keys({}, {
    k: json_values for k in ("spacings", "shapes_after_crop", "foreground_intensity_properties_per_channel",
                             "median_relative_size_after_cropping")}))
case_names = st.sampled_from(["case_0", "case_1", "nope"]) | json_values
splits_values = st.one_of(
    json_values,
    st.lists(optional_keys({}, {"train": st.lists(case_names, max_size=3) | json_values,
                                "val": st.lists(case_names, max_size=3) | json_values}), max_size=3))

pkl_scalars = (st.none() | st.booleans() | st.integers(-(10 ** 20), 10 ** 20) | st.floats()
               | st.text(max_size=4) | st.binary(max_size=4)
               | st.sampled_from([np.float64(1.5), np.int64(3), np.float32("nan"), np.bool_(True),
                                  np.zeros(0), np.zeros((2, 4), np.int64), np.ones(3), np.array(5),
                                  np.array(["a", "b"])]))
hashable = st.one_of(st.none(), st.booleans(), st.integers(-2, 5), st.floats(), st.text(max_size=3),
                     st.tuples(st.integers(-1, 4), st.integers(0, 4)), st.sampled_from([np.int64(2), np.float64(1.0)]))
pkl_values = st.recursive(pkl_scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                          | st.dictionaries(hashable, inner, max_size=4), max_leaves=10)
good_props = props()
props_values = st.one_of(
    pkl_values,
    optional_keys({k: either(good_props[k], pkl_values) for k in REQUIRED_KEYS},
                  {"sitk_stuff": pkl_values}),
    st.fixed_dictionaries({**{k: st.just(good_props[k]) for k in REQUIRED_KEYS},
                           "class_locations": st.dictionaries(hashable, pkl_values, max_size=4)}))


# --- property tests: arbitrary content -> specific findings, never DG001, never an exception -----
@FUZZ
@given(dataset_json_values)
def test_any_preprocessed_dataset_json(value):
    data = json.dumps(value).encode()

    def mutate(pre, _raw):
        (pre / "dataset.json").write_bytes(data)
        (pre / "splits_final.json").write_text(json.dumps(SPLITS))

    r = scan_with(mutate)
    no_dg001(r)
    assert bool(dataset_problems(value)) == bool(at(r, "DG211", "preprocessed/dataset.json"))


@FUZZ
@given(label_dicts, st.booleans())
def test_any_labels(labels, on_raw):
    """dataset.json's labels feed the walk, the value checks, DG404 and the splits check."""
    meta = {**DATASET_JSON, "labels": labels}

    def mutate(pre, raw):
        (raw if on_raw else pre).joinpath("dataset.json").write_text(json.dumps(meta))
        (pre / "splits_final.json").write_text(json.dumps(SPLITS))

    r = scan_with(mutate, raw=on_raw)
    no_dg001(r)
    if not on_raw:
        assert bool(dataset_problems(meta)) == bool(at(r, "DG211", "preprocessed/dataset.json"))
    elif not labels or not all(is_label_value(v) for v in labels.values()):
        assert at(r, "DG301", "raw/dataset.json")


@FUZZ
@given(json_bytes(dataset_json_values))
def test_any_preprocessed_dataset_json_bytes(data):
    def mutate(pre, _raw):
        (pre / "dataset.json").write_bytes(data)

    no_dg001(scan_with(mutate))


@FUZZ
@given(json_bytes(dataset_json_values))
def test_any_raw_dataset_json(data):
    def mutate(pre, raw):
        (raw / "dataset.json").write_bytes(data)
        (pre / "splits_final.json").write_text(json.dumps(SPLITS))

    r = scan_with(mutate, raw=True)
    no_dg001(r)
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        assert at(r, "DG301", "raw/dataset.json")


@FUZZ
@given(plans_values)
def test_any_plans(value):
    def mutate(pre, _raw):
        (pre / "nnUNetPlans.json").write_text(json.dumps(value))

    r = scan_with(mutate)
    no_dg001(r)
    found = at(r, "DG211", "preprocessed/nnUNetPlans.json")
    assert len(found) == len(plans_problems(value)), [f.message for f in found]


@FUZZ
@given(json_bytes(fingerprint_values))
def test_any_fingerprint(data):
    def mutate(pre, _raw):
        (pre / "dataset_fingerprint.json").write_bytes(data)

    r = scan_with(mutate)
    no_dg001(r)
    try:
        ok = not fingerprint_problems(json.loads(data.decode("utf-8")))
    except (ValueError, RecursionError):
        ok = False
    assert ok == (not at(r, "DG211", "preprocessed/dataset_fingerprint.json"))


@FUZZ
@given(splits_values)
def test_any_splits(value):
    def mutate(pre, _raw):
        (pre / "splits_final.json").write_text(json.dumps(value))

    r = scan_with(mutate)
    no_dg001(r)
    if structure_problems(value):
        assert at(r, "DG501", "preprocessed/splits_final.json")


@FUZZ
@given(props_values)
def test_any_plain_data_pkl(value):
    def mutate(pre, _raw):
        (pre / CFG / "case_0.pkl").write_bytes(pickle.dumps(value))

    r = scan_with(mutate)
    no_dg001(r)
    rel = f"preprocessed/{CFG}/case_0.pkl"
    if not isinstance(value, dict) or any(k not in value for k in REQUIRED_KEYS) or type_problems(value):
        assert at(r, "DG204", rel)
    else:
        assert not at(r, "DG204", rel)
    labels = present_labels(value) if isinstance(value, dict) else None
    assert labels is None or all(isinstance(x, int) for x in labels)


# --- DG211 / DG204 / DG301 / DG001, one example each -------------------------------------------
def test_dg211_plans_with_wrong_types(tiny_pre, tmp_path):
    plans = json.loads(json.dumps(PLANS))
    conf = plans["configurations"]["3d_fullres"]
    conf["patch_size"], conf["batch_size"] = ["a"], "2"
    del conf["spacing"]
    plans["configurations"]["lowres"] = {"inherits_from": "missing"}
    (tiny_pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    msgs = sorted(f.message for f in codes(scan(tiny_pre, tmp_path), "DG211"))
    assert msgs == [
        "nnUNetPlans.json: configurations.3d_fullres.batch_size must be a positive integer, got '2'",
        "nnUNetPlans.json: configurations.3d_fullres.patch_size must be a list of positive integers, got ['a']",
        "nnUNetPlans.json: configurations.3d_fullres.spacing is missing (must be a list of positive numbers)",
        "nnUNetPlans.json: configurations.lowres.inherits_from must name another configuration "
        "(one of ['3d_fullres']), got 'missing'",
    ]


def test_dg211_inheritance_cycle_and_transpose(tiny_pre, tmp_path):
    plans = json.loads(json.dumps(PLANS))
    plans["configurations"].update({"a": {"inherits_from": "b"}, "b": {"inherits_from": "a"}})
    plans["transpose_forward"], plans["transpose_backward"] = [1, 2, 0], [1, 2, 0]
    (tiny_pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    msgs = [f.message for f in codes(scan(tiny_pre, tmp_path), "DG211")]
    assert any("circular inherits_from a -> b -> a" in m for m in msgs), msgs
    assert any("transpose_backward must undo transpose_forward" in m for m in msgs), msgs
    assert len(msgs) == 2


def test_dg211_garbage_preprocessed_dataset_json(tiny_pre, tmp_path):
    (tiny_pre / "dataset.json").write_bytes(b"\xff\xfe{garbage")
    [f] = codes(scan(tiny_pre, tmp_path), "DG211")
    assert f.path == "preprocessed/dataset.json" and "not UTF-8" in f.message


def test_dg211_preprocessed_dataset_json_types(tiny_pre, tmp_path):
    (tiny_pre / "dataset.json").write_text(json.dumps(
        {"channel_names": [], "labels": {"background": 0, "a": {"x": 1}, "b": 1.5}, "file_ending": 7}))
    r = scan(tiny_pre, tmp_path)
    msgs = sorted(f.message for f in codes(r, "DG211"))
    assert msgs == [
        "dataset.json: channel_names must be a non-empty object mapping channel index -> name, got []",
        "dataset.json: file_ending must be a file ending string such as '.nii.gz', got 7",
        "dataset.json: labels.a must be an integer (or a list of integers for a region), got {'x': 1}",
        "dataset.json: labels.b must be an integer (or a list of integers for a region), got 1.5",
        "dataset.json: numTraining is missing (must be a non-negative integer)",
    ]
    no_dg001(r)


def test_dg211_empty_fingerprint(tiny_pre, tmp_path):
    (tiny_pre / "dataset_fingerprint.json").write_bytes(b"")
    [f] = codes(scan(tiny_pre, tmp_path), "DG211")
    assert f.path == "preprocessed/dataset_fingerprint.json" and "empty" in f.message


def test_dg211_missing_dataset_json_and_plans(tiny_pre, tmp_path):
    (tiny_pre / "dataset.json").unlink()
    (tiny_pre / "nnUNetPlans.json").rename(tiny_pre / "plans.bak")
    r = scan(tiny_pre, tmp_path)
    assert {f.path for f in codes(r, "DG211")} == {"preprocessed/dataset.json", "preprocessed/nnUNetPlans.json"}


def test_clean_plans_and_metadata_have_no_dg211(tmp_path):
    def mutate(pre, _raw):
        (pre / "splits_final.json").write_text(json.dumps(SPLITS))

    assert scan_with(mutate, raw=True).findings == []


def test_raw_side_json_and_splits_are_not_plans(tmp_path):
    from dataguard.checks.base import FileTask
    from dataguard.checks.metadata import check_metadata_file

    for rel, where in (("raw/dataset.json", "raw"), ("preprocessed/splits_final.json", "dataset"),
                       ("preprocessed/splits_final.json.bak-20240101-000000", "dataset"),
                       ("preprocessed/gt_segmentations/x.json", "dataset")):
        assert check_metadata_file(FileTask("/nope", rel, "json", where), b"\xff") == ([], {})


def test_dg204_spacing_as_strings(tiny_pre, tmp_path):
    p = props()
    p["spacing"] = ["1.0", "1.0", "1.0"]
    write_pkl(tiny_pre / CFG, "case_0", p)
    [f] = codes(scan(tiny_pre, tmp_path), "DG204")
    assert "'spacing' must be 2-3 positive finite numbers" in f.message and f.case == "case_0"


def test_dg204_class_locations_with_string_keys(tiny_pre, tmp_path):
    p = props()
    p["class_locations"] = {"1": np.zeros((2, 4), np.int64), None: [], 2.5: []}
    write_pkl(tiny_pre / CFG, "case_0", p)
    r = scan(tiny_pre, tmp_path)
    [f] = codes(r, "DG204")
    assert "'class_locations' keys must be integer labels" in f.message
    no_dg001(r)
    assert present_labels(p) == []


def test_present_labels_never_raises():
    weird = {"class_locations": {"a": 1, 1.5: [1], None: np.array(3), (1, 2): [1], 3: np.zeros((2, 4)),
                                 np.int64(4): [[0, 1, 2, 3]], 5: [], True: [1]}}
    assert present_labels(weird) == [3, 4]
    assert present_labels({"class_locations": [1, 2]}) is None
    assert present_labels([]) is None


def test_real_region_and_ignore_keys_are_fine():
    p = props()
    p["class_locations"] = {(1, 2): np.zeros((3, 4), np.int64), (-1, 0, 1, 2): [], 3: []}
    p["bbox_used_for_cropping"] = [[np.int64(0), np.int64(4)], [0, 8], [0, 8]]
    p["spacing"] = np.array([1.0, 0.5, 0.5])
    assert type_problems(p) == []


@pytest.mark.parametrize("labels", [{"background": 0, "a": {"x": 1}}, {"background": 0, "a": 1.5},
                                    {"background": 0, "a": True}, {"background": 0, "a": None},
                                    {"background": 0, "a": [1, "b"]}])
def test_dg301_label_values_of_the_wrong_type(labels, tmp_path):
    def mutate(_pre, raw):
        (raw / "dataset.json").write_text(json.dumps({**DATASET_JSON, "labels": labels}))

    r = scan_with(mutate, raw=True)
    no_dg001(r)
    assert any("label 'a'" in f.message for f in at(r, "DG301", "raw/dataset.json"))


@pytest.mark.parametrize("ending", [5, None, [".nii.gz"], {"a": 1}, "", "nii"])
def test_dg301_file_ending_not_a_string(ending, tmp_path):
    def mutate(_pre, raw):
        (raw / "dataset.json").write_text(json.dumps({**DATASET_JSON, "file_ending": ending}))

    r = scan_with(mutate, raw=True)
    no_dg001(r)
    assert any("file_ending" in f.message for f in at(r, "DG301", "raw/dataset.json"))
    # the walk fell back to .nii.gz: the cases were still found and checked
    assert not codes(r, "DG303")


def test_walk_helpers_never_raise():
    from dataguard.engine.walk import declared_labels, file_ending

    for meta in (None, {}, {"labels": []}, {"labels": {"a": 1.0}}, {"labels": {"a": "1"}},
                 {"labels": {"a": True}}, {"labels": {"a": [1, None]}}, {"labels": {"a": {"b": 1}}}):
        assert declared_labels(meta) is None
    assert declared_labels({"labels": {"b": 0, "r": [1, 2]}}) == (0, 1, 2)
    for fe in (5, None, [], {}, "", "nii"):
        assert file_ending({"file_ending": fe}) == ".nii.gz"


def test_label_names_never_raise():
    from dataguard.splits.folds import label_names

    assert label_names({"a": float("inf"), "b": float("nan"), "c": 2.0, "d": True, "e": [1], "f": {}, "g": 3}) \
        == {2: "c", 3: "g"}
    assert label_names([1, 2]) == {}


def test_a_check_that_raises_is_dg001(tiny_pre, tmp_path):
    def boom(inp):
        raise RuntimeError("kaboom")

    register(FileCheck("test-boom", ("DG001",), "raises on every .pkl", boom, kinds=frozenset({"pkl"})))
    try:
        r = scan(tiny_pre, tmp_path)
    finally:
        unregister("test-boom")
    found = codes(r, "DG001")
    assert len(found) == 3 and all("'test-boom'" in f.message and "kaboom" in f.message for f in found)
    assert {f.case for f in found} == {"case_0", "case_1", "case_2"}
    # the other checks of those files still ran
    assert codes(r) == ["DG001"] * 3


# --- special files -------------------------------------------------------------------------------
def scan_in_thread(pre: Path, root: Path, timeout: float = 30.0):
    """Scan in a daemon thread: a hang fails the test instead of blocking the suite."""
    out: dict = {}

    def go():
        try:
            out["result"] = scan(pre, root)
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "scan hung"
    if "error" in out:
        raise out["error"]
    return out["result"]


fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")


@fifo
@pytest.mark.parametrize("name", [f"{CFG}/case_0.pkl", f"{CFG}/case_0.npz", "dataset.json", "nnUNetPlans.json",
                                  "dataset_fingerprint.json", "splits_final.json"])
def test_fifo_in_preprocessed(name, tiny_pre, tmp_path):
    """A FIFO is DG105 (found with lstat, never opened), wherever it sits."""
    p = tiny_pre / name
    p.unlink(missing_ok=True)
    os.mkfifo(p)
    r = scan_in_thread(tiny_pre, tmp_path)
    no_dg001(r)
    hits = at(r, "DG105", f"preprocessed/{name}")
    assert hits and "a FIFO: never opened" in hits[0].message and hits[0].severity == Severity.ERROR


@fifo
@pytest.mark.parametrize("name", ["dataset.json", "imagesTr/case_0_0000.nii.gz", "labelsTr/case_0.nii.gz",
                                  "splits_final.json"])
def test_fifo_in_raw(name, tmp_path):
    root = tmp_path / "project"
    pre = build(root, raw=True)
    p = root / "nnUNet_raw" / DS / name
    p.unlink(missing_ok=True)
    os.mkfifo(p)
    r = scan_in_thread(pre, tmp_path)
    no_dg001(r)
    hits = at(r, "DG105", f"raw/{name}")
    assert hits and "a FIFO" in hits[0].message, [f.to_dict() for f in r.findings]


def test_read_regular_refuses_special_files(tmp_path):
    from dataguard.engine.layout import read_json, read_regular

    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "f")
        with pytest.raises(OSError, match="FIFO"):
            read_regular(tmp_path / "f")
    with pytest.raises(OSError, match="folder"):
        read_regular(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(OSError, match="device"):
            read_regular("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(OSError, match="larger"):
        read_regular(tmp_path / "big", limit=10)
    (tmp_path / "deep.json").write_text("[" * 100000)
    with pytest.raises(ValueError):
        read_json(tmp_path / "deep.json")


@pytest.mark.parametrize("name,code,path", [
    ("case_0.pkl", "DG204", f"preprocessed/{CFG}/case_0.pkl"),
    ("case_0.npz", "DG201", f"preprocessed/{CFG}/case_0.npz"),
    ("../dataset.json", "DG211", "preprocessed/dataset.json"),
    ("../nnUNetPlans.json", "DG211", "preprocessed/nnUNetPlans.json"),
])
def test_folder_where_a_file_belongs(name, code, path, tiny_pre, tmp_path):
    p = tiny_pre / CFG / name
    p.unlink()
    p.mkdir()
    (p / "inner.txt").write_text("x")
    r = scan_in_thread(tiny_pre, tmp_path)
    no_dg001(r)
    hits = at(r, code, path)
    assert hits and any("folder" in f.message for f in hits), [f.to_dict() for f in r.findings]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_dev_null_as_a_case_file(tiny_pre, tmp_path):
    p = tiny_pre / CFG / "case_0.npz"
    p.unlink()
    p.symlink_to("/dev/null")
    r = scan_in_thread(tiny_pre, tmp_path)
    [f] = at(r, "DG105", f"preprocessed/{CFG}/case_0.npz")
    assert f.severity == Severity.ERROR and "'/dev/null' (outside the dataset)" in f.message


def test_dangling_symlink_says_its_target_is_missing(tiny_pre, tmp_path):
    p = tiny_pre / CFG / "case_0.pkl"
    p.unlink()
    p.symlink_to("missing")
    r = scan_in_thread(tiny_pre, tmp_path)
    [f] = at(r, "DG105", f"preprocessed/{CFG}/case_0.pkl")
    assert "symbolic link to 'missing' (inside the dataset, to nothing)" in f.message
    assert f.severity == Severity.WARNING


# --- names with newlines and control characters ---------------------------------------------------
NL_REL = f"preprocessed/{CFG}/case\\n1.npz"       # what every face shows: one line, escaped


@pytest.fixture
def newline_names(tiny_pre):
    cfg = tiny_pre / CFG
    (cfg / "case\n1.npz").write_bytes(b"")          # DG103: a short message keeps table rows short
    write_pkl(cfg, "case\n1")
    write_case_npz(cfg, "tab\tand\x1b[31mansi")
    write_pkl(cfg, "tab\tand\x1b[31mansi")
    return tiny_pre


def test_newline_in_file_name_scan(newline_names, tmp_path):
    r = scan(newline_names, tmp_path)
    [f] = [x for x in r.findings if not predicted_split(x)]
    assert (f.code, f.path, f.case) == ("DG103", NL_REL, "case\\n1")
    view = r.views[DS]
    assert any(t.rel == f"preprocessed/{CFG}/tab\\tand\\x1b[31mansi.npz" for t in view.tasks)
    assert not any(c in t.rel for t in view.tasks for c in "\n\r\t\x1b")


def _cli(target, tmp_path, fmt):
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "dataguard", "scan", str(target), "--format", fmt, "--ignore", "DG505",
                        "--manifest-dir", str(tmp_path / "cli-m")], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 1, p.stderr
    return p.stdout


def test_newline_in_file_name_csv(newline_names, tmp_path):
    rows = list(csv.DictReader(io.StringIO(_cli(newline_names, tmp_path, "csv"))))
    assert [(r["code"], r["path"], r["case"]) for r in rows] == [("DG103", NL_REL, "case\\n1")]


def test_newline_in_file_name_table(newline_names, tmp_path):
    out = _cli(newline_names, tmp_path, "table")
    lines = out.splitlines()
    header = next(line for line in lines if "severity" in line and "code" in line)
    rows = [line for line in lines if line.startswith("│")]
    assert rows, out
    # every row line has all its column separators: no cell was split by a raw newline
    assert all(line.count("│") == header.count("┃") for line in rows), out
    [row] = [line for line in rows if "DG103" in line]
    assert "case\\n1.npz" in row and "case\\n1" in row
    assert "\x1b" not in out


def test_newline_in_file_name_json(newline_names, tmp_path):
    data = json.loads(_cli(newline_names, tmp_path, "json"))
    assert [(f["code"], f["path"]) for f in data["findings"]] == [("DG103", NL_REL)]


def test_table_escapes_control_characters_in_messages():
    from rich.console import Console

    from dataguard.findings import finding
    from dataguard.cli.render import render_table
    from dataguard.engine.scanner import ScanResult

    f = finding("DG001", "raw", "check 'x' could not finish: line one\nline two\x1b[2J")
    buf = io.StringIO()
    render_table(ScanResult(datasets=[], findings=[f]), Console(file=buf, width=200, no_color=True))
    out = buf.getvalue()
    assert "line one\\nline two\\x1b[2J" in out and "\x1b" not in out
