"""DG307-DG310 on real NIfTI files: each fault once with it and once without it.

Images are written with nibabel and SimpleITK: a real flipped direction, a re-saved copy with
other compression, swapped channels, a 4D channel, a finer test spacing, a CT not in HU.
"""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

import dataguard
from dataguard.checks.signature import ImageSignature, axcodes
from dataguard.demo.synthetic import write_raw_dataset

AFF = np.diag([1.25, 1.25, 8.0, 1.0])


def _codes(result, code):
    return [f for f in result.findings if f.code == code]


def scan(ds, tmp_path, name="m"):
    return dataguard.scan([str(ds)], manifest_dir=tmp_path / name)


@pytest.fixture
def raw(tmp_path):
    """6 healthy single-channel cases (the demo's synthetic cardiac MRI)."""
    return write_raw_dataset(tmp_path / "nnUNet_raw", 771, "Consistent", n_cases=6, shape=(24, 24, 6))


@pytest.fixture
def two_channel(tmp_path):
    """6 cases with two channels whose intensities differ clearly (a "T1" and a "T2")."""
    ds = write_raw_dataset(tmp_path / "nnUNet_raw", 772, "TwoChannel", n_cases=6, shape=(24, 24, 6))
    meta = json.loads((ds / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (ds / "dataset.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(4)
    for f in sorted((ds / "imagesTr").glob("*_0000.nii.gz")):
        img = np.asanyarray(nib.load(f).dataobj).astype(np.float32)
        t2 = 3000 - img * 2 + rng.normal(0, 5, img.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(t2, AFF), f.with_name(f.name.replace("_0000", "_0001")))
    return ds


def test_healthy_datasets_have_no_consistency_findings(raw, two_channel, tmp_path):
    for ds in (raw, two_channel):
        r = scan(ds, tmp_path, ds.name)
        assert not [f for f in r.findings if f.code in ("DG307", "DG308", "DG309", "DG310")], r.findings


def test_a_flipped_training_case_is_dg308_naming_both_orientations(raw, tmp_path):
    case = "heart_002"
    for sub, name in (("imagesTr", f"{case}_0000.nii.gz"), ("labelsTr", f"{case}.nii.gz")):
        p = raw / sub / name
        img = nib.load(p)
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[::-1], img.affine @ flip), p)   # same world, LAS
    r = scan(raw, tmp_path)
    found = _codes(r, "DG308")
    assert [f.case for f in found] == [case] and str(found[0].severity) == "warning"
    assert "LAS" in found[0].message and "RAS" in found[0].message and "DICOMOrient" in found[0].help


def test_a_test_image_in_another_orientation_is_an_error(raw, tmp_path):
    import SimpleITK as sitk

    (raw / "imagesTs").mkdir()
    src = sitk.ReadImage(str(raw / "imagesTr" / "heart_000_0000.nii.gz"))
    lps = sitk.DICOMOrient(src, "LPS")                         # a real reorientation by SimpleITK
    sitk.WriteImage(lps, str(raw / "imagesTs" / "test_000_0000.nii.gz"))
    shutil.copy(raw / "imagesTr" / "heart_001_0000.nii.gz", raw / "imagesTs" / "test_001_0000.nii.gz")
    r = scan(raw, tmp_path)
    bad = _codes(r, "DG308")
    assert [f.case for f in bad] == ["test_000"] and str(bad[0].severity) == "error"
    # the untouched copy is a duplicate of a training case: leakage
    dup = _codes(r, "DG310")
    assert [f.case for f in dup] == ["test_001"] and "heart_001_0000" in dup[0].message


def test_a_resaved_duplicate_with_other_compression_is_dg310(raw, tmp_path):
    import SimpleITK as sitk

    img = sitk.ReadImage(str(raw / "imagesTr" / "heart_003_0000.nii.gz"))
    target = raw / "imagesTr" / "heart_006_0000.nii.gz"
    sitk.WriteImage(img, str(target), useCompression=True, compressionLevel=9)
    shutil.copy(raw / "labelsTr" / "heart_003.nii.gz", raw / "labelsTr" / "heart_006.nii.gz")
    meta = json.loads((raw / "dataset.json").read_text())
    meta["numTraining"] = 7
    (raw / "dataset.json").write_text(json.dumps(meta))
    assert target.read_bytes() != (raw / "imagesTr" / "heart_003_0000.nii.gz").read_bytes()
    r = scan(raw, tmp_path)
    dup = _codes(r, "DG310")
    assert len(dup) == 1 and {dup[0].case} <= {"heart_003", "heart_006"}
    assert str(dup[0].severity) == "error"


def test_swapped_channels_are_dg307_with_both_names(two_channel, tmp_path):
    case = "heart_004"
    a, b = (two_channel / "imagesTr" / f"{case}_{c:04d}.nii.gz" for c in (0, 1))
    tmp = a.with_name("swap.nii.gz")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    r = scan(two_channel, tmp_path)
    found = _codes(r, "DG307")
    assert [f.case for f in found] == [case]
    assert "T1" in found[0].message and "T2" in found[0].message and "swapped" in found[0].message


def test_a_4d_channel_and_a_copied_channel_are_dg307(two_channel, tmp_path):
    p = two_channel / "imagesTr" / "heart_001_0001.nii.gz"
    img = np.asanyarray(nib.load(p).dataobj)
    nib.save(nib.Nifti1Image(np.stack([img, img, img, img], -1), AFF), p)        # RGBA-like
    shutil.copy(two_channel / "imagesTr" / "heart_002_0000.nii.gz", two_channel / "imagesTr" / "heart_002_0001.nii.gz")
    r = scan(two_channel, tmp_path)
    msgs = {f.case: f.message for f in _codes(r, "DG307")}
    assert "4D" in msgs["heart_001"] and "same image as channel 0" in msgs["heart_002"]


def test_a_finer_test_spacing_names_the_growth(raw, tmp_path):
    (raw / "imagesTs").mkdir()
    img = np.asanyarray(nib.load(raw / "imagesTr" / "heart_000_0000.nii.gz").dataobj)
    nib.save(nib.Nifti1Image(img, np.diag([0.5, 0.5, 2.0, 1.0])), raw / "imagesTs" / "fine_0000.nii.gz")
    nib.save(nib.Nifti1Image(img + 1, AFF), raw / "imagesTs" / "same_0000.nii.gz")
    r = scan(raw, tmp_path)
    found = _codes(r, "DG309")
    assert [f.case for f in found] == ["fine"]
    assert "x25.0" in found[0].message                 # (1.25/0.5)^2 * (8/2)


def test_a_ct_not_in_hounsfield_units_is_dg309(raw, tmp_path):
    meta = json.loads((raw / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT"}
    (raw / "dataset.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    for f in (raw / "imagesTr").glob("*.nii.gz"):          # training CTs in HU
        nib.save(nib.Nifti1Image(rng.normal(-300, 200, (24, 24, 6)).astype(np.int16), AFF), f)
    (raw / "imagesTs").mkdir()
    hu = rng.normal(-300, 200, (24, 24, 6)).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, AFF), raw / "imagesTs" / "hu_0000.nii.gz")
    nib.save(nib.Nifti1Image((hu + 1024).astype(np.uint16) * 3, AFF), raw / "imagesTs" / "raw_0000.nii.gz")
    r = scan(raw, tmp_path)
    found = _codes(r, "DG309")
    assert [f.case for f in found] == ["raw"] and "Hounsfield" in found[0].message


def test_signature_does_not_depend_on_how_the_bytes_arrive():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 50, 30)).astype(np.float32)
    whole = ImageSignature(a.dtype, a.shape)
    whole.feed(a.tobytes())
    split = ImageSignature(a.dtype, a.shape)
    raw = a.tobytes()
    for i in range(0, len(raw), 4099):                 # pieces that split items
        split.feed(raw[i:i + 4099])
    assert whole.facts() == split.facts()
    assert whole.facts()["signature"][1] == pytest.approx(float(np.median(a)), abs=0.05)


def test_axcodes_agree_with_nibabel_and_simpleitk():
    assert axcodes([1, 0, 0, 0, 1, 0, 0, 0, 1]) == "RAS"
    assert axcodes([1, 0, 0, 0, 1, 0, 0, 0, 1], lps=True) == "LPS"
    assert axcodes([-1, 0, 0, 0, 1, 0, 0, 0, 1]) == "LAS"
    assert axcodes([]) is None and axcodes([0.0] * 9) is None


def test_rescan_reuses_the_new_facts(raw, tmp_path):
    first = scan(raw, tmp_path)
    again = scan(raw, tmp_path)
    assert again.stats.checked == 0 and again.findings == first.findings


def test_submit_images_are_checked_against_training_before_anything_is_predicted(raw, tmp_path):
    from dataguard.submit.ensemble import Weights

    images = tmp_path / "test_images"
    images.mkdir()
    src = nib.load(raw / "imagesTr" / "heart_000_0000.nii.gz")
    flipped = nib.Nifti1Image(np.asanyarray(src.dataobj)[::-1], src.affine @ np.diag([-1.0, 1, 1, 1]))
    nib.save(flipped, images / "t_flipped_0000.nii.gz")
    shutil.copy(raw / "imagesTr" / "heart_001_0000.nii.gz", images / "t_leak_0000.nii.gz")
    ws = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m")
    name = ws.datasets[0].name
    found = {(f.code, f.case) for f in ws.dataset(name).submit.check_test_images(images)}
    assert found == {("DG308", "t_flipped"), ("DG310", "t_leak")}
    assert not [f for f in ws.submit.check_test_images(images) if f.code in ("DG308", "DG310")]   # no training: no judgement
    res = ws.dataset(name).submit.predict_and_ensemble([], images, tmp_path / "work", Weights())
    assert res.stage == "images" and {f.code for f in res.findings} == {"DG308", "DG310"}


def test_axcodes_match_nibabel_on_oblique_directions():
    from nibabel.orientations import aff2axcodes

    rng = np.random.default_rng(0)
    for _ in range(500):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        aff = np.eye(4)
        aff[:3, :3] = q
        assert axcodes(list(q.ravel())) == "".join(aff2axcodes(aff))


def test_test_images_are_cases_the_faces_can_show(raw, tmp_path):
    (raw / "imagesTs").mkdir()
    shutil.copy(raw / "imagesTr" / "heart_001_0000.nii.gz", raw / "imagesTs" / "leak_0000.nii.gz")
    ws = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m")
    ws.scan()
    [leak] = [c for c in ws.cases() if c.case == "leak"]
    assert leak.test and leak.status == "error" and [f.code for f in leak.findings] == ["DG310"]
    assert not any(c.test for c in ws.cases() if c.case.startswith("heart_"))


def test_repair_reorients_a_flipped_case_and_restore_undoes_it(raw, tmp_path):
    case = "heart_002"
    paths = [raw / "imagesTr" / f"{case}_0000.nii.gz", raw / "labelsTr" / f"{case}.nii.gz"]
    for p in paths:
        img = nib.load(p)
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[::-1], img.affine @ np.diag([-1.0, 1, 1, 1])), p)
    flipped = [p.read_bytes() for p in paths]
    ws = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m")
    [f] = [f for f in ws.scan().findings if f.code == "DG308"]
    assert str(f.fix) == "reorient" and "dataguard repair" in f.help
    run = ws.repair.run()
    assert not run.failed, run.failed
    after = ws.scan(full=True).findings
    assert not [f for f in after if f.code in ("DG308", "DG304")], after
    src = np.asanyarray(nib.load(paths[0]).dataobj)
    assert nib.aff2axcodes(nib.load(paths[0]).affine) == ("R", "A", "S") and src.shape == (24, 24, 6)
    ws.restore()
    assert [p.read_bytes() for p in paths] == flipped          # byte for byte
