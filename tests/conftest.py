"""Shared test harness: tiny real datasets, built once per session and copied per test.

`real_project` uses the real nnunetv2 (plan + 2d preprocessing on the CPU) and a
legacy .npz copy; `tiny_pre` builds a small preprocessed dataset by hand in
milliseconds for the per-code unit tests.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest


LABELS = {"background": 0, "myocardium": 1, "left_ventricle": 2, "right_ventricle": 3}
# the smallest plans nnU-Net can train from (what DG211 requires of every configuration)
PLANS = {"plans_name": "nnUNetPlans",
         "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [4, 8, 8],
                                           "spacing": [1.0, 1.0, 1.0], "batch_size": 2}}}


def pytest_configure(config):
    """Checkpoints the tests train go into a trust store of this session, never the user's."""
    import os
    import tempfile

    os.environ["DATAGUARD_TRUST_STORE"] = os.path.join(tempfile.mkdtemp(prefix="dg-trust-"), "trusted.jsonl")
    # manifests, stat indexes and groups rules of this session: never the user's state folder
    os.environ["DATAGUARD_STATE_DIR"] = tempfile.mkdtemp(prefix="dg-state-")


@pytest.fixture(scope="session")
def _real_project_master(tmp_path_factory) -> Path:
    from dataguard.demo.project import build_clean

    root = tmp_path_factory.mktemp("real") / "project"
    build_clean(root, n_cases=8, log=lambda m: None)
    return root


@pytest.fixture
def real_project(_real_project_master, tmp_path) -> Path:
    """nnUNet_raw/ + nnUNet_preprocessed/ with Dataset901 (b2nd) and Dataset902 (legacy npz)."""
    dst = tmp_path / "project"
    shutil.copytree(_real_project_master, dst, symlinks=True)
    return dst


def props(labels=(1, 2, 3)) -> dict:
    """A plain nnU-Net-like properties dict (what `case.pkl` holds)."""
    return {
        "sitk_stuff": {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0), "direction": (1.0,) * 9},
        "spacing": [np.float64(1.0)] * 3,
        "shape_before_cropping": (4, 8, 8),
        "bbox_used_for_cropping": [[0, 4], [0, 8], [0, 8]],
        "shape_after_cropping_and_before_resampling": (4, 8, 8),
        "class_locations": {lab: np.zeros((2, 4), np.int64) for lab in labels},
    }


def write_case_npz(folder: Path, case: str, data=None, seg=None, **extra) -> Path:
    data = np.random.default_rng(0).normal(size=(1, 4, 8, 8)).astype(np.float32) if data is None else data
    seg = (np.arange(4 * 8 * 8).reshape(1, 4, 8, 8) % 4).astype(np.int8) if seg is None else seg
    p = folder / f"{case}.npz"
    np.savez_compressed(p, data=data, seg=seg, **extra)
    return p


def write_pkl(folder: Path, case: str, obj=None) -> Path:
    p = folder / f"{case}.pkl"
    p.write_bytes(pickle.dumps(props() if obj is None else obj))
    return p


def write_b2nd(path: Path, arr) -> Path:
    import blosc2

    blosc2.asarray(np.ascontiguousarray(arr), urlpath=str(path), mode="w",
                   chunks=(1, 1, *arr.shape[2:]))
    return path


@pytest.fixture
def tiny_pre(tmp_path) -> Path:
    """A healthy hand-made preprocessed dataset (legacy layout), 3 cases, no raw."""
    return make_tiny_pre(tmp_path)


def make_tiny_pre(root: Path, name: str = "Dataset777_Tiny", case_labels: dict[str, tuple] | None = None,
                  channel: str = "CT") -> Path:
    """`root/nnUNet_preprocessed/<name>`: healthy legacy cases (default 3, labels 1-3) whose
    .pkl class_locations hold `case_labels`; plans, dataset.json, fingerprint, no raw."""
    case_labels = case_labels or {f"case_{i}": (1, 2, 3) for i in range(3)}
    ds = root / "nnUNet_preprocessed" / name
    cfg = ds / "nnUNetPlans_3d_fullres"
    cfg.mkdir(parents=True)
    (ds / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": channel}, "labels": LABELS, "numTraining": len(case_labels),
         "file_ending": ".nii.gz"}))
    (ds / "dataset_fingerprint.json").write_text("{}")
    (ds / "nnUNetPlans.json").write_text(json.dumps(PLANS))
    for case, labs in case_labels.items():
        write_case_npz(cfg, case)
        write_pkl(cfg, case, props(labs))
    return ds


def predicted_split(f) -> bool:
    """DG505 and the DG504 of nnU-Net's predicted default split: every dataset of 5+ cases
    without a splits_final.json has them. Tests about them ask for them by code."""
    return f.code == "DG505" or (f.code == "DG504" and f.message.startswith("predicted default split"))


def codes(result, code=None):
    """The codes of a result's findings (or the findings of one code), predicted-split
    findings left out unless their code is asked for."""
    if code is None:
        return sorted(f.code for f in result.findings if not predicted_split(f))
    return [f for f in result.findings if f.code == code]


# --- trained tiny models, once per session (train, and later submit/evaluate/report, reuse them) ----
# Folds 0 and 1 of nnU-Net's default split of the 8-case Dataset901: fold 0 validates on the
# two cases without a right ventricle (the gate refuses it unless DG504 is allowed: it is the
# "empty reference" fold evaluate must not score as Dice 0); fold 1 validates RV.
TRAIN_FOLDS = (0, 1)
TRAIN_CONFIGS = ("2d", "3d_fullres")
TINY_TRAIN = ["--device", "cpu", "--epochs", "3", "--iterations-per-epoch", "2", "--val-iterations", "1",
              "--npz", "--no-val-mirroring", "--save-best-per-label"]


def train_env(root: Path) -> dict:
    import os

    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "nnUNet_raw"), nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
               nnUNet_results=str(root / "nnUNet_results"), nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("nnUNet_extTrainer", None)
    env.pop("DATAGUARD_TRAIN_SETTINGS", None)
    return env


def dataguard_cli(args, env, cwd, timeout=600):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "dataguard", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def trained_models(_real_project_master, tmp_path_factory):
    """Dataset901 (real nnunetv2 preprocessing, 8 cases, 2d and 3d_fullres) with folds 0 and 1
    of both configurations trained by `dataguard train` on the CPU: 3 epochs of 2 iterations,
    --npz, per-label bests. Read-only for tests: copy a fold folder before changing it."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("trained") / "project"
    shutil.copytree(_real_project_master, root, symlinks=True)
    env = train_env(root)
    pre = subprocess.run([str(Path(sys.executable).with_name("nnUNetv2_preprocess")), "-d", "901", "-c", "3d_fullres",
                          "-np", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert pre.returncode == 0, pre.stdout[-2000:] + pre.stderr[-2000:]
    runs = {}
    for config in TRAIN_CONFIGS:
        for fold in TRAIN_FOLDS:
            allow = ["--allow", "DG504"] if fold == 0 else []
            proc = dataguard_cli(["train", "901", config, str(fold), *TINY_TRAIN, *allow], env, root)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            runs[(config, fold)] = proc
    results = root / "nnUNet_results" / "Dataset901_DemoCardiac"
    dirs = {c: results / f"nnUNetTrainer_dataguard__nnUNetPlans__{c}" for c in TRAIN_CONFIGS}
    return {"root": root, "env": env, "trainer_dir": dirs["2d"], "trainer_dirs": dirs, "folds": TRAIN_FOLDS,
            "configs": TRAIN_CONFIGS, "runs": runs}


def mounted_tmpfs(folder: Path, size: str = "1m", read_only: bool = False):
    """Mount a real tmpfs on `folder` (a second file system; read-only when asked: root's
    permission bits do not stop root) and yield it; skips the test where mounting is refused."""
    import subprocess

    folder.mkdir(exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e})")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


REGION_LABELS = {"background": 0, "heart": [1, 2, 3], "left_heart": [1, 2], "left_ventricle": 2}
REGION_ORDER = [3, 1, 2]          # heart-only voxels are RV (3), then myocardium (1), then LV (2)
REGION_CONFIGS = ("2d", "3d_fullres")


@pytest.fixture(scope="session")
def region_model(tmp_path_factory):
    """Dataset903 (the synthetic cardiac cases with region labels: heart, left heart, LV) planned
    and preprocessed by real nnunetv2, fold 0 of a 2d and a 3d_fullres region model trained by
    `dataguard train` on the CPU (sigmoid probabilities per region, --npz). Read-only for tests."""
    import subprocess
    import sys

    from dataguard.demo.synthetic import write_raw_dataset
    from dataguard.workspace import Workspace

    root = tmp_path_factory.mktemp("regions") / "project"
    raw_root, pre_root = root / "nnUNet_raw", root / "nnUNet_preprocessed"
    (root / "nnUNet_results").mkdir(parents=True)
    ds = write_raw_dataset(raw_root, 903, "Regions", n_cases=8)
    meta = json.loads((ds / "dataset.json").read_text())
    meta.update(labels=REGION_LABELS, regions_class_order=REGION_ORDER)
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    Workspace(datasets=[]).train.plan_and_preprocess(raw_root.resolve(), pre_root.resolve(), 903, ("2d",))
    env = train_env(root)
    pre = subprocess.run([str(Path(sys.executable).with_name("nnUNetv2_preprocess")), "-d", "903", "-c", "3d_fullres",
                          "-np", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert pre.returncode == 0, pre.stdout[-2000:] + pre.stderr[-2000:]
    for config in REGION_CONFIGS:
        proc = dataguard_cli(["train", "903", config, "0", *TINY_TRAIN, "--allow", "DG504"], env, root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    results = root / "nnUNet_results" / "Dataset903_Regions"
    return {"root": root, "env": env, "results": results, "preprocessed": pre_root / "Dataset903_Regions",
            "dirs": {c: results / f"nnUNetTrainer_dataguard__nnUNetPlans__{c}" for c in REGION_CONFIGS}}


def held_out(src: Path, dst_dir: Path) -> Path:
    """A stand-in for an unseen test image: `src` re-saved with every voxel nudged (same geometry
    and dtype), so it is not the training image itself, which DG310 rightly calls leakage."""
    import nibabel as nib

    img = nib.load(str(src))
    arr = np.asanyarray(img.dataobj)
    nudged = (arr + 1).astype(arr.dtype) if arr.dtype.kind in "iu" else (arr * 1.01 + 0.5).astype(arr.dtype)
    out = Path(dst_dir) / Path(src).name
    nib.save(nib.Nifti1Image(nudged, img.affine, img.header), str(out))
    return out


KIDNEY_LABELS = {"background": 0, "kidney_right": 1, "kidney_left": 2, "spleen": 3, "liver": 4}


def kidney_raw_dataset(raw_root: Path, dataset_id: int = 314, name: str = "Kidneys") -> Path:
    """A tiny nnU-Net raw dataset from the real CT in tests/data (TotalSegmentator's example,
    see tests/data/README.md): 3 cases cut from the one volume (the whole of it; slices 1-22
    without 4 rows at the front and back; 3 columns less on each side), so every case is real
    anatomy. DG314 reports kidney_right / kidney_left along axis 2 (x, left-right)."""
    import nibabel as nib

    data = Path(__file__).parent / "data"
    ct = nib.load(str(data / "kidney_ct_0000.nii.gz"))
    seg = nib.load(str(data / "kidney_ct_seg.nii.gz"))
    img, lab = np.asanyarray(ct.dataobj), np.asanyarray(seg.dataobj)
    ds = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    cuts = [(slice(None), slice(None), slice(None)), (slice(None), slice(4, -4), slice(1, 23)),
            (slice(3, -3), slice(None), slice(None))]
    for i, cut in enumerate(cuts):
        for arr, sub, fname in ((img, "imagesTr", f"kid_{i:03d}_0000.nii.gz"),
                                (lab, "labelsTr", f"kid_{i:03d}.nii.gz")):
            part = np.ascontiguousarray(arr[cut])
            im = nib.Nifti1Image(part, ct.affine)
            im.set_data_dtype(part.dtype)
            nib.save(im, str(ds / sub / fname))
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": KIDNEY_LABELS,
                                                 "numTraining": len(cuts), "file_ending": ".nii.gz"}))
    return ds


def interruptible() -> None:
    """preexec_fn for a child a test interrupts with SIGINT: the default disposition. A suite
    started as a background job of a non-interactive shell (`cmd &`) inherits SIGINT ignored,
    and CPython keeps an ignored SIGINT ignored: Ctrl-C would never reach the child."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
