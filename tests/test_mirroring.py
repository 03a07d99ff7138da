"""DG314 (labels that are mirror images) on real data, and `dataguard train --no-mirroring`.

The real CT is TotalSegmentator's example (tests/data/README.md): a 3 mm abdominal CT with
its kidney_right / kidney_left / spleen / liver segmentation. The tiny nnU-Net raw dataset
made from it holds three cases cut from that one volume (different slabs and margins), so
every case is real anatomy; the kidneys must be reported along the left-right axis and no
other pair. The demo's cardiac data (left and right ventricles) must not be.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import dataguard
from conftest import kidney_raw_dataset
from dataguard.checks.mirroring import (INTENSITY_MAX, OVERLAP_MIN, SHAPE_MIN, VOLUME_MIN, case_figures,
                                        read_zyx)
from dataguard.demo.synthetic import LABELS as CARDIAC, write_raw_dataset

DATA = Path(__file__).parent / "data"


def dg314(ds: Path, tmp_path: Path, select=None):
    r = dataguard.scan([str(ds)], manifest_dir=tmp_path / f"m_{ds.name}", select=select)
    return [f for f in r.findings if f.code == "DG314"], r


def test_the_real_ct_kidneys_are_mirror_images_along_left_right(tmp_path):
    ds = kidney_raw_dataset(tmp_path / "nnUNet_raw")
    found, _ = dg314(ds, tmp_path)
    assert len(found) == 1, [f.message for f in found]
    f = found[0]
    assert "'kidney_right' (1) and 'kidney_left' (2)" in f.message
    assert "axis 2 (x, left-right)" in f.message            # the image is RAS: its first axis
    assert "in 3 of 3 cases" in f.message
    assert "--no-mirroring 2" in f.help and "nnUNetTrainerNoMirroring" in f.help


def test_the_real_ct_figures(tmp_path):
    """The figures on the shipped volume itself, against the stated thresholds."""
    label, s = read_zyx(str(DATA / "kidney_ct_seg.nii.gz"))
    image, _ = read_zyx(str(DATA / "kidney_ct_0000.nii.gz"), s)
    figs = case_figures(image, label)
    k = figs[(1, 2, 2)]
    assert k.overlap >= OVERLAP_MIN + 0.2 and k.shape >= SHAPE_MIN and k.volume >= VOLUME_MIN
    assert k.intensity <= INTENSITY_MAX / 2
    assert k.agrees
    for ax in (0, 1):                        # mirrored head-feet or front-back they do not meet
        assert figs[(1, 2, ax)].overlap < 0.05 and not figs[(1, 2, ax)].agrees
    assert not any(f.agrees for key, f in figs.items() if key[:2] != (1, 2))


def test_the_demo_cardiac_ventricles_are_not_flagged(tmp_path):
    ds = write_raw_dataset(tmp_path / "nnUNet_raw", 901, "DemoCardiac", n_cases=10)
    found, _ = dg314(ds, tmp_path)
    assert found == []
    # they were judged (large enough) and fail on intensity, not for want of voxels
    label, s = read_zyx(str(ds / "labelsTr" / "heart_000.nii.gz"))
    image, _ = read_zyx(str(ds / "imagesTr" / "heart_000_0000.nii.gz"), s)
    figs = case_figures(image, label)
    lv, rv = CARDIAC["left_ventricle"], CARDIAC["right_ventricle"]
    assert any(k[:2] == (lv, rv) for k in figs) or all(k[:2] != (lv, rv) for k in figs)
    for (a, b, ax), f in figs.items():
        assert not f.agrees, (a, b, ax, f)


def _edit_cases(ds: Path, change) -> None:
    """Apply change(image, label) -> (image, label) to every case, saved as it was."""
    for lab_path in sorted((ds / "labelsTr").glob("*.nii.gz")):
        img_path = ds / "imagesTr" / lab_path.name.replace(".nii.gz", "_0000.nii.gz")
        im, lb = nib.load(str(img_path)), nib.load(str(lab_path))
        a, b = change(np.asanyarray(im.dataobj).copy(), np.asanyarray(lb.dataobj).copy())
        for arr, ref, p in ((a, im, img_path), (b, lb, lab_path)):
            out = nib.Nifti1Image(arr.astype(ref.get_data_dtype()), ref.affine)
            out.set_data_dtype(ref.get_data_dtype())
            nib.save(out, str(p))


def _brighter_left(img, lab):
    img[lab == 2] += 200                         # kidney_left 200 HU brighter: told apart by intensity
    return img, lab


def _half_left(img, lab):
    lab[(lab == 2) & (np.arange(lab.shape[2])[None, None, :] >= 9)] = 0    # kidney_left's lower half only
    return img, lab


@pytest.mark.parametrize("change", [_brighter_left, _half_left], ids=["intensity", "volume"])
def test_real_kidneys_told_apart_are_not_flagged(change, tmp_path):
    ds = kidney_raw_dataset(tmp_path / "nnUNet_raw")
    _edit_cases(ds, change)
    found, _ = dg314(ds, tmp_path)
    assert found == [], [f.message for f in found]


def test_most_cases_must_agree(tmp_path):
    """Two of three cases told apart by intensity: 1 of 3 agree, not reported."""
    ds = kidney_raw_dataset(tmp_path / "nnUNet_raw")
    for case in ("kid_000", "kid_001"):
        p, lp = ds / "imagesTr" / f"{case}_0000.nii.gz", ds / "labelsTr" / f"{case}.nii.gz"
        im, lab = nib.load(str(p)), np.asanyarray(nib.load(str(lp)).dataobj)
        arr = np.asanyarray(im.dataobj).copy()
        arr[lab == 2] += 200
        nib.save(nib.Nifti1Image(arr, im.affine, im.header), str(p))
    assert dg314(ds, tmp_path)[0] == []


def test_axis_follows_the_array_not_the_names(tmp_path):
    """The same volume stored with its axes permuted (z, y, x): the pair is reported along the
    axis that now runs left-right (0), named from the file's own orientation."""
    ds = kidney_raw_dataset(tmp_path / "nnUNet_raw")
    for sub in ("imagesTr", "labelsTr"):
        for p in sorted((ds / sub).glob("*.nii.gz")):
            im = nib.load(str(p))
            arr = np.ascontiguousarray(np.asanyarray(im.dataobj).transpose(2, 1, 0))
            aff = im.affine[:, [2, 1, 0, 3]]
            out = nib.Nifti1Image(arr, aff)
            out.set_data_dtype(arr.dtype)
            nib.save(out, str(p))
    found, _ = dg314(ds, tmp_path)
    assert len(found) == 1 and "axis 0 (z, left-right)" in found[0].message, [f.message for f in found]
    assert "--no-mirroring 0" in found[0].help


@pytest.mark.parametrize("shape,n", [((48, 48, 12), 10), ((24, 24, 6), 6), ((16, 16, 4), 5), ((8, 8, 4), 3),
                                     ((32, 32, 6), 6), ((128, 128, 16), 4)])
def test_no_false_positive_on_the_clean_test_datasets(shape, n, tmp_path):
    """The synthetic datasets the suite and the benchmarks build (sizes as they use them)."""
    for seed in (0, 1):
        ds = write_raw_dataset(tmp_path / f"raw{seed}", 771, "Clean", n_cases=n, shape=shape, seed=seed)
        assert dg314(ds, tmp_path / f"s{seed}")[0] == []


def test_no_false_positive_on_label_slabs(tmp_path):
    """test_every_code's raw base: labels 1-3 are single slices of noise, mirror images of each
    other along z, too small (64 voxels) to say anything about shape: not judged."""
    ds = tmp_path / "nnUNet_raw" / "Dataset779_TinyRaw"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        nib.save(nib.Nifti1Image(rng.normal(100, 20, (8, 8, 4)).astype(np.float32), np.eye(4)),
                 str(ds / "imagesTr" / f"heart_{i:03d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image((np.arange(256).reshape(8, 8, 4) % 4).astype(np.uint8), np.eye(4)),
                 str(ds / "labelsTr" / f"heart_{i:03d}.nii.gz"))
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": CARDIAC,
                                                 "numTraining": 2, "file_ending": ".nii.gz"}))
    assert dg314(ds, tmp_path)[0] == []


def test_a_rescan_with_nothing_changed_reads_no_voxels(tmp_path, monkeypatch):
    ds = kidney_raw_dataset(tmp_path / "nnUNet_raw")
    ws = dataguard.Workspace([str(ds)], manifest_dir=tmp_path / "m", jobs=1)
    assert [f.code for f in ws.scan().findings].count("DG314") == 1
    import dataguard.checks.mirroring as mirroring

    def boom(*a, **k):
        raise AssertionError("read again")
    monkeypatch.setattr(mirroring, "read_zyx", boom)
    assert [f.code for f in ws.scan().findings].count("DG314") == 1


def test_reads_are_bounded_by_a_stride(tmp_path):
    """A volume larger than MAX_VOXELS is read on a strided grid, not whole."""
    from dataguard.checks import mirroring

    p = tmp_path / "big.nii.gz"
    arr = np.zeros((200, 200, 100), np.uint8)
    arr[10:20, 10:20, 10:20] = 1
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(p))
    got, s = read_zyx(str(p))
    assert s == 2 and got.shape == (50, 100, 100) and got.size <= mirroring.MAX_VOXELS
