"""`dataguard submit`, `check-submission` and `ensemble`: real NIfTI files, real zips, real
nnunetv2 (prediction with the session's trained models, and its own ensembling as the
reference for equal weights)."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import LABELS, dataguard_cli, held_out

AFFINE = np.diag([1.25, 1.25, 8.0, 1.0])


def write_nii(path: Path, arr, affine=AFFINE, dtype=None):
    img = nib.Nifti1Image(np.asarray(arr) if dtype is None else np.asarray(arr).astype(dtype), affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, str(path))
    return path


@pytest.fixture
def sub(tmp_path):
    """3 test images + a correct prediction folder + dataset.json, all real NIfTI."""
    from dataguard.demo.synthetic import make_case

    rng = np.random.default_rng(1)
    images, preds = tmp_path / "imagesTs", tmp_path / "pred"
    images.mkdir(), preds.mkdir()
    for i in range(3):
        img, lab = make_case(rng, (24, 24, 6))
        write_nii(images / f"case_{i}_0000.nii.gz", img)
        write_nii(preds / f"case_{i}.nii.gz", lab, dtype=np.uint8)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": LABELS, "channel_names": {"0": "MRI"},
                                                       "file_ending": ".nii.gz", "numTraining": 3}))
    return tmp_path


def submit(root: Path, *extra, pred="pred"):
    return dataguard_cli(["submit", str(root / pred), "--images", str(root / "imagesTs"), "--labels",
                          str(root / "dataset.json"), "-o", str(root / "out.zip"), *extra], None, root)


def read_member(zip_path: Path, name: str):
    import gzip

    with zipfile.ZipFile(zip_path) as zf:
        return nib.Nifti1Image.from_bytes(gzip.decompress(zf.read(name)))


def test_clean_predictions_make_a_verified_flat_zip(sub):
    (sub / "pred" / "summary.json").write_text("{}")            # what nnU-Net leaves beside its predictions
    np.savez(sub / "pred" / "case_0.npz", probabilities=np.zeros((4, 1, 1, 1), np.float32))
    out = submit(sub)
    assert out.returncode == 0, out.stdout + out.stderr
    with zipfile.ZipFile(sub / "out.zip") as zf:
        assert sorted(zf.namelist()) == ["case_0.nii.gz", "case_1.nii.gz", "case_2.nii.gz"]
        assert zf.testzip() is None
    img = read_member(sub / "out.zip", "case_1.nii.gz")
    assert img.get_data_dtype() == np.uint8 and np.allclose(img.affine, AFFINE)
    man = json.loads((sub / "out.zip.manifest.json").read_text())
    import blake3

    with zipfile.ZipFile(sub / "out.zip") as zf:
        assert man["cases"]["case_1.nii.gz"] == blake3.blake3(zf.read("case_1.nii.gz")).hexdigest()
    assert man["versions"]["nnunetv2"] and man["versions"]["dataguard"]
    assert dataguard_cli(["check-submission", str(sub / "out.zip"), "--images", str(sub / "imagesTs"), "--labels",
                          str(sub / "dataset.json")], None, sub).returncode == 0


def test_float_labels_are_refused_then_cast(sub):
    lab = np.asanyarray(nib.load(sub / "pred/case_0.nii.gz").dataobj).astype(np.float64)
    lab[lab == 1] = 1.00000002
    write_nii(sub / "pred/case_0.nii.gz", lab, dtype=np.float64)
    out = submit(sub)
    assert out.returncode == 1 and "DG601" in out.stdout and not (sub / "out.zip").exists()
    fixed = submit(sub, "--fix-dtype")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    img = read_member(sub / "out.zip", "case_0.nii.gz")
    data = np.asanyarray(img.dataobj)
    assert img.get_data_dtype() == np.uint8 and set(np.unique(data)) <= {0, 1, 2, 3} and (data == 1).any()
    # far from integers: refused even with --fix-dtype
    lab[lab == 2] = 2.4
    write_nii(sub / "pred/case_0.nii.gz", lab, dtype=np.float64)
    assert submit(sub, "--fix-dtype").returncode == 1


@pytest.mark.parametrize("fault,code", [
    ("missing", "DG604"), ("extra", "DG604"), ("spacing", "DG603"), ("origin", "DG603"), ("value", "DG602")])
def test_broken_prediction_folders_make_no_archive(sub, fault, code):
    p = sub / "pred" / "case_2.nii.gz"
    lab = np.asanyarray(nib.load(p).dataobj)
    if fault == "missing":
        p.unlink()
    elif fault == "extra":
        write_nii(sub / "pred/case_9.nii.gz", lab, dtype=np.uint8)
    elif fault == "spacing":
        write_nii(p, lab, np.diag([1.25, 1.25, 10.0, 1.0]), dtype=np.uint8)
    elif fault == "origin":
        aff = AFFINE.copy()
        aff[:3, 3] = [5.0, 0.0, 0.0]
        write_nii(p, lab, aff, dtype=np.uint8)
    elif fault == "value":
        lab = lab.copy()
        lab[0, 0, 0] = 7
        write_nii(p, lab, dtype=np.uint8)
    out = submit(sub)
    assert out.returncode == 1, out.stdout
    assert code in out.stdout and "no archive written" in out.stdout
    assert not (sub / "out.zip").exists() and not list(sub.glob("out.zip*"))


def test_empty_prediction_is_a_warning_not_an_error(sub):
    lab = np.zeros((24, 24, 6), np.uint8)
    write_nii(sub / "pred/case_0.nii.gz", lab, dtype=np.uint8)
    out = submit(sub)
    assert out.returncode == 0 and "DG605" in out.stdout


def check(sub, archive: Path):
    return dataguard_cli(["check-submission", str(archive), "--images", str(sub / "imagesTs")], None, sub)


def test_check_submission_catches_broken_archives(sub):
    members = {p.name: p.read_bytes() for p in (sub / "pred").iterdir()}
    nested = sub / "nested.zip"
    with zipfile.ZipFile(nested, "w") as zf:
        for n, b in members.items():
            zf.writestr(f"pred/{n}", b)
    out = check(sub, nested)
    assert out.returncode == 1 and "DG606" in out.stdout and "nested" in out.stdout and "DG604" in out.stdout
    empty = sub / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    out = check(sub, empty)
    assert out.returncode == 1 and "empty archive" in out.stdout
    extra = sub / "extra.zip"
    with zipfile.ZipFile(extra, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
        zf.writestr("notes.txt", "hi")
        with pytest.warns(UserWarning):
            zf.writestr("case_0.nii.gz", members["case_0.nii.gz"])     # a duplicate name
    out = check(sub, extra)
    assert out.returncode == 1 and "extra file" in out.stdout and "duplicate" in out.stdout
    corrupt = sub / "corrupt.zip"
    with zipfile.ZipFile(corrupt, "w", compression=zipfile.ZIP_STORED) as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    data = bytearray(corrupt.read_bytes())
    i = data.find(members["case_1.nii.gz"][:64])
    data[i + 40] ^= 0xFF                                              # a flipped byte: CRC mismatch
    corrupt.write_bytes(bytes(data))
    out = check(sub, corrupt)
    assert out.returncode == 1 and "DG606" in out.stdout and "case_1" in out.stdout


# --- the combiner -----------------------------------------------------------------------------
def test_weighted_argmax_by_hand():
    from dataguard.submit.ensemble import Weights, combine

    # 2 models, 3 classes, 2 voxels
    a = np.array([[0.5, 0.1], [0.3, 0.1], [0.2, 0.8]], np.float32)
    b = np.array([[0.1, 0.6], [0.8, 0.3], [0.1, 0.1]], np.float32)
    eq, _ = combine([a, b], Weights().matrix(["a", "b"], 3))
    assert eq.tolist() == [1, 2]            # means: voxel 0 (.3, .55, .15) -> 1; voxel 1 (.35, .2, .45) -> 2
    w = Weights.parse({"labels": {"2": {"a": 1.0, "b": 0.0}}, "default": {"a": 0.5, "b": 0.5}}, ["a", "b"])
    seg, p = combine([a, b], w.matrix(["a", "b"], 3))
    # voxel 1: P0 = .35, P1 = .2, P2 = .8 (only a) -> 2; voxel 0: P0 .3, P1 .55, P2 .2 -> 1
    assert seg.tolist() == [1, 2] and np.allclose(p[:, 1], [0.35, 0.2, 0.8])


def test_weights_file_errors_are_usage_errors():
    from dataguard.submit.ensemble import Weights
    from dataguard.errors import UsageError

    for bad in ({"labels": {"3": {"a": 1.0}}}, {"labels": {"3": {"a": 0, "b": 0}}},
                {"labels": {"x": {"a": 1, "b": 1}}}, {"labels": {"3": {"a": 1, "c": 1, "b": 1}}},
                {"default": {"a": -1, "b": 1}}, {"weights": {}}):
        with pytest.raises(UsageError):
            Weights.parse(bad, ["a", "b"])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_equal_weights_match_nnunet_averaging(n_models, n_classes, seed):
    from nnunetv2.ensembling.ensemble import average_probabilities
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from dataguard.submit.ensemble import Weights, combine

    import tempfile

    rng = np.random.default_rng(seed)
    probs = []
    for _ in range(n_models):
        x = rng.random((n_classes, 3, 4, 5)).astype(np.float32)
        probs.append(x / x.sum(0, keepdims=True))
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i, p in enumerate(probs):
            np.savez_compressed(f"{d}/{i}.npz", probabilities=p)
            files.append(f"{d}/{i}.npz")
        ref = LabelManager({"background": 0, **{f"l{c}": c for c in range(1, n_classes)}}, None) \
            .convert_probabilities_to_segmentation(average_probabilities(files))
    mine, _ = combine(probs, Weights().matrix([str(i) for i in range(n_models)], n_classes))
    assert np.array_equal(np.asarray(ref), mine)


def test_postprocess_keeps_the_largest_component_and_fills_holes():
    from dataguard.submit.ensemble import postprocess

    seg = np.zeros((1, 9, 9), np.uint8)
    seg[0, 1:6, 1:6] = 1
    seg[0, 3, 3] = 0                       # a hole in label 1
    seg[0, 8, 8] = 1                       # a stray voxel of label 1
    seg[0, 2, 2] = 2                       # another label inside: stays
    lcc = postprocess(seg, "lcc")
    assert lcc[0, 8, 8] == 0 and lcc[0, 3, 3] == 0 and lcc[0, 2, 2] == 2
    filled = postprocess(seg, "lcc+fill")
    assert filled[0, 3, 3] == 1 and filled[0, 2, 2] == 2 and filled[0, 8, 8] == 0


def test_ensemble_finds_probability_files_named_both_ways(trained_models, tmp_path):
    """Validation probabilities of one fold, copied as `case.npz` and as `case.nii.gz.npz`."""
    fold = trained_models["trainer_dir"] / "fold_1" / "validation"
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(fold, a)
    b.mkdir()
    for p in fold.glob("*.npz"):
        shutil.copy(p, b / (p.stem + ".nii.gz.npz"))
        shutil.copy(p.with_suffix(".pkl"), b / (p.stem + ".nii.gz.pkl"))
    for f in ("dataset.json", "plans.json"):
        shutil.copy(trained_models["trainer_dir"] / f, a / f)
    env = trained_models["env"]
    out = dataguard_cli(["ensemble", "-i", str(a), "-i", str(b), "-o", str(tmp_path / "ens")], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    got = sorted(p.name for p in (tmp_path / "ens").glob("*.nii.gz"))
    assert got == sorted(p.stem + ".nii.gz" for p in fold.glob("*.npz")) and got
    # one member without files: DG607, nothing written
    (b / got[0].replace(".nii.gz", ".nii.gz.npz")).unlink()
    out = dataguard_cli(["ensemble", "-i", str(a), "-i", str(b), "-o", str(tmp_path / "ens2")], env, tmp_path)
    assert out.returncode == 1 and "DG607" in out.stdout and not (tmp_path / "ens2").exists()


# --- end to end: predict -> weighted ensemble -> post-process -> zip ----------------------
@pytest.mark.nnunet
def test_submit_end_to_end_with_two_models(trained_models, tmp_path):
    root, env = trained_models["root"], trained_models["env"]
    ts = tmp_path / "imagesTs"
    ts.mkdir()
    for c in ("heart_000", "heart_005"):
        held_out(root / f"nnUNet_raw/Dataset901_DemoCardiac/imagesTr/{c}_0000.nii.gz", ts)
    (tmp_path / "w1.json").write_text(json.dumps({"labels": {"3": {"2d:0": 1.0, "2d:1": 0.0}}}))
    (tmp_path / "w2.json").write_text(json.dumps({"default": {"2d:0": 0.2, "2d:1": 0.8}}))
    args = ["submit", "-d", "901", "--images", str(ts), "-o", str(tmp_path / "sub.zip"), "--model", "2d:0",
            "--model", "2d:1", "--postprocess", "lcc", "--device", "cpu", "--no-tta"]
    first = dataguard_cli([*args, "--weights", str(tmp_path / "w1.json")], env, root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr.count("predicted 2 cases") == 2
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist()) == ["heart_000.nii.gz", "heart_005.nii.gz"] and zf.testzip() is None
    for c in ("heart_000", "heart_005"):
        img = read_member(tmp_path / "sub.zip", f"{c}.nii.gz")
        src = nib.load(ts / f"{c}_0000.nii.gz")
        assert img.shape == src.shape and np.allclose(img.affine, src.affine, atol=1e-4)
        assert img.get_data_dtype() == np.uint8 and set(np.unique(np.asanyarray(img.dataobj))) <= {0, 1, 2, 3}
    man = json.loads((tmp_path / "sub.zip.manifest.json").read_text())
    assert [m["model"] for m in man["models"]] == ["2d:0", "2d:1"]
    assert all(len(m["checkpoints_blake3"]) == 1 for m in man["models"]) and man["postprocess"] == "lcc"
    assert man["weights"]["labels"] == {"3": {"2d:0": 1.0, "2d:1": 0.0}}
    # a new weights file: no inference, a new archive
    second = dataguard_cli([*args, "--weights", str(tmp_path / "w2.json")], env, root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stderr.count("probabilities reused") == 2 and "predicted" not in second.stderr
    assert json.loads((tmp_path / "sub.zip.manifest.json").read_text())["weights"]["default"] == {"2d:0": 0.2,
                                                                                               "2d:1": 0.8}
    # equal weights, no post-processing: what nnU-Net's own ensembling writes, voxel for voxel
    from nnunetv2.ensembling.ensemble import ensemble_folders

    work = tmp_path / "sub.zip.work"
    ensemble_folders([str(work / "2d_0"), str(work / "2d_1")], str(tmp_path / "nnunet_ens"), num_processes=1)
    out = dataguard_cli(["ensemble", "-i", str(work / "2d_0"), "-i", str(work / "2d_1"), "-o",
                         str(tmp_path / "ours")], env, root)
    assert out.returncode == 0, out.stdout + out.stderr
    for c in ("heart_000", "heart_005"):
        ref = np.asanyarray(nib.load(tmp_path / "nnunet_ens" / f"{c}.nii.gz").dataobj)
        mine = np.asanyarray(nib.load(tmp_path / "ours" / f"{c}.nii.gz").dataobj)
        assert np.array_equal(ref, mine)


def test_paths_made_of_markup_print_as_text(sub):
    """An output named like rich markup prints as those characters (no style, no OSC 8 link)."""
    name = "out[bold red]X[link=http:x]y.zip"
    proc = dataguard_cli(["submit", str(sub / "pred"), "--images", str(sub / "imagesTs"), "--labels",
                          str(sub / "dataset.json"), "-o", str(sub / name)], None, sub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"wrote {sub / name}" in proc.stdout.replace("\n", ""), proc.stdout
    assert f"{name}.manifest.json" in proc.stdout.replace("\n", "")
