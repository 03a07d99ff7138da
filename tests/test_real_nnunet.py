"""Integration: data written by the real nnunetv2 (b2nd, >= 2.6) and a legacy .npz copy.

Also the cross checks that need a raw dataset next to the preprocessed one:
DG207 (raw case not preprocessed), DG208 (orphan), DG209 (stale by content).
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import dataguard
from conftest import codes, predicted_split

M, L = "Dataset901_DemoCardiac", "Dataset902_DemoCardiacLegacy"
pytestmark = pytest.mark.nnunet


def scan(target, tmp_path, **kw):
    return dataguard.scan([str(target)], manifest_dir=tmp_path / "manifests", **kw)


def test_clean_nnunet_output_has_no_findings_in_both_layouts(real_project, tmp_path):
    r = scan(real_project, tmp_path)
    assert sorted(d.name for d in r.datasets) == [M, L]
    assert codes(r) == [], [f.to_dict() for f in r.findings]
    # no splits_final.json yet: nnU-Net's default split is predicted (DG505) and checked
    assert {f.code for f in r.findings} <= {"DG504", "DG505"}
    # raw was paired with preprocessed: raw files were scanned too
    assert any(k.startswith("raw/") for k in
               __import__("json").loads((tmp_path / "manifests" / f"{M}.json").read_text())["files"])


def test_scanning_preprocessed_dataset_finds_raw_sibling(real_project, tmp_path):
    r = scan(real_project / "nnUNet_preprocessed" / M, tmp_path)
    [ds] = r.datasets
    assert ds.raw == real_project / "nnUNet_raw" / M


def test_demo_faults_are_all_found(real_project, tmp_path):
    from dataguard.demo.project import _inject

    faults = _inject(real_project)
    r = scan(real_project, tmp_path)
    found = {(f.dataset, f.code, f.path) for f in r.findings}
    for fault in faults:
        assert (fault.dataset, fault.code, fault.path) in found, fault
    # nothing beyond the injected faults (and their direct consequences)
    assert {f.code for f in r.findings if not predicted_split(f)} <= {"DG101", "DG102", "DG201", "DG203", "DG206"}


def test_dg207_raw_case_missing_from_configuration(real_project, tmp_path):
    cfg = real_project / "nnUNet_preprocessed" / M / "nnUNetPlans_2d"
    quarantine = tmp_path / "moved"
    quarantine.mkdir()
    for p in cfg.glob("heart_002*"):
        shutil.move(p, quarantine / p.name)
    [f] = codes(scan(real_project, tmp_path), "DG207")
    assert f.case == "heart_002" and f.dataset == M


def test_dg207_near_miss_unpreprocessed_configuration_is_not_required(real_project, tmp_path):
    # plans declare 3d_fullres too, but its folder was never made: nothing is missing
    assert "DG207" not in codes(scan(real_project, tmp_path))


def test_dg208_orphan_preprocessed_case(real_project, tmp_path):
    cfg = real_project / "nnUNet_preprocessed" / L / "nnUNetPlans_2d"
    for ext in (".npz", ".pkl"):
        shutil.copy(cfg / f"heart_001{ext}", cfg / f"ghost_999{ext}")
    [f] = codes(scan(real_project, tmp_path), "DG208")
    assert f.case == "ghost_999" and str(f.fix) == "quarantine"


def test_dg208_near_miss_without_raw_nothing_is_an_orphan(real_project, tmp_path):
    shutil.rmtree(real_project / "nnUNet_raw")
    cfg = real_project / "nnUNet_preprocessed" / L / "nnUNetPlans_2d"
    for ext in (".npz", ".pkl"):
        shutil.copy(cfg / f"heart_001{ext}", cfg / f"ghost_999{ext}")
    assert "DG208" not in codes(scan(real_project / "nnUNet_preprocessed", tmp_path))


def test_dg209_raw_label_changed_after_preprocessing(real_project, tmp_path):
    import nibabel as nib

    assert codes(scan(real_project, tmp_path)) == []
    lab = real_project / "nnUNet_raw" / M / "labelsTr" / "heart_003.nii.gz"
    img = nib.load(lab)
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 2] = 1
    nib.save(nib.Nifti1Image(arr, img.affine), lab)
    [f] = codes(scan(real_project, tmp_path), "DG209")
    assert f.case == "heart_003" and "raw image/label content changed" in f.message
    # it stays reported on the next (incremental) scan until the case is rebuilt
    assert [x.case for x in codes(scan(real_project, tmp_path), "DG209")] == ["heart_003"]


def test_dg209_plans_changed(real_project, tmp_path):
    import json

    scan(real_project, tmp_path)
    plans = real_project / "nnUNet_preprocessed" / M / "nnUNetPlans.json"
    p = json.loads(plans.read_text())
    p["configurations"]["2d"]["batch_size"] += 1
    plans.write_text(json.dumps(p))
    found = codes(scan(real_project, tmp_path), "DG209")
    assert found and all("plans" in f.message for f in found)


def test_dg209_near_miss_touching_raw_without_change_is_not_stale(real_project, tmp_path):
    scan(real_project, tmp_path)
    lab = real_project / "nnUNet_raw" / M / "labelsTr" / "heart_003.nii.gz"
    os.utime(lab, ns=(1, 1))   # e.g. copied between machines: new mtime, same bytes
    assert "DG209" not in codes(scan(real_project, tmp_path))
