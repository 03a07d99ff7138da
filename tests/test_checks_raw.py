"""Raw dataset and label checks (DG301–DG306, DG401–DG404) on real NIfTI files."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import dataguard
from conftest import codes
from dataguard.demo.synthetic import write_raw_dataset


@pytest.fixture
def raw(tmp_path):
    """A healthy raw dataset: 4 cases, 1 channel, labels 0-3 (case 3 without label 3)."""
    return write_raw_dataset(tmp_path / "nnUNet_raw", 778, "TinyRaw", n_cases=4, shape=(16, 16, 4))


def scan(ds, tmp_path, **kw):
    return dataguard.scan([str(ds)], manifest_dir=tmp_path / "m", **kw)


def img_path(ds, case, ch=0):
    return ds / "imagesTr" / f"{case}_{ch:04d}.nii.gz"


def lab_path(ds, case):
    return ds / "labelsTr" / f"{case}.nii.gz"


def save(path, arr, affine=None, klass=nib.Nifti1Image, **hdr):
    img = klass(arr, np.diag([1.25, 1.25, 8.0, 1.0]) if affine is None else affine)
    for k, v in hdr.items():
        img.header[k] = v
    nib.save(img, path)


def test_healthy_raw_dataset_is_clean(raw, tmp_path):
    r = scan(raw, tmp_path)
    assert r.findings == [], [f.to_dict() for f in r.findings]
    assert r.stats.files == 4 * 2 + 1


# DG301 -----------------------------------------------------------------------
@pytest.mark.parametrize("mutate, code, needle", [
    (lambda m: m.pop("channel_names"), "DG301", "'channel_names' is missing"),
    (lambda m: m.update(labels={"background": 0, "a": 1, "b": 3}), "DG301", "consecutive"),
    (lambda m: m.update(labels={"background": 0, "a": 1, "ignore": 1}), "DG312", "ignore label"),
    (lambda m: m.update(file_ending="nii.gz"), "DG301", "file_ending"),
    (lambda m: m.update(labels={"background": 0, "heart": [1, 2], "lv": 2}), "DG312", "regions_class_order"),
])
def test_dg301_dataset_json_problems(raw, tmp_path, mutate, code, needle):
    meta = json.loads((raw / "dataset.json").read_text())
    mutate(meta)
    (raw / "dataset.json").write_text(json.dumps(meta))
    assert any(needle in f.message for f in codes(scan(raw, tmp_path), code))


def test_dg301_invalid_json(raw, tmp_path):
    (raw / "dataset.json").write_text("{'labels': oops")
    assert codes(scan(raw, tmp_path), "DG301")


def test_dg301_near_miss_region_labels_and_ignore_label_are_valid(raw, tmp_path):
    meta = json.loads((raw / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "whole_heart": [1, 2, 3], "cavities": [2, 3], "rv": 3, "ignore": 4}
    meta["regions_class_order"] = [1, 2, 3]
    (raw / "dataset.json").write_text(json.dumps(meta))
    assert codes(scan(raw, tmp_path), "DG301") == []


# DG302 -----------------------------------------------------------------------
def test_dg302_truncated_gzip(raw, tmp_path):
    p = img_path(raw, "heart_001")
    p.write_bytes(p.read_bytes()[:-40])
    [f] = codes(scan(raw, tmp_path), "DG302")
    assert f.case == "heart_001"


def test_dg302_bad_crc(raw, tmp_path):
    p = lab_path(raw, "heart_002")
    b = bytearray(p.read_bytes())
    b[-6] ^= 0xFF                       # inside the CRC32 of the gzip trailer
    p.write_bytes(bytes(b))
    [f] = codes(scan(raw, tmp_path), "DG302")
    assert "checksum" in f.message.lower() or "crc" in f.message.lower()


@pytest.mark.parametrize("content", [os.urandom(2000), gzip.compress(os.urandom(2000)), b"\x00" * 10])
def test_dg302_random_bytes_and_gzip_of_garbage(raw, tmp_path, content):
    img_path(raw, "heart_000").write_bytes(content)
    assert [f.case for f in codes(scan(raw, tmp_path), "DG302")] == ["heart_000"]


def test_dg302_terabyte_header_is_caught_by_arithmetic(raw, tmp_path):
    p = img_path(raw, "heart_000")
    img = nib.load(p)
    hdr = nib.Nifti2Header()        # NIfTI-2: int64 dims, so a terabyte shape is expressible
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((100000, 100000, 100000))
    hdr.set_qform(img.affine)
    hdr["vox_offset"] = 544
    with gzip.open(p, "wb") as f:
        f.write(hdr.binaryblock + b"\x00" * 4 + b"\x00" * 1000)
    [f] = codes(scan(raw, tmp_path), "DG302")
    assert "header says" in f.message


def test_dg103_zero_byte_image(raw, tmp_path):
    img_path(raw, "heart_000").write_bytes(b"")
    [f] = codes(scan(raw, tmp_path), "DG103")
    assert f.fix is None            # nothing to rebuild a raw file from


def test_directory_where_an_image_should_be(raw, tmp_path):
    p = img_path(raw, "heart_000")
    p.unlink()
    p.mkdir()
    (p / "inner.txt").write_text("x")
    r = scan(raw, tmp_path)
    # reported as the broken image it is (not entered: its content is not scanned)
    [f] = r.findings
    assert (f.code, f.path, f.case) == ("DG302", "raw/imagesTr/heart_000_0000.nii.gz", "heart_000")
    assert "a folder" in f.message


# DG303 / DG305 -----------------------------------------------------------------
def test_dg303_missing_channel_label_and_bad_name(raw, tmp_path):
    meta = json.loads((raw / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (raw / "dataset.json").write_text(json.dumps(meta))
    for i in range(4):
        os.link(img_path(raw, f"heart_{i:03d}"), img_path(raw, f"heart_{i:03d}", 1))
    img_path(raw, "heart_001", 1).unlink()
    lab_path(raw, "heart_002").unlink()
    os.rename(img_path(raw, "heart_003", 1), raw / "imagesTr" / "heart_003.nii.gz")
    msgs = {(f.case, f.message.split(" ")[0]) for f in codes(scan(raw, tmp_path), "DG303")}
    assert ("heart_001", "missing") in msgs
    assert ("heart_002", "training") in msgs
    assert ("heart_003", "image") in msgs


def test_dg303_label_without_image(raw, tmp_path):
    os.link(lab_path(raw, "heart_000"), lab_path(raw, "heart_999"))
    [f] = codes(scan(raw, tmp_path), "DG303")
    assert f.case == "heart_999" and "no image" in f.message


def test_dg305_num_training(raw, tmp_path):
    meta = json.loads((raw / "dataset.json").read_text())
    meta["numTraining"] = 5
    (raw / "dataset.json").write_text(json.dumps(meta))
    [f] = codes(scan(raw, tmp_path), "DG305")
    assert "5" in f.message and "4" in f.message


def test_dg303_near_miss_imagests_without_labels_is_fine(raw, tmp_path):
    (raw / "imagesTs").mkdir()
    src = nib.load(img_path(raw, "heart_000"))
    save(raw / "imagesTs" / "test_000_0000.nii.gz", np.asarray(src.dataobj) + 1, src.affine)   # not a copy: DG310
    assert scan(raw, tmp_path).findings == []


# DG304 -----------------------------------------------------------------------
@pytest.mark.parametrize("affine, needle", [
    (np.diag([1.25, 1.25, 8.5, 1.0]), "spacing"),
    (np.array([[1.25, 0, 0, 5.0], [0, 1.25, 0, 0], [0, 0, 8.0, 0], [0, 0, 0, 1]]), "origin"),
    (np.array([[0, 1.25, 0, 0], [1.25, 0, 0, 0], [0, 0, 8.0, 0], [0, 0, 0, 1]]), "direction"),
])
def test_dg304_geometry_mismatch(raw, tmp_path, affine, needle):
    lab = nib.load(lab_path(raw, "heart_001"))
    save(lab_path(raw, "heart_001"), np.asarray(lab.dataobj), affine)
    [f] = codes(scan(raw, tmp_path), "DG304")
    assert f.message.startswith(needle) and f.case == "heart_001"


def test_dg304_4d_series_given_as_one_channel(raw, tmp_path):
    save(img_path(raw, "heart_002"), np.zeros((16, 16, 4, 20), np.float32))
    [f] = codes(scan(raw, tmp_path), "DG304")
    assert "series" in f.message


def test_dg304_near_miss_oblique_but_identical_geometry(raw, tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    aff = np.array([[1.25 * c, -1.25 * s, 0, 10], [1.25 * s, 1.25 * c, 0, -4], [0, 0, 8, 2], [0, 0, 0, 1]])
    for p in (img_path(raw, "heart_000"), lab_path(raw, "heart_000")):
        img = nib.load(p)
        save(p, np.asarray(img.dataobj), aff)
    assert scan(raw, tmp_path).findings == []


def test_nifti2_and_uncompressed_nii(raw, tmp_path):
    meta = json.loads((raw / "dataset.json").read_text())
    meta["file_ending"] = ".nii"
    (raw / "dataset.json").write_text(json.dumps(meta))
    for folder in ("imagesTr", "labelsTr"):
        for p in sorted((raw / folder).glob("*.nii.gz")):
            img = nib.load(p)
            klass = nib.Nifti2Image if folder == "imagesTr" else nib.Nifti1Image
            nib.save(klass(np.asarray(img.dataobj), img.affine), str(p)[:-3])
            p.unlink()
    r = scan(raw, tmp_path)
    assert r.findings == [], [f.to_dict() for f in r.findings]
    fmt = json.loads((tmp_path / "m" / "Dataset778_TinyRaw.json").read_text())["files"]
    assert fmt["raw/imagesTr/heart_000_0000.nii"]["facts"]["format"] == "nifti2"


def test_simpleitk_written_mha_is_read(raw, tmp_path):
    import SimpleITK as sitk

    meta = json.loads((raw / "dataset.json").read_text())
    meta["file_ending"] = ".mha"
    (raw / "dataset.json").write_text(json.dumps(meta))
    for folder in ("imagesTr", "labelsTr"):
        for p in sorted((raw / folder).glob("*.nii.gz")):
            sitk.WriteImage(sitk.ReadImage(str(p)), str(p)[: -len(".nii.gz")] + ".mha")
            p.unlink()
    assert scan(raw, tmp_path).findings == []
    p = lab_path(raw, "heart_000").with_name("heart_000.mha")
    p.write_bytes(p.read_bytes()[:200])
    assert codes(scan(raw, tmp_path), "DG302")


# DG306 -----------------------------------------------------------------------
def test_dg306_nan_voxels_and_bad_spacing(raw, tmp_path):
    arr = np.asarray(nib.load(img_path(raw, "heart_000")).dataobj).copy()
    arr[0, 0, 0] = np.nan
    save(img_path(raw, "heart_000"), arr)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(arr.shape)
    hdr["pixdim"] = [1, 1.25, 0.0, 8.0, 1, 1, 1, 1]   # qform/sform unset: spacing comes from pixdim
    hdr["vox_offset"] = 352
    with gzip.open(img_path(raw, "heart_001"), "wb") as f:
        f.write(hdr.binaryblock + b"\x00" * 4 + np.zeros(arr.shape, np.float32).tobytes(order="F"))
    msgs = sorted(f.message for f in codes(scan(raw, tmp_path), "DG306"))
    assert any("NaN/inf" in m for m in msgs) and any("spacing" in m for m in msgs)


# DG401 / DG402 / DG403 / DG404 -------------------------------------------------
def _label(raw, case):
    return np.asarray(nib.load(lab_path(raw, case)).dataobj)


def test_dg401_float_label_with_1_00000002_values_is_error_and_castable(raw, tmp_path):
    lab = _label(raw, "heart_000").astype(np.float64)
    lab[lab == 1] = 1.00000002
    save(lab_path(raw, "heart_000"), lab)
    [f] = codes(scan(raw, tmp_path), "DG401")
    assert f.severity == dataguard.Severity.ERROR and str(f.fix) == "cast" and "castable" in f.message


def test_dg401_exact_integer_floats_is_warning(raw, tmp_path):
    save(lab_path(raw, "heart_000"), _label(raw, "heart_000").astype(np.float32))
    [f] = codes(scan(raw, tmp_path), "DG401")
    assert f.severity == dataguard.Severity.WARNING


def test_dg401_scl_slope_turns_integer_labels_into_floats(raw, tmp_path):
    img = nib.Nifti1Image(_label(raw, "heart_001").astype(np.uint8), np.diag([1.25, 1.25, 8.0, 1.0]))
    img.header.set_slope_inter(1.0001, 0)
    nib.save(img, lab_path(raw, "heart_001"))
    [f] = codes(scan(raw, tmp_path), "DG401")
    assert "scaling" in f.message


def test_dg401_far_from_integers_is_not_castable(raw, tmp_path):
    lab = _label(raw, "heart_000").astype(np.float32) * 0.5
    save(lab_path(raw, "heart_000"), lab)
    [f] = codes(scan(raw, tmp_path), "DG401")
    assert f.fix is None


def test_dg402_undeclared_label_value(raw, tmp_path):
    lab = _label(raw, "heart_000").copy()
    lab[0, 0, 0] = 9
    save(lab_path(raw, "heart_000"), lab)
    [f] = codes(scan(raw, tmp_path), "DG402")
    assert "[9]" in f.message


def test_dg403_empty_case_and_dg404_unused_label(raw, tmp_path):
    save(lab_path(raw, "heart_002"), np.zeros_like(_label(raw, "heart_002")))
    meta = json.loads((raw / "dataset.json").read_text())
    meta["labels"]["aorta"] = 4
    (raw / "dataset.json").write_text(json.dumps(meta))
    r = scan(raw, tmp_path)
    assert [f.case for f in codes(r, "DG403")] == ["heart_002"]
    [f] = codes(r, "DG404")
    assert "aorta" in f.message and f.severity == dataguard.Severity.WARNING


def test_dg404_near_miss_every_label_used_somewhere(raw, tmp_path):
    # heart_003 lacks label 3, the others have it: not unused
    assert codes(scan(raw, tmp_path), "DG404") == []


def test_label_facts_are_recorded_and_reused(raw, tmp_path):
    scan(raw, tmp_path)
    m = json.loads((tmp_path / "m" / "Dataset778_TinyRaw.json").read_text())
    facts = m["files"]["raw/labelsTr/heart_003.nii.gz"]["facts"]
    assert facts["seg_values"] == [0, 1, 2] and int(facts["label_voxels"]["2"]) > 0
    assert scan(raw, tmp_path).stats.checked == 0


def test_streaming_memory_for_a_512x512x300_int16_volume(tmp_path):
    """Peak memory while checking must stay within a few times the volume (150 MB)."""
    p = tmp_path / "big_0000.nii.gz"
    vol = np.random.default_rng(0).integers(-1000, 2000, size=(512, 512, 300), dtype=np.int16)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
    del vol
    code = (
        "import resource,sys;from dataguard.checks.base import FileTask;"
        "from dataguard.checks.files import check_file;"
        "import numpy, nibabel, blake3, isal.isal_zlib;"
        "b=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"r=check_file(FileTask({str(p)!r},'raw/imagesTr/big_0000.nii.gz','image','raw','big'));"
        "assert not r.findings, r.findings;"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss-b)/1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_mb = float(out.stdout.strip())
    assert grown_mb < 3 * 150, grown_mb
