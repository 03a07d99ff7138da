"""Every code this release can emit, triggered for real by the smallest dataset that shows it.

TRIGGERS maps each code of `dataguard.checks.all_codes()` to a recipe: build a dataset
(hand-made in milliseconds, or a copy of the real nnunetv2 project for the raw-vs-
preprocessed cross checks), optionally scan once and then change something (DG209, the
DG7xx verify codes), then scan (or verify) with `select=[code]`. The finding must come
back, which also proves that `--select CODE` still runs every check able to emit it.
A new code without a recipe fails `test_every_code_has_a_trigger`.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

import dataguard
from conftest import LABELS, PLANS, kidney_raw_dataset, make_tiny_pre, write_b2nd, write_case_npz, write_pkl
from dataguard.checks import FileCheck, all_codes, register, unregister
from test_roundtrip import _thin_wall_dataset

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)
AFFINE = np.diag([1.25, 1.25, 8.0, 1.0])
SHAPE = (8, 8, 4)
REAL_B2ND, REAL_NPZ = "Dataset901_DemoCardiac", "Dataset902_DemoCardiacLegacy"


# --- the healthy bases every recipe starts from -------------------------------------------------
def pre_base(root: Path, case_labels: dict[str, tuple] | None = None) -> Path:
    """A healthy preprocessed dataset (legacy .npz layout, no raw): 3 cases with labels 1-3."""
    return make_tiny_pre(root, case_labels=case_labels)


def b2nd_base(root: Path) -> Path:
    """The same dataset in the blosc2 layout (nnU-Net >= 2.6)."""
    ds = pre_base(root)
    c = cfg(ds)
    for p in c.glob("*.npz"):
        p.unlink()
    for i in range(3):
        write_b2nd(c / f"case_{i}.b2nd", np.random.default_rng(i).normal(size=(1, 4, 8, 8)).astype(np.float32))
        write_b2nd(c / f"case_{i}_seg.b2nd", (np.arange(256).reshape(1, 4, 8, 8) % 4).astype(np.int16))
    return ds


def splits_base(root: Path) -> Path:
    """4 cases; label 3 only in c0 and c1 (from the .pkl class_locations)."""
    return pre_base(root, {"c0": (1, 2, 3), "c1": (1, 2, 3), "c2": (1, 2), "c3": (1, 2)})


def raw_base(root: Path) -> Path:
    """A healthy raw dataset of real NIfTI files: 2 cases, 1 channel, 8x8x4, labels 0-3 in each."""
    ds = root / "nnUNet_raw" / "Dataset779_TinyRaw"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        save(img(ds, f"heart_{i:03d}"), rng.normal(100, 20, SHAPE).astype(np.float32))
        save(lab(ds, f"heart_{i:03d}"), (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 4).astype(np.uint8))
    (ds / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "MRI"}, "labels": LABELS, "numTraining": 2, "file_ending": ".nii.gz"}))
    return ds


def cfg(ds: Path) -> Path:
    return ds / "nnUNetPlans_3d_fullres"


def img(ds: Path, case: str, ch: int = 0) -> Path:
    return ds / "imagesTr" / f"{case}_{ch:04d}.nii.gz"


def lab(ds: Path, case: str) -> Path:
    return ds / "labelsTr" / f"{case}.nii.gz"


def save(path: Path, arr, affine=AFFINE) -> None:
    nib.save(nib.Nifti1Image(arr, affine), path)


def label_array(ds: Path, case: str) -> np.ndarray:
    return np.asarray(nib.load(lab(ds, case)).dataobj).copy()


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def put_splits(ds: Path, val_sets, extra_train=()) -> None:
    cases = sorted({c for v in val_sets for c in v})
    (ds / "splits_final.json").write_text(json.dumps(
        [{"train": [c for c in cases if c not in v] + list(extra_train), "val": list(v)} for v in val_sets]))


# --- recipes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trigger:
    build: Callable[[Path], Path]               # folder -> the path to scan (a dataset or project)
    then: Callable[[Path], None] | None = None  # a change made after a first, unselected scan
    verify: bool = False                        # DG7xx: `dataguard verify` instead of a scan
    real: bool = False                          # build receives a copy of the real nnunetv2 project
    context: Callable = contextlib.nullcontext  # wraps the selected run


def on_pre(change, base=pre_base):
    def build(root):
        ds = base(root)
        change(ds)
        return ds
    return build


def on_raw(change):
    return on_pre(change, raw_base)


def on_real(change):
    def build(project):
        change(project)
        return project
    return build


@contextlib.contextmanager
def raising_pkl_check():
    """DG001 has no check of its own: any check that raises becomes DG001 for that input."""
    def boom(inp):
        raise RuntimeError("test check exploded")

    register(FileCheck("test-every-code-boom", ("DG001",), "test only: raises on every .pkl", boom,
                       kinds=frozenset({"pkl"})))
    try:
        yield
    finally:
        unregister("test-every-code-boom")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def _truncate(p: Path, keep: float = 0.5) -> None:
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])


def _npz_nan(ds):
    write_case_npz(cfg(ds), "case_0", data=np.full((1, 4, 8, 8), np.nan, np.float32))


def _seg_value_7(ds):
    seg = np.zeros((1, 4, 8, 8), np.int8)
    seg[0, 0, 0, 0] = 7
    write_case_npz(cfg(ds), "case_0", seg=seg)


def _plans_wrong_type(ds):
    plans = json.loads(json.dumps(PLANS))
    plans["configurations"]["3d_fullres"]["batch_size"] = "2"
    (ds / "nnUNetPlans.json").write_text(json.dumps(plans))


def _dg207(project):
    moved = project / "moved-away"
    moved.mkdir()
    for p in (project / "nnUNet_preprocessed" / REAL_B2ND / "nnUNetPlans_2d").glob("heart_002*"):
        shutil.move(p, moved / p.name)


def _dg208(project):
    c = project / "nnUNet_preprocessed" / REAL_NPZ / "nnUNetPlans_2d"
    for ext in (".npz", ".pkl"):
        shutil.copy(c / f"heart_001{ext}", c / f"ghost_999{ext}")


def _dg209(project):
    p = project / "nnUNet_raw" / REAL_B2ND / "labelsTr" / "heart_003.nii.gz"
    im = nib.load(p)
    arr = np.asarray(im.dataobj).copy()
    arr[arr == 2] = 1
    nib.save(nib.Nifti1Image(arr, im.affine), p)


def _nan_voxel(ds):
    arr = np.asarray(nib.load(img(ds, "heart_000")).dataobj).copy()
    arr[0, 0, 0] = np.nan
    save(img(ds, "heart_000"), arr)


def _test_image(ds, affine, copy_of: str | None = None):
    """imagesTs/t_000_0000.nii.gz: new voxels with `affine`, or a copy of a training image."""
    (ds / "imagesTs").mkdir(exist_ok=True)
    target = ds / "imagesTs" / "t_000_0000.nii.gz"
    if copy_of:
        shutil.copy(img(ds, copy_of), target)
    else:
        save(target, np.random.default_rng(9).normal(100, 20, SHAPE).astype(np.float32), affine)


def _same_patient(ds: Path, a: str, b: str) -> None:
    """Remember (as `--groups` does) that cases a and b are one patient, in the manifest folder
    test_code_is_triggered scans with (beside the data folder)."""
    from dataguard.engine.groups_store import save_rule

    table = ds.parents[2] / "patients.csv"                 # tmp_path/data/nnUNet_preprocessed/DatasetX
    table.write_text(f"case,patient\n{a},P\n{b},P\n")
    save_rule(ds.parents[2] / "m", ds.name, file=table)


def _label_value(value):
    def change(ds):
        arr = label_array(ds, "heart_000")
        arr[0, 0, 0] = value
        save(lab(ds, "heart_000"), arr)
    return change


def _flip_byte_same_size_and_mtime(ds):
    p = cfg(ds) / "case_0.npz"
    st = p.stat()
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


TRIGGERS: dict[str, Trigger] = {
    # DG0xx: the scan itself
    "DG001": Trigger(pre_base, context=raising_pkl_check),
    # DG1xx: stray files
    "DG101": Trigger(on_pre(lambda ds: (cfg(ds) / "._case_0.npz").write_bytes(APPLEDOUBLE))),
    "DG102": Trigger(on_pre(lambda ds: (cfg(ds) / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1"))),
    "DG103": Trigger(on_pre(lambda ds: (cfg(ds) / "case_1.npz").write_bytes(b""))),
    "DG104": Trigger(on_pre(lambda ds: (cfg(ds) / "case_0.npz.tmp").write_bytes(b"partial"))),
    # DG2xx: preprocessed data
    "DG201": Trigger(on_pre(lambda ds: _truncate(cfg(ds) / "case_2.npz"))),
    "DG202": Trigger(on_pre(_npz_nan)),
    "DG203": Trigger(on_pre(lambda ds: _truncate(cfg(ds) / "case_1.b2nd", 0.6), b2nd_base)),
    "DG204": Trigger(on_pre(lambda ds: write_pkl(cfg(ds), "case_0", {"spacing": [1, 1, 1]}))),
    "DG205": Trigger(on_pre(lambda ds: (cfg(ds) / "case_0.pkl").write_bytes(pickle.dumps({"x": Evil()})))),
    "DG206": Trigger(on_pre(lambda ds: (cfg(ds) / "case_0.pkl").unlink())),
    "DG207": Trigger(on_real(_dg207), real=True),
    "DG208": Trigger(on_real(_dg208), real=True),
    "DG209": Trigger(lambda project: project, then=_dg209, real=True),
    "DG210": Trigger(on_pre(_seg_value_7)),
    "DG211": Trigger(on_pre(_plans_wrong_type)),
    # DG3xx: raw dataset
    "DG301": Trigger(on_raw(lambda ds: edit_json(ds / "dataset.json", lambda m: m.pop("channel_names")))),
    "DG302": Trigger(on_raw(lambda ds: _truncate(img(ds, "heart_001"), 0.7))),
    "DG303": Trigger(on_raw(lambda ds: lab(ds, "heart_001").unlink())),
    "DG304": Trigger(on_raw(lambda ds: save(lab(ds, "heart_001"), label_array(ds, "heart_001"),
                                            np.diag([1.25, 1.25, 8.5, 1.0])))),
    "DG305": Trigger(on_raw(lambda ds: edit_json(ds / "dataset.json", lambda m: m.update(numTraining=3)))),
    "DG306": Trigger(on_raw(_nan_voxel)),
    "DG307": Trigger(on_raw(lambda ds: save(img(ds, "heart_000"), np.ones((*SHAPE, 3), np.float32)))),
    "DG308": Trigger(on_raw(lambda ds: _test_image(ds, np.diag([-1.25, 1.25, 8.0, 1.0])))),
    "DG309": Trigger(on_raw(lambda ds: _test_image(ds, np.diag([0.3, 0.3, 2.0, 1.0])))),
    "DG310": Trigger(on_raw(lambda ds: _test_image(ds, AFFINE, copy_of="heart_001"))),
    "DG311": Trigger(on_raw(lambda ds: edit_json(ds / "dataset.json", lambda m: (
        m.update(modality=m.pop("channel_names"), labels={str(v): k for k, v in m["labels"].items()},
                 training=[]))))),
    "DG312": Trigger(on_raw(lambda ds: edit_json(ds / "dataset.json", lambda m: m["labels"].update(ignore=1)))),
    "DG313": Trigger(on_raw(lambda ds: edit_json(ds / "dataset.json",
                                                 lambda m: m["channel_names"].update({"0": "CTA"})))),
    "DG314": Trigger(lambda root: kidney_raw_dataset(root / "nnUNet_raw")),     # a real CT's kidneys
    # DG4xx: labels
    "DG401": Trigger(on_raw(lambda ds: save(lab(ds, "heart_000"), label_array(ds, "heart_000").astype(np.float32)))),
    "DG402": Trigger(on_raw(_label_value(9))),
    "DG403": Trigger(on_raw(lambda ds: save(lab(ds, "heart_001"), np.zeros(SHAPE, np.uint8)))),
    "DG404": Trigger(on_raw(lambda ds: edit_json(ds / "dataset.json", lambda m: m["labels"].update(aorta=4)))),
    # a 1-voxel wall and plans with a configuration 3x coarser than the images (test_roundtrip.py)
    "DG405": Trigger(lambda root: _thin_wall_dataset(root) / "nnUNet_raw" / "Dataset950_Wall"),
    "DG406": Trigger(lambda root: _shifted_annotation(root)),
    # DG5xx: cross-validation splits
    "DG501": Trigger(on_pre(lambda ds: (ds / "splits_final.json").write_text("[]"), splits_base)),
    "DG502": Trigger(on_pre(lambda ds: put_splits(ds, [("c0", "c2"), ("c1", "c3")], extra_train=["c0"]),
                            splits_base)),
    "DG503": Trigger(on_pre(lambda ds: put_splits(ds, [("c0", "c2"), ("c1", "c3")], extra_train=["ghost"]),
                            splits_base)),
    "DG504": Trigger(on_pre(lambda ds: put_splits(ds, [("c0", "c1"), ("c2", "c3")]), splits_base)),
    "DG506": Trigger(on_pre(lambda ds: (put_splits(ds, [("c0", "c2"), ("c1", "c3")]), _same_patient(ds, "c0", "c1")),
                            splits_base)),
    "DG505": Trigger(lambda root: pre_base(root, {f"c{i}": (1, 2, 3) for i in range(5)})),
    # 2 raw training cases, preprocessed, no splits_final.json: nnU-Net's KFold(5) fails
    "DG507": Trigger(lambda root: (raw_base(root), make_tiny_pre(root, "Dataset779_TinyRaw"), root)[-1]),
    # DG7xx: verify against the manifest of the first scan
    "DG701": Trigger(pre_base, then=_flip_byte_same_size_and_mtime, verify=True),
    "DG702": Trigger(pre_base, then=lambda ds: (cfg(ds) / "case_1.pkl").unlink(), verify=True),
    "DG703": Trigger(pre_base, then=lambda ds: write_case_npz(cfg(ds), "case_new"), verify=True),
}


@pytest.mark.parametrize("code", [
    pytest.param(code, id=code, marks=[pytest.mark.nnunet] if TRIGGERS[code].real else [])
    for code in sorted(TRIGGERS)])
def test_code_is_triggered(code, tmp_path, request):
    t = TRIGGERS[code]
    base = request.getfixturevalue("real_project") if t.real else tmp_path / "data"
    target = t.build(base)
    ws = dataguard.Workspace([str(target)], manifest_dir=tmp_path / "m", jobs=1)
    if t.then is not None:
        ws.scan()
        t.then(target)
    with t.context():
        res = ws.verify(select=[code]) if t.verify else ws.scan(select=[code])
    found = sorted({f.code for f in res.findings})
    assert found == [code], [f.to_dict() for f in res.findings]


def _shifted_annotation(root: Path) -> Path:
    """12 demo cases, one whose label map is moved 6 voxels: unlike the others (DG406)."""
    from dataguard.demo.synthetic import write_raw_dataset

    ds = write_raw_dataset(root / "nnUNet_raw", 908, "Audit", n_cases=12)
    p = ds / "labelsTr" / "heart_005.nii.gz"
    img = nib.load(p)
    nib.save(nib.Nifti1Image(np.roll(np.asarray(img.dataobj), 6, axis=0).astype(np.uint8), img.affine), p)
    return ds


def test_every_code_has_a_trigger():
    assert set(TRIGGERS) | set(SET_TRIGGERS) == all_codes()


# --- DG6xx: checks over a set of predictions (or an ensemble's probability folders) -----------
def _pred_base(root: Path) -> tuple[Path, Path, Path]:
    """2 test images and their correct uint8 predictions, real NIfTI; labels 0-3 in each."""
    images, pred = root / "imagesTs", root / "pred"
    images.mkdir(parents=True), pred.mkdir()
    lab = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 4).astype(np.uint8)
    for c in ("t0", "t1"):
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE), images / f"{c}_0000.nii.gz")
        img = nib.Nifti1Image(lab, AFFINE)
        img.set_data_dtype(np.uint8)
        nib.save(img, pred / f"{c}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": LABELS}))
    return images, pred, root / "dataset.json"


def _save_pred(path: Path, arr, affine=AFFINE, dtype=np.uint8) -> None:
    img = nib.Nifti1Image(np.asarray(arr).astype(dtype), affine)
    img.set_data_dtype(dtype)
    nib.save(img, path)


def _zip_nested(pred: Path) -> Path:
    import zipfile

    z = pred.parent / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in pred.iterdir():
            zf.write(p, f"t/{p.name}")
            zf.write(p, p.name)
    return z


SET_TRIGGERS: dict[str, Callable] = {
    "DG601": lambda images, pred: _save_pred(pred / "t0.nii.gz", np.full(SHAPE, 1.00000002), dtype=np.float64),
    "DG602": lambda images, pred: _save_pred(pred / "t0.nii.gz", np.full(SHAPE, 7)),
    "DG603": lambda images, pred: _save_pred(pred / "t0.nii.gz", np.arange(np.prod(SHAPE)).reshape(SHAPE) % 4,
                                             affine=np.diag([1.25, 1.25, 9.0, 1.0])),
    "DG604": lambda images, pred: (pred / "t1.nii.gz").unlink(),
    "DG605": lambda images, pred: _save_pred(pred / "t0.nii.gz", np.zeros(SHAPE)),
    "DG606": lambda images, pred: _zip_nested(pred),
    "DG607": None,
    "DG802": None,
    "DG803": None,
}


@pytest.mark.parametrize("code", sorted(SET_TRIGGERS))
def test_set_code_is_triggered(code, tmp_path):
    ws = dataguard.Workspace([], manifest_dir=tmp_path / "m")
    if code == "DG802":
        from dataguard.evaluate.crossval import Evaluation, FoldSource
        from dataguard.submit.archive import run_checks

        src = FoldSource("2d", 0, tmp_path, expected=["a"], train={"b"}, found=["a", "b"])
        found = run_checks(Evaluation("D", {1: "x"}, [src]), "evaluation")
    elif code == "DG803":
        from dataguard.submit.ensemble import Weights
        from dataguard.evaluate.weights import check_weights

        found = check_weights(Weights.parse({"default": {"A": 1, "B": 1}}, ["A", "B"]),
                              {"A": {1: 0.0}, "B": {1: 0.9}}, {1: "x"}, "w.json")
    elif code == "DG607":
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir(), b.mkdir()
        np.savez(a / "t0.npz", probabilities=np.zeros((2, 1, 1, 1), np.float32))
        _, found = ws.submit.check_probabilities({"a": a, "b": b})
    else:
        images, pred, dj = _pred_base(tmp_path)
        _, clean = ws.submit.check_predictions(pred, images, dj)
        assert clean == []
        source = SET_TRIGGERS[code](images, pred) or pred
        _, found = ws.submit.check_predictions(source, images, dj)
    assert sorted({f.code for f in found}) == [code], [f.to_dict() for f in found]


@pytest.mark.parametrize("base", [pre_base, b2nd_base, splits_base, raw_base], ids=lambda f: f.__name__)
def test_the_bases_are_clean(base, tmp_path):
    """Each recipe's finding comes from its change, not from the dataset it started from."""
    ds = base(tmp_path / "data")
    res = dataguard.Workspace([str(ds)], manifest_dir=tmp_path / "m", jobs=1).scan()
    assert res.findings == [], [f.to_dict() for f in res.findings]
    assert dataguard.Workspace([str(ds)], manifest_dir=tmp_path / "m", jobs=1).verify().findings == []
