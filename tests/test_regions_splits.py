"""Regions (BraTS-style) and the ignore label in splits, DG404, DG504/DG505, DG602, DG605 and logs.

Real NIfTI label maps (nibabel) in a raw dataset beside its preprocessed folder; nnU-Net's own
LabelManager (regions, ignore label) and its region_or_label_to_mask are the oracle for which
classes a case contains, and its generate_crossval_split for the split it will write.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import PLANS

import dataguard
from dataguard.cli import main
from dataguard.spec import parse_spec
from dataguard.splits.folds import class_shares, rebalance

pytestmark = pytest.mark.nnunet

REGION_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": 3}
REGION_ORDER = [1, 2, 3]
IGNORE_LABELS = {"background": 0, "liver": 1, "spleen": 2, "ignore": 3}
# value 2 is in only 3 cases, but tumor_core (2 or 3) is in 8: counting values would call it rare
REGION_CASES = {"c0": {1}, "c1": {1, 2}, "c2": {1, 3}, "c3": {1, 3}, "c4": {1, 2, 3},
                "c5": {1, 3}, "c6": {1}, "c7": {1, 3}, "c8": {1, 2}, "c9": {1, 3}}
# every case has sparse annotation (ignore = 3); spleen (2) is in 3 cases only
IGNORE_CASES = {f"c{i}": ({1, 2, 3} if i in (0, 4, 8) else {1, 3}) for i in range(10)}
SHAPE = (8, 8, 4)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def label_map(values) -> np.ndarray:
    """A uint8 map holding 0 and exactly `values` (one voxel block each)."""
    arr = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(sorted(values)):
        arr[i, :2, :2] = v
    return arr


def save(path: Path, arr) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))
    return path


def make_dataset(root: Path, dataset_id: int, name: str, labels: dict, cases: dict, order=None) -> dict:
    """nnUNet_raw/<ds> (imagesTr, labelsTr as real NIfTI, dataset.json) and nnUNet_preprocessed/<ds>
    (dataset.json, plans), where splits_final.json lives."""
    ds_name = f"Dataset{dataset_id:03d}_{name}"
    raw, pre = root / "nnUNet_raw" / ds_name, root / "nnUNet_preprocessed" / ds_name
    meta = {"channel_names": {"0": "T1"}, "labels": labels, "numTraining": len(cases), "file_ending": ".nii.gz"}
    if order is not None:
        meta["regions_class_order"] = order
    rng = np.random.default_rng(dataset_id)
    for c, vals in cases.items():
        save(raw / "imagesTr" / f"{c}_0000.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
        save(raw / "labelsTr" / f"{c}.nii.gz", label_map(vals))
    pre.mkdir(parents=True)
    for folder in (raw, pre):
        (folder / "dataset.json").write_text(json.dumps(meta))
    (pre / "nnUNetPlans.json").write_text(json.dumps(PLANS))
    return {"raw": raw, "pre": pre, "meta": meta, "root": root}


def label_manager(meta):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    return LabelManager(meta["labels"], meta.get("regions_class_order"))


def oracle_classes(ds) -> dict[str, list[bool]]:
    """Per case, which of nnU-Net's classes (foreground regions, or foreground labels) its label
    file contains, by nnU-Net's own region_or_label_to_mask."""
    import nibabel as nib
    from nnunetv2.evaluation.evaluate_predictions import region_or_label_to_mask

    lm = label_manager(ds["meta"])
    classes = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    out = {}
    for f in sorted((ds["raw"] / "labelsTr").iterdir()):
        seg = np.asarray(nib.load(str(f)).dataobj)
        out[f.name[: -len(".nii.gz")]] = [bool(region_or_label_to_mask(seg, r).any()) for r in classes]
    return out


def oracle_val_gaps(splits, present: dict[str, list[bool]]) -> set[tuple[int, int]]:
    """(fold, 1-based class) where a class in >= folds cases has no validation case."""
    k, n_cls = len(splits), len(next(iter(present.values())))
    total = [sum(p[j] for p in present.values()) for j in range(n_cls)]
    return {(i, j + 1) for i, fold in enumerate(splits) for j in range(n_cls)
            if total[j] >= k and not any(present[c][j] for c in fold["val"])}


def kfold(cases, k=5):
    cases = sorted(cases)
    size = len(cases) // k
    return [{"train": [c for c in cases if c not in cases[i * size:(i + 1) * size]],
             "val": cases[i * size:(i + 1) * size]} for i in range(k)]


def show_json(ds, tmp_path, capsys) -> dict:
    capsys.readouterr()
    rc = main(["splits", "show", str(ds["pre"]), "--format", "json", "--manifest-dir", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert rc in (0, 1), out
    return json.loads(out)


@pytest.fixture
def regions(tmp_path):
    return make_dataset(tmp_path / "p", 950, "Brats", REGION_LABELS, REGION_CASES, REGION_ORDER)


@pytest.fixture
def ignore(tmp_path):
    return make_dataset(tmp_path / "p", 951, "Sparse", IGNORE_LABELS, IGNORE_CASES)


# --- the spec agrees with nnU-Net's LabelManager ---------------------------------------------
@pytest.mark.parametrize("labels,order", [(REGION_LABELS, REGION_ORDER), (IGNORE_LABELS, None)])
def test_classes_are_label_managers(labels, order):
    lm = label_manager({"labels": labels, "regions_class_order": order})
    spec = parse_spec({"labels": labels, "regions_class_order": order})
    assert spec.has_regions == lm.has_regions and spec.ignore_label == lm.ignore_label
    assert spec.all_labels == lm.all_labels
    want = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    got = [vals for _, vals in spec.classes.values()]
    assert got == [tuple(r) if isinstance(r, (list, tuple)) else (r,) for r in want]


# --- splits show / rebalance -----------------------------------------------------------------
def test_splits_show_counts_regions_by_name(regions, tmp_path, capsys):
    (regions["pre"] / "splits_final.json").write_text(json.dumps(kfold(REGION_CASES)))
    doc = show_json(regions, tmp_path, capsys)
    present = oracle_classes(regions)
    assert doc["kind"] == "regions"
    assert {k: v["name"] for k, v in doc["labels"].items()} == \
        {"1": "whole_tumor", "2": "tumor_core", "3": "enhancing"}
    assert {k: v["values"] for k, v in doc["labels"].items()} == {"1": [1, 2, 3], "2": [2, 3], "3": [3]}
    assert {k: v["cases"] for k, v in doc["labels"].items()} == \
        {str(j + 1): sum(p[j] for p in present.values()) for j in range(3)} == {"1": 10, "2": 8, "3": 6}
    for fold, entry in zip(kfold(REGION_CASES), doc["folds"]):
        assert entry["labels"] == {str(j + 1): {"train": sum(present[c][j] for c in fold["train"]),
                                                "val": sum(present[c][j] for c in fold["val"])}
                                   for j in range(3)}
    capsys.readouterr()
    main(["splits", "show", str(regions["pre"]), "--manifest-dir", str(tmp_path / "m")])
    table = capsys.readouterr().out
    for heading in ("whole_tumor", "tumor_core", "enhancing"):
        assert heading in table
    assert "1 1" not in table and "2 2" not in table


def test_plain_dataset_keeps_label_values_as_keys(tmp_path, capsys):
    cases = {f"c{i}": ({1, 2} if i % 2 else {1}) for i in range(10)}
    ds = make_dataset(tmp_path / "p", 952, "Plain", {"background": 0, "liver": 1, "tumour": 2}, cases)
    doc = show_json(ds, tmp_path, capsys)
    assert "kind" not in doc
    assert doc["labels"] == {"1": {"name": "liver", "cases": 10}, "2": {"name": "tumour", "cases": 5}}


def test_ignore_label_is_no_column(ignore, tmp_path, capsys):
    doc = show_json(ignore, tmp_path, capsys)
    lm = label_manager(ignore["meta"])
    assert lm.ignore_label == 3
    assert [int(k) for k in doc["labels"]] == list(lm.foreground_labels) == [1, 2]
    assert "ignore" not in {v["name"] for v in doc["labels"].values()}
    assert doc["labels"]["2"]["cases"] == 3


def test_rebalance_covers_every_region(regions, tmp_path):
    ws = dataguard.Workspace([str(regions["pre"])], manifest_dir=tmp_path / "m", jobs=1)
    ws.scan()
    ctx = ws.dataset().splits.context()
    assert ctx.names == {1: "whole_tumor", 2: "tumor_core", 3: "enhancing"}
    assert ctx.heading(2) == "tumor_core [2,3]"
    splits = ctx.rebalanced(folds=5)
    assert oracle_val_gaps(splits, oracle_classes(regions)) == set()
    assert oracle_val_gaps(kfold(REGION_CASES), oracle_classes(regions)) == {(0, 3)}   # the naive one fails
    table = ctx.table(splits)
    assert sorted(set(table["name"])) == ["enhancing", "tumor_core", "whole_tumor"]


def test_rebalance_error_names_the_region():
    """Only c0 holds all three classes, but two one-case validation sets need all three."""
    from dataguard.splits.folds import SplitError

    cases = {"c0": {1, 2, 3}, "c1": {1, 2}, "c2": {1, 3}, "c3": {2, 3}}
    with pytest.raises(SplitError) as e:
        rebalance(cases, folds=3, names={1: "whole_tumor", 2: "tumor_core", 3: "enhancing"})
    assert "1 (whole_tumor), 2 (tumor_core), 3 (enhancing)" in str(e.value)


# --- DG504 / DG505 / DG404 -------------------------------------------------------------------
def dg(result, code):
    return [f for f in result.findings if f.code == code]


def test_dg504_counts_regions(regions, tmp_path):
    (regions["pre"] / "splits_final.json").write_text(json.dumps(kfold(REGION_CASES)))
    res = dataguard.scan([str(regions["pre"])], manifest_dir=tmp_path / "m", jobs=1)
    found = dg(res, "DG504")
    names = {1: "whole_tumor", 2: "tumor_core", 3: "enhancing"}
    gaps = oracle_val_gaps(kfold(REGION_CASES), oracle_classes(regions))
    assert gaps == {(0, 3)}
    for fold, cls in gaps:
        assert any(f"fold {fold} validation has no case with region {names[cls]} (labels 3)" in f.message
                   for f in found), [f.message for f in found]
    assert len(found) == len(gaps), [f.message for f in found]
    assert not any("label 2" in f.message or "tumor_core" in f.message for f in found)


def test_dg505_predicts_region_gaps_of_nnunets_split(regions, tmp_path):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    res = dataguard.scan([str(regions["pre"])], manifest_dir=tmp_path / "m", jobs=1)
    assert len(dg(res, "DG505")) == 1
    theirs = generate_crossval_split(sorted(REGION_CASES), seed=12345, n_splits=5)
    gaps = oracle_val_gaps(theirs, oracle_classes(regions))
    names = {1: "whole_tumor", 2: "tumor_core", 3: "enhancing"}
    msgs = [f.message for f in dg(res, "DG504")]
    assert all(m.startswith("predicted default split: ") for m in msgs)
    want = {(fold, names[cls]) for fold, cls in gaps}
    got = {(int(m.split("fold ")[1].split()[0]), m.split("region ")[1].split()[0])
           for m in msgs if "validation has no case" in m}
    assert got == want == {(3, "enhancing")}           # folds 1 and 4 have no value 2, yet tumor_core
    assert not any("tumor_core" in m or "label 2" in m for m in msgs)


def test_ignore_label_is_not_a_label_of_splits_or_dg404(ignore, tmp_path):
    (ignore["pre"] / "splits_final.json").write_text(json.dumps(kfold(IGNORE_CASES)))
    res = dataguard.scan([str(ignore["pre"])], manifest_dir=tmp_path / "m", jobs=1)
    msgs = [f.message for f in dg(res, "DG504")]
    assert msgs and all("ignore" not in m and "label 3" not in m for m in msgs)
    assert any("label 2 (spleen) occurs in only 3 cases" in m for m in msgs)
    assert dg(res, "DG404") == []


def test_dg404_ignores_the_ignore_label_but_not_a_missing_organ(tmp_path):
    cases = {f"c{i}": {1} for i in range(6)}                 # no spleen, no ignore voxel anywhere
    ds = make_dataset(tmp_path / "p", 953, "NoSpleen", IGNORE_LABELS, cases)
    res = dataguard.scan([str(ds["pre"])], manifest_dir=tmp_path / "m", jobs=1)
    [f] = dg(res, "DG404")
    assert "'spleen'" in f.message


# --- DG602 / DG605 -----------------------------------------------------------------------------
def predictions(tmp_path, meta, preds: dict[str, set]):
    images, pred = tmp_path / "imagesTs", tmp_path / "pred"
    for c, vals in preds.items():
        save(images / f"{c}_0000.nii.gz", np.zeros(SHAPE, np.float32))
        save(pred / f"{c}.nii.gz", label_map(vals))
    dj = tmp_path / "dataset.json"
    dj.write_text(json.dumps(meta))
    return images, pred, dj


def check(tmp_path, meta, preds, common=None):
    from dataguard.submit.archive import run_checks
    from dataguard.submit.predictions import load_prediction_set

    images, pred, dj = predictions(tmp_path, meta, preds)
    ps = load_prediction_set(pred, images, dj, common)
    return run_checks(ps)


def test_dg602_ignore_value_in_a_prediction(ignore, tmp_path):
    found = check(tmp_path, ignore["meta"], {"t0": {1, 2}, "t1": {1, 3}})
    [f] = [f for f in found if f.code == "DG602"]
    assert f.case == "t1" and "ignore label (3)" in f.message and f.help and "nnUNetv2_predict" in f.help


def test_dg602_regions_allow_region_values_only(regions, tmp_path):
    found = check(tmp_path, regions["meta"], {"t0": {1, 2, 3}, "t1": {1, 4}})
    [f] = [f for f in found if f.code == "DG602"]
    assert f.case == "t1" and "[4]" in f.message and "regions_class_order" in f.message


def test_dg602_region_order_values_are_allowed(tmp_path):
    """A region model writes regions_class_order values, which need not be region values."""
    meta = {"channel_names": {"0": "T1"}, "file_ending": ".nii.gz", "numTraining": 1,
            "labels": {"background": 0, "outer": [1, 2], "inner": [2]}, "regions_class_order": [1, 5]}
    assert [f for f in check(tmp_path, meta, {"t0": {1, 5}}) if f.code == "DG602"] == []


def test_dg605_is_region_aware(regions, tmp_path):
    training = [set(v) | {2} for v in REGION_CASES.values()]       # tumor_core in every case
    spec = parse_spec(regions["meta"])
    common = class_shares(training, spec)
    assert common == {1: 1.0, 2: 1.0, 3: 0.6}
    found = check(tmp_path, regions["meta"], {"t0": {1}, "t1": {1, 3}, "t2": {1, 2}}, common)
    dg605 = [f for f in found if f.code == "DG605"]
    assert [f.case for f in dg605] == ["t0"]                  # t1's value 3 is tumor_core too
    assert "region tumor_core (labels 2, 3)" in dg605[0].message and "100%" in dg605[0].message


def test_dg605_never_asks_for_the_ignore_label(ignore, tmp_path):
    spec = parse_spec(ignore["meta"])
    common = class_shares([{1, 3}] * 9 + [{1, 2, 3}], spec)
    assert 3 not in common and common[1] == 1.0
    value_keyed = {1: 1.0, 3: 1.0}                             # as value counts would have it
    for shares in (common, value_keyed):
        found = check(tmp_path, ignore["meta"], {"t0": {1}}, shares)
        assert [f for f in found if f.code == "DG605"] == []
    found = check(tmp_path, ignore["meta"], {"t0": {2}}, common)
    [f] = [f for f in found if f.code == "DG605"]
    assert "no liver (1)" in f.message


# --- logs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels,order", [(REGION_LABELS, REGION_ORDER), (IGNORE_LABELS, None)])
def test_logs_name_pseudo_dice_by_region(tmp_path, labels, order):
    from test_logs import write_log

    from dataguard.train.logs import load_runs

    lm = label_manager({"labels": labels, "regions_class_order": order})
    n = len(lm.foreground_regions if lm.has_regions else lm.foreground_labels)
    trainer = tmp_path / "Dataset950_Brats" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (trainer / "fold_0").mkdir(parents=True)
    write_log(trainer / "fold_0" / "training_log_2026_1_1_00_00_00.txt",
              [[0.1 * (e + 1)] * n for e in range(3)])
    meta = {"labels": labels, "channel_names": {"0": "T1"}}
    if order:
        meta["regions_class_order"] = order
    (trainer / "dataset.json").write_text(json.dumps(meta))
    [run] = load_runs(trainer)
    want = [k for k, v in labels.items() if k not in ("background", "ignore")]
    assert run.labels == want and len(run.labels) == n == len(run.dice[0])
    assert set(run.label_stats()) == set(want)


# --- the TUI folds view ------------------------------------------------------------------------
async def test_tui_folds_view_names_regions(regions, tmp_path):
    from dataguard.tui.app import DataguardApp

    (regions["pre"] / "splits_final.json").write_text(json.dumps(kfold(REGION_CASES)))
    app = DataguardApp(dataguard.Workspace([str(regions["pre"])], manifest_dir=tmp_path / "m"), show_times=False)

    async def settle(pilot):
        await pilot.pause(0.4)
        for _ in range(3):
            await app.workers.wait_for_complete()
            for screen in app.screen_stack:
                await screen.workers.wait_for_complete()
            await pilot.pause(0.05)

    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        matrix = app.screen.query_one("#matrix")
        titles = [str(c.label) for c in matrix.columns.values()]
        assert titles == ["fold", "val cases", "whole_tumor [1,2,3]", "tumor_core [2,3]", "enhancing [3]"]
        present = oracle_classes(regions)
        row0 = [str(c) for c in matrix.get_row_at(0)]
        fold0 = kfold(REGION_CASES)[0]
        for j in range(3):
            va = sum(present[c][j] for c in fold0["val"])
            tr = sum(present[c][j] for c in fold0["train"])
            assert row0[2 + j] == f"{va}  (train {tr})"
        notes = str(app.screen.query_one("#notes-text").render())
        assert "region enhancing (labels 3)" in notes
        assert "each region" in str(app.screen.query_one("#title").render())
