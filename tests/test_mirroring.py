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
    assert (lv, rv, 2) in figs                   # judged: large enough, volumes alike
    for (a, b, ax), f in figs.items():
        assert not f.agrees, (a, b, ax, f)


@pytest.mark.nnunet
def test_the_demo_project_is_not_flagged(real_project):
    """The demo's own project (raw Dataset901 and the legacy copy Dataset902, preprocessed by
    the real nnunetv2): no DG314, while its ventricles are large enough to be judged."""
    r = dataguard.scan([str(real_project)], manifest_dir=real_project.parent / "m", select=["DG314"])
    assert [f for f in r.findings if f.code == "DG314"] == []
    raw = real_project / "nnUNet_raw" / "Dataset901_DemoCardiac"
    label, s = read_zyx(str(raw / "labelsTr" / "heart_000.nii.gz"))
    image, _ = read_zyx(str(raw / "imagesTr" / "heart_000_0000.nii.gz"), s)
    lv, rv = CARDIAC["left_ventricle"], CARDIAC["right_ventricle"]
    figs = case_figures(image, label)
    assert (lv, rv, 2) in figs and not any(f.agrees for f in figs.values())


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


# --- dataguard train --no-mirroring ---------------------------------------------------------
def test_mirror_axes_map_through_transpose_forward_and_2d_patches():
    from dataguard.train.settings import mirror_axes_without

    assert mirror_axes_without((0, 1, 2), [2], [0, 1, 2], 3) == (0, 1)
    assert mirror_axes_without((0, 1, 2), [2], [2, 0, 1], 3) == (1, 2)    # image x is preprocessed axis 0
    assert mirror_axes_without((0, 1), [2], [0, 1, 2], 2) == (0,)          # 2D patches are (y, x)
    assert mirror_axes_without((0, 1), [0], [0, 1, 2], 2) == (0, 1)        # 2D never mirrors its slice axis
    assert mirror_axes_without((0, 1), [0], [2, 0, 1], 2) == (1,)
    assert mirror_axes_without((0, 1, 2), [0, 1, 2], [0, 1, 2], 3) is None
    assert mirror_axes_without(None, [2], [0, 1, 2], 3) is None
    assert mirror_axes_without((0, 1, 2), None, [0, 1, 2], 3) == (0, 1, 2)


def test_the_run_record_keeps_the_setting(tmp_path):
    from dataguard.train import record
    from dataguard.train.settings import TrainSettings

    rec = record.new("Dataset901_DemoCardiac", "2d", "0", trainer="nnUNetTrainer", plans="nnUNetPlans",
                     device="cpu", npz=False, settings=TrainSettings(epochs=3, no_mirroring=[2]))
    record.write(tmp_path, rec)
    back = record.load(tmp_path)
    assert back.settings.no_mirroring == [2] and "--no-mirroring 2" in back.flags()
    assert "--no-mirroring" in record.describe({"no_mirroring": [0, 1, 2]})
    assert "--no-mirroring 0" not in record.describe({"no_mirroring": [0, 1, 2]})
    doc = json.loads(record.path(tmp_path).read_text())
    doc.pop("no_mirroring")                          # a record written before the setting existed
    record.path(tmp_path).write_text(json.dumps(doc))
    assert record.load(tmp_path).settings.no_mirroring is None
    for bad in ([3], [], ["x"], [True], "2", [2.0]):
        doc["no_mirroring"] = bad
        record.path(tmp_path).write_text(json.dumps(doc))
        with pytest.raises(record.RecordError):
            record.load(tmp_path)


def test_the_flag_parses_axes_and_refuses_others():
    from dataguard.cli import build_parser

    p = build_parser()
    base = ["train", "1", "2d", "0"]
    assert p.parse_args(base).no_mirroring is None
    assert p.parse_args([*base, "--no-mirroring"]).no_mirroring == (0, 1, 2)
    assert p.parse_args([*base, "--no-mirroring", "2"]).no_mirroring == (2,)
    assert p.parse_args([*base, "--no-mirroring", "x,z"]).no_mirroring == (0, 2)
    assert p.parse_args([*base, "--no-mirroring", "all"]).no_mirroring == (0, 1, 2)
    with pytest.raises(SystemExit) as e:
        p.parse_args([*base, "--no-mirroring", "3"])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def unmirrored(_real_project_master, tmp_path_factory):
    """Dataset901 2d fold 0 trained for real on the CPU with --no-mirroring 2 (image x)."""
    import shutil

    from conftest import TINY_TRAIN, dataguard_cli, train_env

    root = tmp_path_factory.mktemp("nomirror") / "project"
    shutil.copytree(_real_project_master, root, symlinks=True)
    env = train_env(root)
    proc = dataguard_cli(["train", "901", "2d", "0", *TINY_TRAIN, "--allow", "DG504", "--no-mirroring", "2"],
                         env, root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fold = root / "nnUNet_results" / "Dataset901_DemoCardiac" / "nnUNetTrainer_dataguard__nnUNetPlans__2d" / "fold_0"
    return {"root": root, "env": env, "fold": fold, "proc": proc}


@pytest.mark.nnunet
def test_training_without_mirroring_on_x_keeps_it_out_of_the_checkpoint(unmirrored):
    from dataguard.engine.checkpoint_trust import safe_load

    fold = unmirrored["fold"]
    plans = json.loads((fold.parent / "plans.json").read_text())
    assert plans["configurations"]["2d"].get("transpose_forward", plans.get("transpose_forward")) == [0, 1, 2]
    for name in ("checkpoint_final.pth", "checkpoint_best.pth"):
        ck = safe_load(fold / name, map_location="cpu")
        # 2D patches are (y, x) of the (z, y, x) array: nnU-Net's (0, 1) without x is (0,)
        assert tuple(ck["inference_allowed_mirroring_axes"]) == (0,), name
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "dataguard: no mirroring along image axis 2 (x)" in log
    assert "mirror_axes (0, 1) -> (0,)" in log
    rec = json.loads((fold / "dataguard_train.json").read_text())
    assert rec["no_mirroring"] == [2]


@pytest.mark.nnunet
def test_nnunet_predict_honours_it(unmirrored):
    """nnUNetv2_predict's predictor takes the axes from the checkpoint."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    pred = nnUNetPredictor(device=__import__("torch").device("cpu"), use_mirroring=True)
    pred.initialize_from_trained_model_folder(str(unmirrored["fold"].parent), use_folds=(0,),
                                              checkpoint_name="checkpoint_final.pth")
    assert tuple(pred.allowed_mirroring_axes) == (0,)


@pytest.mark.nnunet
def test_continue_reuses_the_setting_and_refuses_to_change_it(unmirrored):
    from conftest import dataguard_cli

    root, env = unmirrored["root"], unmirrored["env"]
    again = dataguard_cli(["train", "901", "2d", "0", "--continue", "--dry-run", "--allow", "DG504"], env, root)
    text = " ".join((again.stdout + again.stderr).split())
    assert "--no-mirroring 2" in text, text
    assert '"no_mirroring": [2]' in text                # the training process gets it
    changed = dataguard_cli(["train", "901", "2d", "0", "--continue", "--dry-run", "--allow", "DG504",
                             "--no-mirroring", "1"], env, root)
    text = " ".join((changed.stdout + changed.stderr).split())
    assert changed.returncode == 1 and "--no-mirroring [2] -> [1]" in text, text


@pytest.mark.nnunet
def test_the_gate_warns_and_a_3d_run_drops_the_axis_on_the_real_ct(tmp_path):
    """The real CT's dataset preprocessed by nnU-Net (3d_fullres): the train gate shows DG314
    as a warning naming both labels, the axis and the switch (it does not refuse), and a 3D
    run with that switch trains without mirroring along x: nnU-Net's (0, 1, 2) -> (0, 1)."""
    from conftest import dataguard_cli, train_env
    from dataguard.engine.checkpoint_trust import safe_load

    root = tmp_path / "project"
    kidney_raw_dataset(root / "nnUNet_raw")
    (root / "nnUNet_preprocessed").mkdir()
    (root / "nnUNet_results").mkdir()
    env = train_env(root)
    dataguard.Workspace(datasets=[]).train.plan_and_preprocess((root / "nnUNet_raw").resolve(),
                                                              (root / "nnUNet_preprocessed").resolve(), 314,
                                                              ("3d_fullres",))
    # 3 cases make no 5-fold split (DG507): 3 folds of our own; DG203: see the report of this change
    cases = ["kid_000", "kid_001", "kid_002"]
    (root / "nnUNet_preprocessed" / "Dataset314_Kidneys" / "splits_final.json").write_text(json.dumps(
        [{"train": [c for c in cases if c != v], "val": [v]} for v in cases]))
    args = ["train", "314", "3d_fullres", "0", "--device", "cpu", "--allow", "DG203"]
    gate = dataguard_cli([*args, "--dry-run"], env, root)
    text = " ".join(gate.stdout.split())
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "warning DG314: labels 'kidney_right' (1) and 'kidney_left' (2) are mirror images along axis 2 " \
           "(x, left-right)" in text, gate.stdout
    assert "--no-mirroring 2" in text and "nnUNetTrainerNoMirroring" in text
    assert max(len(line) for line in gate.stdout.splitlines() if "DG314" in line or "mirror" in line) <= 80
    run = dataguard_cli([*args, "--epochs", "1", "--iterations-per-epoch", "1", "--val-iterations", "1",
                         "--no-val-mirroring", "--no-mirroring", "2"], env, root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    fold = root / "nnUNet_results" / "Dataset314_Kidneys" / "nnUNetTrainer_dataguard__nnUNetPlans__3d_fullres" / "fold_0"
    assert tuple(safe_load(fold / "checkpoint_final.pth", map_location="cpu")["inference_allowed_mirroring_axes"]) \
        == (0, 1)
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "mirror_axes (0, 1, 2) -> (0, 1)" in log
