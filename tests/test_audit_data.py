"""The label audit from the data alone (DG406, `dataguard audit`): every statistic on hand-made
volumes whose answer is known, the ranking on a real scanned dataset with annotations
corrupted at known places (benchmarks/bench_audit.py's generator), the CLI's faces, the
clean datasets without a warning, and a hostile dataset read without code run, nothing
written and no link followed."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from audit import watch

import dataguard
from dataguard.checks import label_audit as ad
from dataguard.checks.label_stats import label_figures
from dataguard.suspects import per_case

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))


def _ball(shape, centre, r):
    g = np.indices(shape).astype(float)
    return sum((x - c) ** 2 for x, c in zip(g, centre)) <= r * r


def test_volume_components_stray_and_gaps_are_exact():
    label = np.zeros((20, 30, 30), np.uint8)
    label[5:15, 5:15, 5:15] = 1                       # 1000 voxels
    label[5:7, 25:27, 25:27] = 1                      # a stray piece of 8 voxels
    label[2:18, 20:24, 2:6] = 2
    label[9:11, 20:24, 2:6] = 0                       # two empty slices inside label 2
    spacing = [2.0, 1.0, 0.5]
    f = label_figures(np.zeros(label.shape, np.float32), label, spacing)
    assert f[1]["volume"] == pytest.approx(1008 * 1.0)            # 2 x 1 x 0.5 mm^3 per voxel
    assert f[1]["components"] == 2
    assert f[1]["stray"] == pytest.approx(8 / 1008)
    # closest voxels: y 14 -> 25 (11 voxels, 11 mm) and x 14 -> 25 (11 x 0.5 mm), same z
    assert f[1]["stray_mm"] == pytest.approx(math.hypot(11 * 1.0, 11 * 0.5))
    assert f[2]["gaps"] == 2 and f[2]["gap_at"] == 9
    assert f[1]["gaps"] == 0 and f[1]["gap_at"] is None
    # the scan's full-resolution count wins over the strided grid's
    g = label_figures(np.zeros(label.shape, np.float32), label, spacing, voxels={1: 4000, 2: 1}, full_spacing=[1, 1, 1])
    assert g[1]["volume"] == 4000


def test_offset_is_the_centre_against_all_labels_in_mm():
    label = np.zeros((10, 10, 10), np.uint8)
    label[0:2, 0:2, 0:2] = 1                          # centre (0.5, 0.5, 0.5)
    label[8:10, 8:10, 8:10] = 2                       # centre (8.5, 8.5, 8.5); all: (4.5, 4.5, 4.5)
    f = label_figures(np.zeros(label.shape, np.float32), label, [1.0, 2.0, 3.0])
    assert f[1]["offset"] == pytest.approx([-4.0, -8.0, -12.0])
    assert f[2]["offset"] == pytest.approx([4.0, 8.0, 12.0])


def test_intensity_contrast_and_edge_follow_the_outline():
    shape = (24, 40, 40)
    organ = _ball(shape, (12, 20, 20), 8)
    body = _ball(shape, (12, 20, 20), 18)
    image = np.where(organ, 300.0, np.where(body, 100.0, -1000.0)).astype(np.float32)
    right = label_figures(image, organ.astype(np.uint8), [1, 1, 1])[1]
    shifted = label_figures(image, np.roll(organ, 5, axis=2).astype(np.uint8), [1, 1, 1])[1]
    eroded_mask = organ & np.roll(organ, 3, axis=1) & np.roll(organ, -3, axis=1)
    eroded = label_figures(image, eroded_mask.astype(np.uint8), [1, 1, 1])[1]
    med, p1, p99 = ad_body = (100.0, -1000.0, 300.0)
    del ad_body
    # inside: (300 - body median) / (p99 - p1); the body's median is the tissue's 100
    assert right["inside"] == pytest.approx((300 - med) / (p99 - p1), abs=0.02)
    # the true outline: organ inside, tissue outside; shifted or eroded: tissue or organ both sides
    assert right["contrast"] == pytest.approx(200 / 1300, abs=0.01)
    assert abs(shifted["contrast"]) < right["contrast"] / 2
    assert abs(eroded["contrast"]) < right["contrast"] / 2
    assert right["edge"] > 2 * shifted["edge"] and right["edge"] > 2 * eroded["edge"]


def _cohort(n=12, seed=0):
    """n similar cases of two labels (a bright ball in a body, a ring around it), some noise."""
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n):
        shape = (20, 48, 48)
        c = (10, 24 + rng.integers(-2, 3), 24 + rng.integers(-2, 3))
        r = 7 + rng.uniform(-0.5, 0.5)
        inner = _ball(shape, c, r)
        outer = _ball(shape, c, r + 3) & ~inner
        body = _ball(shape, (10, 24, 24), 22)
        img = np.where(inner, 300.0, np.where(outer, 150.0, np.where(body, 50.0, -1000.0)))
        img = (img + rng.normal(0, 10, shape)).astype(np.float32)
        lab = inner.astype(np.uint8) + 2 * outer.astype(np.uint8)
        cases[f"c{i:02d}"] = (img, lab)
    return cases


def _figures(cases):
    return {c: label_figures(img, lab, [1, 1, 1]) for c, (img, lab) in cases.items()}


def test_a_clean_cohort_has_no_suspect_and_each_fault_tops_the_ranking():
    cases = _cohort()
    clean = ad.suspects(_figures(cases), {1: "inner", 2: "ring"})
    assert clean and max(s.score for s in clean) < ad.INFO_AT, clean[:3]
    assert ad.findings_of(clean) == []
    faults = {
        "c03": lambda img, lab: (img, np.roll(lab, 4, axis=2)),                                  # shifted
        "c05": lambda img, lab: (img, np.where(lab == 1, 2, np.where(lab == 2, 1, 0)).astype(np.uint8)),  # swapped
        "c07": lambda img, lab: (img, np.where(lab == 2, 0, lab).astype(np.uint8)),               # ring unlabelled
        "c09": lambda img, lab: (img, np.maximum(lab, 1 * _ball(lab.shape, (10, 4, 4), 2))),      # stray blob
    }
    for c, f in faults.items():
        cases[c] = f(*cases[c])
    found = ad.suspects(_figures(cases), {1: "inner", 2: "ring"})
    top = sorted(per_case(found).items(), key=lambda kv: -kv[1])[:4]
    assert {c for c, _ in top} == set(faults), top
    absent = [s for s in found if s.case == "c07" and s.label == 2]
    assert absent and "not annotated" in absent[0].reasons[0]
    stray = [s for s in found if s.case == "c09" and s.label == 1][0]
    assert any("piece" in r for r in stray.reasons), stray.reasons
    fs = ad.findings_of(found, "Dataset123_X")
    assert {f.case for f in fs} >= set(faults) and all(f.code == "DG406" for f in fs)
    assert all(f.severity.name in ("INFO", "WARNING") for f in fs)
    assert "dataguard audit -d Dataset123_X" in fs[0].help


def test_too_few_cases_are_not_compared():
    cases = dict(list(_cohort(6).items()))
    assert ad.suspects(_figures(cases), {}) == []


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    from bench_audit import build

    work = tmp_path_factory.mktemp("auditbench")
    raw, plan = build(work, cases=21, per_kind=1)
    return work, raw, plan


def test_ranking_finds_the_injected_errors_in_a_scanned_dataset(corrupted, tmp_path):
    from bench_audit import average_precision, recall_at_k

    work, raw, plan = corrupted
    res = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m", jobs=1).scan(full=True)
    view = res.views[raw.name]
    found = ad.audit_view(view)
    scores = per_case(found)
    assert average_precision(scores, set(plan)) >= 0.8
    assert recall_at_k(scores, set(plan)) >= 0.7
    # the scan itself carries DG406 for the top suspects, nothing at error
    dg406 = [f for f in res.findings if f.code == "DG406"]
    assert dg406 and all(f.severity.name != "ERROR" for f in dg406)


def test_cli_table_fits_80_columns_and_json_scores_every_case(corrupted, tmp_path):
    import subprocess

    work, raw, plan = corrupted
    env = dict(os.environ, nnUNet_raw=str(raw.parent), COLUMNS="80", DATAGUARD_STATE_DIR=str(tmp_path / "s"))
    env.pop("nnUNet_preprocessed", None)
    exe = str(Path(sys.executable).with_name("dataguard"))
    t = subprocess.run([exe, "audit", "-d", raw.name.split("_")[0][7:], "--top", "5"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert t.returncode == 0, t.stderr
    assert all(len(line) <= 80 for line in t.stdout.splitlines()), t.stdout
    assert "why" in t.stdout and "more; --top N" in t.stdout
    j = subprocess.run([exe, "audit", "-d", raw.name, "--format", "json"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert j.returncode == 0, j.stderr
    out = json.loads(j.stdout)
    assert set(out["data"]["cases"]) == {p.name[:-7] for p in (raw / "labelsTr").glob("*.nii.gz")}
    s = out["data"]["suspects"][0]
    assert {"case", "label", "name", "score", "reasons", "slice"} <= set(s)
    assert s["case"] in plan


def test_the_demo_has_no_audit_warning(tmp_path):
    from dataguard.demo.synthetic import write_raw_dataset

    raw = write_raw_dataset(tmp_path / "nnUNet_raw", 901, "DemoCardiac", n_cases=12)
    res = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m", jobs=1).scan(full=True)
    assert not [f for f in res.findings if f.code == "DG406" and f.severity.name != "INFO"]


def test_hostile_dataset_runs_no_code_writes_nothing_and_follows_no_link(tmp_path):
    from dataguard.demo.synthetic import write_raw_dataset

    raw = write_raw_dataset(tmp_path / "nnUNet_raw", 905, "Hostile", n_cases=10)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "heart_009.nii.gz"
    os.replace(raw / "labelsTr" / "heart_009.nii.gz", secret)
    os.symlink(secret, raw / "labelsTr" / "heart_009.nii.gz")              # a label that is a link out
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4000, 4000, 4000))                                 # 64 G voxels claimed, 400 bytes
    hdr.set_data_dtype(np.uint8)
    (raw / "labelsTr" / "heart_008.nii").write_bytes(hdr.binaryblock + b"\0" * 4 + b"\1" * 400)
    os.remove(raw / "labelsTr" / "heart_008.nii.gz")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    ws = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m", jobs=1)
    ws.scan(full=True)                                 # lazy imports first (see tests/audit.py)
    with watch(allow_writes=[tmp_path / "m"]) as events:
        view = ws.scan(full=True).views[raw.name]
        found = ad.audit_view(view)
    assert events == [], events
    assert "heart_009" not in {s.case for s in found} and "heart_008" not in {s.case for s in found}
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if not str(p).startswith(str(tmp_path / "m"))}
    assert {p: t for p, t in before.items() if not str(p).startswith(str(tmp_path / "m"))} == after


def test_streamed_strided_read_equals_nibabels_and_refuses_a_short_file(tmp_path):
    from dataguard.checks.mirroring import read_zyx
    from dataguard.checks.volume_read import read_strided

    ct = REPO / "tests" / "data" / "kidney_ct_0000.nii.gz"
    for stride in (None, 1, 2, 3):
        a, s = read_strided(str(ct), 1 << 16, stride)
        b, s2 = read_zyx(str(ct), stride) if stride else read_zyx(str(ct))
        if stride is None:
            b, s2 = read_zyx(str(ct), s)
        assert s == s2 and np.array_equal(a, b), stride
    img = nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), np.eye(4))
    img.header.set_slope_inter(2.0, -3.0)
    nib.save(img, tmp_path / "s.nii")
    a, _ = read_strided(str(tmp_path / "s.nii"), 1000)
    assert np.allclose(a, np.asarray(nib.load(tmp_path / "s.nii").dataobj).transpose(2, 1, 0))
    raw = (tmp_path / "s.nii").read_bytes()
    (tmp_path / "short.nii").write_bytes(raw[:-20])
    with pytest.raises(ValueError):
        read_strided(str(tmp_path / "short.nii"), 1000)


def test_slices_are_the_cases_own_when_read_on_a_strided_grid(tmp_path, monkeypatch):
    from dataguard.checks import label_audit
    from dataguard.demo.synthetic import write_raw_dataset

    raw = write_raw_dataset(tmp_path / "nnUNet_raw", 906, "Strided", n_cases=9, shape=(40, 40, 24))
    view = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m", jobs=1).scan(full=True).views[raw.name]
    whole = label_audit.case_figures(view)
    monkeypatch.setattr(label_audit, "MAX_VOXELS", 40 * 40 * 24 // 8)        # stride 2
    strided = label_audit.case_figures(view)
    for case, labels in whole.items():
        for lab, f in labels.items():
            assert abs(strided[case][lab]["slice"] - f["slice"]) <= 2, (case, lab)


def test_figures_are_recorded_by_the_scan_and_follow_a_changed_label(corrupted, tmp_path):
    """The scan records each case's figures while it streams the image (nothing read again):
    they equal a fresh read of the case, and a label changed on disk (its image untouched)
    gets new figures at the next, incremental, scan."""
    work, raw, plan = corrupted
    ws = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m")
    view = ws.scan(full=True).views[raw.name]
    recorded = ad.recorded_figures(view)
    read = ad.case_figures(view)
    assert recorded is not None and set(recorded) == set(read) and len(read) >= 20
    for case in read:
        assert set(recorded[case]) == set(read[case])
        for lab, f in read[case].items():
            for k, v in f.items():
                assert recorded[case][lab][k] == pytest.approx(v), (case, lab, k)
    clean = sorted(set(read) - set(plan))[0]
    p = raw / "labelsTr" / f"{clean}.nii.gz"
    img = nib.load(p)
    lab = np.asarray(img.dataobj).copy()
    lab[lab == 1] = 0                                         # the myocardium left unlabelled
    nib.save(nib.Nifti1Image(lab, img.affine, img.header), p)
    res = ws.scan()
    assert res.stats.checked == 2                             # the label and its image's channel 0
    again = ad.recorded_figures(res.views[raw.name])
    assert 1 in recorded[clean] and 1 not in again[clean]
    assert any(s.case == clean and s.label == 1 for s in ad.audit_view(res.views[raw.name]))
