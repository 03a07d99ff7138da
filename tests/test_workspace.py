"""`dataguard.Workspace`, the API every face uses, on real nnunetv2 output (b2nd and legacy npz)."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

import dataguard
from conftest import codes
from dataguard.engine.slices import SliceError

M, L = "Dataset901_DemoCardiac", "Dataset902_DemoCardiacLegacy"
pytestmark = pytest.mark.nnunet


def _tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for n in files:
            p = os.path.join(dirpath, n)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def ws(real_project, tmp_path):
    return dataguard.Workspace([str(real_project)], manifest_dir=tmp_path / "m")


def test_datasets_and_cases(ws):
    assert sorted(d.name for d in ws.datasets) == [M, L]
    ws.scan()
    cases = ws.cases(M)
    assert len(cases) == 8 and all(c.dataset == M for c in cases)
    assert {c.status for c in cases} == {"ok"}
    c = ws.case(M, "heart_003")
    assert c.configs == ["nnUNetPlans_2d"]
    assert set(c.facts) == {"raw", "nnUNetPlans_2d"}
    raw, pre = c.facts["raw"], c.facts["nnUNetPlans_2d"]
    # same keys, same array order (z, y, x) for raw NIfTI and blosc2
    assert len(raw.shape) == len(pre.shape) == 3 and len(raw.spacing) == 3
    assert raw.shape[0] == pre.shape[0]
    assert 3 not in raw.labels and {0, 1, 2} <= set(raw.labels)          # no right ventricle in heart_003
    assert set(pre.labels) == set(raw.labels) and all(v > 0 for v in pre.labels.values())
    assert sum(raw.labels.values()) == int(np.prod(raw.shape))
    assert {f.rel.split("/")[0] for f in c.files} == {"raw", "preprocessed"}
    assert all(f.blake3 and f.size > 0 for f in c.files)
    legacy = ws.case(L, "heart_003").facts["nnUNetPlans_2d"]
    assert legacy.shape == pre.shape and set(legacy.labels) == set(pre.labels)


def test_case_status_and_findings_follow_the_scan(ws, real_project):
    seg = real_project / "nnUNet_preprocessed" / M / "nnUNetPlans_2d" / "heart_005_seg.b2nd"
    seg.write_bytes(seg.read_bytes()[:-100])
    ws.scan()
    bad = ws.case(M, "heart_005")
    assert bad.status == "error" and {f.code for f in bad.findings} == {"DG203"}
    assert [f.rel for f in bad.files if f.findings] == ["preprocessed/nnUNetPlans_2d/heart_005_seg.b2nd"]
    with pytest.raises(dataguard.DataguardError):
        ws.case(M, "no_such_case")


def test_val_fold_from_splits(ws, real_project):
    pre = real_project / "nnUNet_preprocessed" / M
    cases = sorted(c.case for c in ws.cases(M))
    splits = [{"train": [c for c in cases if c != v], "val": [v]} for v in cases[:2]] + \
             [{"train": cases[:2], "val": cases[2:]}]
    (pre / "splits_final.json").write_text(json.dumps(splits))
    ws.scan()
    folds = {c.case: c.val_fold for c in ws.cases(M)}
    assert folds[cases[0]] == 0 and folds[cases[1]] == 1 and all(folds[c] == 2 for c in cases[2:])
    assert all(c.val_fold is None for c in ws.cases(L))       # the legacy copy has no splits file


@pytest.mark.parametrize("source,dataset", [("raw", M), ("preprocessed", M), ("preprocessed", L)])
def test_load_slice(ws, source, dataset):
    ws.scan()
    c = ws.case(dataset, "heart_001")
    shape = c.facts["raw" if source == "raw" else "nnUNetPlans_2d"].shape
    img, lab = ws.dataset(dataset).load_slice("heart_001", source=source)
    assert img.dtype == np.float32 and img.shape == tuple(shape[1:])
    assert lab.shape == img.shape and np.issubdtype(lab.dtype, np.integer)
    assert set(np.unique(lab)) <= {-1, 0, 1, 2, 3} and lab.max() > 0       # middle slice crosses the heart
    img0, _ = ws.dataset(dataset).load_slice("heart_001", axis=1, index=0, source=source)
    assert img0.shape == (shape[0], shape[2])
    with pytest.raises(SliceError):
        ws.dataset(dataset).load_slice("heart_001", index=10_000, source=source)


def test_raw_and_preprocessed_slices_show_the_same_labels(ws):
    ws.scan()
    _, raw = ws.dataset(M).load_slice("heart_002", source="raw")
    _, pre = ws.dataset(M).load_slice("heart_002", source="preprocessed")
    assert set(np.unique(raw)) - {0} == set(np.unique(pre)) - {0, -1}


def test_scan_without_manifest_changes_nothing_on_disk(ws, real_project, tmp_path):
    ws.scan()                                       # a manifest with snapshots exists
    label = real_project / "nnUNet_raw" / M / "labelsTr" / "heart_004.nii.gz"
    import nibabel as nib

    img = nib.load(str(label))
    arr = np.asanyarray(img.dataobj).copy()
    arr[arr == 2] = 1
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), str(label))
    before = {**_tree(real_project), **_tree(tmp_path / "m")}
    res = ws.scan(write_manifest=False)
    assert codes(res, "DG209")                      # stale, decided against the old snapshot
    assert {**_tree(real_project), **_tree(tmp_path / "m")} == before
    assert codes(ws.scan(write_manifest=False), "DG209")   # and the snapshot was not moved on


def test_scan_and_repair_never_write_os_environ(ws, real_project, monkeypatch):
    seen = []
    real_setitem = os.environ.__class__.__setitem__

    def spy(self, key, value):
        seen.append(key)
        return real_setitem(self, key, value)

    monkeypatch.setattr(os.environ.__class__, "__setitem__", spy)
    (real_project / "nnUNet_preprocessed" / M / "nnUNetPlans_2d" / "heart_001.pkl").unlink()
    ws.scan()
    run = ws.repair.run()
    assert not run.failed and not codes(run.after)
    assert seen == []


def test_repair_is_one_scan_before_and_one_after(ws, real_project, monkeypatch):
    import dataguard.engine.scanner as scanner

    calls = []
    real = scanner.scan

    def counting(*a, **k):
        calls.append(k.get("jobs"))
        return real(*a, **k)

    monkeypatch.setattr(scanner, "scan", counting)
    cfg = real_project / "nnUNet_preprocessed" / M / "nnUNetPlans_2d"
    (cfg / "heart_002.b2nd").write_bytes(b"\x00\x05\x16\x07" + bytes(60))   # AppleDouble under a case name
    (cfg / "._heart_003.b2nd").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    ws.jobs = 1
    events = []
    run = ws.repair.run(on_event=events.append)
    assert len(calls) == 2 and calls == [1, 1]
    assert not run.failed and not codes(run.after)
    kinds = sorted((a.kind, a.target) for a in run.plan)
    assert ("re-preprocess", "preprocessed/nnUNetPlans_2d/heart_002") in kinds     # planned up front
    assert [e["event"] for e in events] == ["started", "done"] * len(run.plan)


def test_apply_stops_between_actions_when_cancelled(ws, real_project):
    cfg = real_project / "nnUNet_preprocessed" / M / "nnUNetPlans_2d"
    for n in ("._heart_001.b2nd", "._heart_002.b2nd", "._heart_003.b2nd"):
        (cfg / n).write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    ws.scan()
    plan = ws.repair.plan()
    assert len(plan) == 3
    stop = threading.Event()

    def after_first(e):
        if e["event"] == "done":
            stop.set()

    run = ws.repair.apply(plan, on_event=after_first, cancel=stop)
    assert run.cancelled and len(run.reports[0].outcomes) == 1
    assert len(codes(run.after, "DG101")) == 2               # the rest is still there, consistent
    ws.restore()
    assert len(codes(ws.scan(), "DG101")) == 3               # and the one done is undone


def test_quarantine_lists_what_repair_moved(ws, real_project):
    (real_project / "nnUNet_preprocessed" / M / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    ws.repair.run()
    held = ws.quarantine()
    assert [h.path for h in held] == ["preprocessed/.DS_Store"] and held[0].dataset == M


def test_dataset_lookup(ws):
    assert ws.dataset(M).name == M and ws.dataset("902").name == L
    with pytest.raises(dataguard.DataguardError):
        ws.dataset()                                  # two datasets: ambiguous
    with pytest.raises(dataguard.DataguardError):
        ws.dataset("Dataset999_Nope")
