"""`dataguard doctor` and the resource model: env vars, duplicate ids, /dev/shm, versions, devices,
the estimates and the worker counts they lead to, the JSON, and the time it takes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataguard.doctor import devices, memory, report, resources, versions
from dataguard.doctor.environment import check_env, duplicate_ids
from dataguard.findings import Severity

VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
GB = 1 << 30


@pytest.fixture
def roots(tmp_path, monkeypatch):
    out = {}
    for v in VARS:
        out[v] = tmp_path / v
        out[v].mkdir()
        monkeypatch.setenv(v, str(out[v]))
    return out


def _codes(findings, code=None):
    return [f for f in findings if code is None or f.code == code]


# --- nnU-Net's env vars (DG902) -------------------------------------------------------------------
def test_set_and_existing_env_vars_pass(roots):
    assert _codes(check_env(), "DG902") == []


@pytest.mark.parametrize("var", VARS)
def test_unset_env_var_is_dg902(roots, monkeypatch, var):
    monkeypatch.delenv(var)
    [f] = _codes(check_env(), "DG902")
    assert f.path == var and f.message == f"{var} is not set" and f.severity == Severity.ERROR
    assert f.help and f"export {var}=" in f.help


def test_missing_folder_is_dg902(roots, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nowhere"))
    [f] = _codes(check_env(), "DG902")
    assert "no such folder" in f.message and f.path == "nnUNet_preprocessed"


def test_quoted_env_var_is_dg902(roots, monkeypatch):
    monkeypatch.setenv("nnUNet_results", f'"{roots["nnUNet_results"]}"')
    [f] = _codes(check_env(), "DG902")
    assert "quotes" in f.message


def test_nested_env_vars_are_dg902(roots, monkeypatch):
    inner = roots["nnUNet_raw"] / "pre"
    inner.mkdir()
    monkeypatch.setenv("nnUNet_preprocessed", str(inner))
    [f] = _codes(check_env(), "DG902")
    assert f.path == "nnUNet_preprocessed" and "inside nnUNet_raw" in f.message


def test_unwritable_results_is_dg902(roots):
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere")
    roots["nnUNet_results"].chmod(0o555)
    try:
        [f] = _codes(check_env(), "DG902")
        assert "not writable" in f.message
    finally:
        roots["nnUNet_results"].chmod(0o755)


# --- duplicate ids (DG903) ------------------------------------------------------------------------
def test_two_datasets_with_one_id_are_dg903(roots):
    (roots["nnUNet_raw"] / "Dataset001_A").mkdir()
    (roots["nnUNet_results"] / "Dataset001_B").mkdir()
    (roots["nnUNet_preprocessed"] / "Dataset002_C").mkdir()
    (roots["nnUNet_raw"] / "Dataset002_C").mkdir()            # the same dataset in two roots: fine
    [f] = duplicate_ids()
    assert f.code == "DG903" and f.path == "Dataset001"
    assert "Dataset001_A in nnUNet_raw" in f.message and "Dataset001_B in nnUNet_results" in f.message


# --- /dev/shm (DG905), with a fake small one -------------------------------------------------------
def _fake_statvfs(monkeypatch, shm_bytes: int):
    real = os.statvfs

    class St:
        f_frsize = 4096
        f_blocks = shm_bytes // 4096
        f_bavail = shm_bytes // 4096

    monkeypatch.setattr(memory.os, "statvfs", lambda p: St() if str(p) == memory.SHM else real(p))


def test_docker_default_shm_with_workers_is_dg905(roots, monkeypatch):
    _fake_statvfs(monkeypatch, 64 << 20)
    monkeypatch.setenv("nnUNet_n_proc_DA", "4")
    mem = memory.read_memory()
    assert mem.shm_total == 64 << 20
    [f] = _codes(report.check_memory(mem), "DG905")
    assert "64.0 MB" in f.message and "--shm-size" in f.help


def test_small_shm_without_workers_passes(roots, monkeypatch):
    _fake_statvfs(monkeypatch, 64 << 20)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    assert _codes(report.check_memory(memory.read_memory()), "DG905") == []


def test_training_gate_check_names_the_workers_that_fit_in_shm(tmp_path, monkeypatch):
    pre = fake_preprocessed(tmp_path)
    _fake_statvfs(monkeypatch, 128 << 20)
    monkeypatch.setenv("nnUNet_n_proc_DA", "12")
    [f] = _codes(report.training_check(pre, "3d_fullres"), "DG905")
    fit = int(f.help.rsplit("nnUNet_n_proc_DA=", 1)[1])
    tr = resources.training_estimate(json.loads((pre / "nnUNetPlans.json").read_text()), "3d_fullres", 1, fit)
    assert 0 < fit < 12 and tr.shm_bytes <= 128 << 20
    _fake_statvfs(monkeypatch, 64 << 30)
    assert _codes(report.training_check(pre, "3d_fullres"), "DG905") == []


# --- versions (DG901), with monkeypatched package metadata ------------------------------------------
def _fake_versions(monkeypatch, table: dict):
    from importlib import metadata

    real = metadata.version

    def version(dist):
        if dist in table:
            if table[dist] is None:
                raise metadata.PackageNotFoundError(dist)
            return table[dist]
        return real(dist)

    monkeypatch.setattr(metadata, "version", version)      # what versions.installed() asks


def test_torch_torchvision_mismatch_is_a_dg901_error(monkeypatch):
    _fake_versions(monkeypatch, {"torch": "2.5.1+cu124", "torchvision": "0.22.0"})
    found = versions.check_versions(versions.read_versions())
    [mismatch] = [f for f in found if "torchvision::nms" in f.message]
    assert mismatch.severity == Severity.ERROR and "2.5.1+cu124" in mismatch.message
    [cve] = [f for f in found if "CVE-2025-32434" in f.message]
    assert cve.severity == Severity.WARNING


def test_matching_recent_torch_pair_passes(monkeypatch):
    _fake_versions(monkeypatch, {"torch": "2.14.1", "torchvision": "0.29.1", "nnunetv2": "2.8.1",
                                 "blosc2": "4.1.0", "numpy": "2.3.0", "acvl-utils": "0.2.6"})
    assert versions.check_versions(versions.read_versions()) == []


def test_old_blosc2_with_nnunet_2_8_names_the_issue(monkeypatch):
    _fake_versions(monkeypatch, {"nnunetv2": "2.8.1", "blosc2": "3.2.0", "torch": "2.14.1", "torchvision": "0.29.1"})
    [f] = versions.check_versions(versions.read_versions())
    assert f.code == "DG901" and "MIC-DKFZ/nnUNet#3003" in f.message and f.severity == Severity.ERROR


def test_version_parsing():
    assert versions.parse("2.6.0+cu124") == (2, 6, 0)
    assert versions.parse("3.0.0b1") == (3, 0, 0)
    assert versions.parse(None) == ()
    assert versions.torchvision_for("2.14.1") == (0, 29)


# --- devices (DG906) ----------------------------------------------------------------------------
def test_compile_on_an_old_gpu_is_dg906():
    old = devices.Devices(gpus=[devices.Gpu("Tesla K80", 12 * GB, "3.7")], torch_cuda="12.1", torch_installed=True)
    [f] = devices.check_devices(old, "cuda", compile_env="1")
    assert f.code == "DG906" and "3.7" in f.message and "nnUNet_compile=f" in f.help
    assert devices.check_devices(old, "cuda", compile_env="f") == []


def test_cuda_requested_without_gpu_is_dg906():
    [f] = devices.check_devices(devices.Devices(torch_cuda="13.0", torch_installed=True), "cuda")
    assert "no NVIDIA GPU" in f.message
    assert devices.check_devices(devices.Devices(), "cpu") == []


def test_torch_build_is_read_without_importing_torch():
    code = ("import sys; from dataguard.doctor.devices import torch_build; print(torch_build()[0], "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


# --- the resource model -------------------------------------------------------------------------
def fake_preprocessed(root: Path, shapes=((32, 128, 128), (40, 160, 160)),
                      spacings=((2.5, 1.0, 1.0), (3.5, 1.4, 1.4))) -> Path:
    """A preprocessed folder with only what the model reads: plans, fingerprint, dataset.json."""
    pre = root / "Dataset042_Fake"
    pre.mkdir(parents=True)
    plans = {"plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
             "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "spacing": [3.0, 1.2, 1.2],
                                               "patch_size": [32, 128, 128], "batch_size": 2},
                                "2d": {"spacing": [1.2, 1.2], "patch_size": [160, 160], "batch_size": 12}}}
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    (pre / "dataset_fingerprint.json").write_text(json.dumps(
        {"shapes_after_crop": [list(s) for s in shapes], "spacings": [list(s) for s in spacings],
         "foreground_intensity_properties_per_channel": {"0": {}}}))
    (pre / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2, "c": 3},
         "file_ending": ".nii.gz", "numTraining": len(shapes)}))
    return pre


def test_target_shape_follows_nnunet_compute_new_shape():
    plans = {"transpose_forward": [0, 1, 2], "configurations": {"c": {"spacing": [3.0, 1.2, 1.2]},
                                                                "2d": {"spacing": [1.2, 1.2]}}}
    assert resources.target_shape((40, 160, 160), (3.5, 1.4, 1.4), plans, "c") == (47, 187, 187)
    assert resources.target_shape((40, 160, 160), (3.5, 1.4, 1.4), plans, "2d") == (40, 187, 187)


def test_preprocess_estimate_grows_with_the_volume(tmp_path):
    small = resources.preprocess_estimate(fake_preprocessed(tmp_path / "s"), "3d_fullres")
    big = resources.preprocess_estimate(fake_preprocessed(tmp_path / "b", shapes=((64, 256, 256), (80, 320, 320))),
                                        "3d_fullres")
    assert big.peak_bytes_per_worker - resources.BASE_PRE_WORKER > \
        6 * (small.peak_bytes_per_worker - resources.BASE_PRE_WORKER)
    assert small.largest_case == "case 1" and small.target_shape == (47, 187, 187)


def test_recommended_np_fits_the_available_ram(tmp_path):
    pre = fake_preprocessed(tmp_path)
    est = resources.preprocess_estimate(pre, "3d_fullres", available=64 * GB, cpus=16)
    assert est.recommended_np == 2                    # at most the number of cases
    one = est.main_bytes + est.peak_bytes_per_worker
    tight = resources.preprocess_estimate(pre, "3d_fullres", cases=resources.fingerprint_cases(pre) * 8,
                                          available=int((est.main_bytes + 3.5 * est.peak_bytes_per_worker) / 0.9),
                                          cpus=16)
    assert tight.recommended_np == 3
    none = resources.preprocess_estimate(pre, "3d_fullres", available=int(one * 0.5), cpus=16)
    assert none.recommended_np == 0


def test_doctor_names_the_np_that_fits_and_refuses_what_does_not(tmp_path):
    pre = fake_preprocessed(tmp_path, shapes=((32, 128, 128),) * 10, spacings=((2.5, 1.0, 1.0),) * 10)
    est = resources.preprocess_estimate(pre, "3d_fullres")
    room = int((est.main_bytes + 2.2 * est.peak_bytes_per_worker) / 0.9)
    _, found = report.estimate_all(pre, "3d_fullres", memory.Memory(available=room, cpus=16, shm_total=64 * GB))
    [f] = [f for f in found if f.path == "preprocess"]
    assert f.severity == Severity.WARNING and f.help.endswith("-np 2")
    _, found = report.estimate_all(pre, "3d_fullres", memory.Memory(available=est.main_bytes, cpus=16,
                                                                   shm_total=64 * GB))
    assert any(f.path == "preprocess" and f.severity == Severity.ERROR for f in found)


def test_npp_nps_are_lowered_until_they_fit():
    est = resources.PredictEstimate("3d_fullres", 4, main_bytes=1 * GB, preprocess_bytes=1 * GB, export_bytes=3 * GB)
    assert resources.fitting_npp_nps(est, 100 * GB, 16, 10) == (3, 3)
    npp, nps = resources.fitting_npp_nps(est, int(8 / 0.9 * GB), 16, 10)
    assert 1 + npp * 1 + nps * 3 <= 8 and (npp, nps) == (3, 1)
    assert resources.fitting_npp_nps(est, 3 * GB, 16, 10) == (0, 0)


def _nifti(path: Path, shape, spacing):
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.diag([*spacing, 1.0])), path)


def test_nifti_header_gives_shape_and_spacing_in_nnunet_order(tmp_path):
    _nifti(tmp_path / "a_0000.nii.gz", (30, 20, 10), (0.5, 0.7, 2.0))
    _nifti(tmp_path / "a_0001.nii.gz", (30, 20, 10), (0.5, 0.7, 2.0))
    shape, spacing = resources.nifti_shape(tmp_path / "a_0000.nii.gz")
    assert shape == (10, 20, 30) and spacing == pytest.approx((2.0, 0.7, 0.5))
    [c] = resources.image_infos(tmp_path)
    assert c.case == "a" and c.channels == 2 and c.voxels == 6000


def test_a_coarse_test_image_is_named_with_its_growth_factor(tmp_path):
    pre = fake_preprocessed(tmp_path / "p")
    imgs = tmp_path / "imagesTs"
    imgs.mkdir()
    _nifti(imgs / "fine_0000.nii.gz", (64, 64, 16), (1.2, 1.2, 3.0))
    _nifti(imgs / "coarse_0000.nii.gz", (64, 64, 16), (2.4, 2.4, 6.0))       # 8x the voxels at 1.2/1.2/3.0
    res, found = report.estimate_all(pre, "3d_fullres", memory.Memory(available=64 * GB, cpus=4, shm_total=64 * GB),
                                     images=imgs)
    grown = [f for f in found if f.code == "DG904" and f.case is None and f.path == "coarse"]
    assert len(grown) == 1 and "8.0x larger" in grown[0].message
    assert not [f for f in found if f.path == "fine"]
    assert res["predict"].recommended_npp >= 1 and res["predict"].recommended_nps >= 1


def test_export_estimate_scales_with_classes():
    assert resources.export_bytes(10**6, 10**6, 14) > 3 * resources.export_bytes(10**6, 10**6, 4)


# --- the whole report: JSON schema, exit code, speed, no torch -------------------------------------
def _cli(args, env):
    code = ("import sys, time; t = time.monotonic(); from dataguard.cli import main; rc = main(sys.argv[1:]); "
            "print('HEAVY', sorted(m for m in ('torch', 'nnunetv2', 'SimpleITK', 'numpy') if m in sys.modules), "
            "round(time.monotonic() - t, 2), file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_doctor_json_schema_with_a_dataset(roots, tmp_path):
    pre = fake_preprocessed(roots["nnUNet_preprocessed"])
    env = {**os.environ, "nnUNet_n_proc_DA": "2"}
    t0 = time.monotonic()
    out = _cli(["doctor", "-d", "42", "--config", "3d_fullres", "--format", "json"], env)
    wall = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert set(d) >= {"versions", "findings", "resources", "devices", "memory", "environment"}
    assert d["versions"]["python"] and "torch" in d["versions"] and "nnunetv2" in d["versions"]
    p, q = d["resources"]["preprocess"], d["resources"]["predict"]
    assert isinstance(p["peak_bytes_per_worker"], int) and p["peak_bytes_per_worker"] > resources.BASE_PRE_WORKER
    assert isinstance(p["recommended_np"], int) and p["recommended_np"] >= 1
    assert isinstance(q["peak_bytes_per_case"], int) and q["recommended_npp"] >= 1 and q["recommended_nps"] >= 1
    assert d["dataset"] == pre.name and d["configuration"] == "3d_fullres"
    for f in d["findings"]:
        assert f["code"] in {f"DG90{i}" for i in range(1, 8)} and "help" in f
    heavy = out.stderr.split("HEAVY ", 1)[1]
    assert heavy.startswith("[]"), f"doctor imported {heavy}"
    assert wall < 10                                 # the interpreter start included; the report itself:
    assert d["seconds"] < 2.0


def test_doctor_without_env_exits_1_and_lists_dg902(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in VARS}
    out = _cli(["doctor", "--format", "json"], env)
    assert out.returncode == 1, out.stderr
    d = json.loads(out.stdout)
    assert "resources" not in d
    assert sorted(f["path"] for f in d["findings"] if f["code"] == "DG902") == sorted(VARS)


def test_doctor_table_fits_80_columns(roots):
    env = {**os.environ, "COLUMNS": "80"}
    fake_preprocessed(roots["nnUNet_preprocessed"])
    out = _cli(["doctor", "-d", "42", "--config", "3d_fullres"], env)
    assert out.returncode == 0, out.stderr
    assert "resources: Dataset042_Fake 3d_fullres" in out.stdout and "nnUNetv2_preprocess -np" in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) <= 80


def test_config_without_dataset_is_a_usage_error():
    out = _cli(["doctor", "--config", "2d"], dict(os.environ))
    assert out.returncode == 2 and "--config needs -d" in out.stderr


# --- the gates use it -----------------------------------------------------------------------------
@pytest.mark.nnunet
def test_train_gate_refuses_when_the_augmentation_workers_do_not_fit_in_shm(real_project, monkeypatch, tmp_path):
    from conftest import train_env

    import dataguard

    for k, v in train_env(real_project).items():
        if k.startswith("nnUNet_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("nnUNet_n_proc_DA", "8")
    _fake_statvfs(monkeypatch, 1 << 20)           # the demo's 2d batches are 0.1 MB: 8 workers keep 1.4 MB
    ws = dataguard.Workspace(manifest_dir=tmp_path / "m", jobs=1)
    pf, _ = ws.train.prepare("2d", 1, dataset="901", device="cpu")
    [r] = [r for r in pf.refusals if r.code == "DG905"]
    assert "/dev/shm" in r.what and "nnUNet_n_proc_DA=" in r.fix
    _fake_statvfs(monkeypatch, 64 << 30)
    pf, _ = ws.train.prepare("2d", 1, dataset="901", device="cpu")
    assert not [r for r in pf.refusals if r.code in ("DG904", "DG905")]


def test_submit_names_the_workers_that_fit(tmp_path, monkeypatch):
    from dataguard.submit.predict import ModelSpec, prediction_workers

    pre = fake_preprocessed(tmp_path / "m")
    folder = tmp_path / "model"
    folder.mkdir()
    for f in ("dataset.json",):
        (folder / f).write_text((pre / f).read_text())
    (folder / "plans.json").write_text((pre / "nnUNetPlans.json").read_text())
    imgs = tmp_path / "imagesTs"
    imgs.mkdir()
    _nifti(imgs / "a_0000.nii.gz", (64, 64, 16), (1.2, 1.2, 3.0))
    m = ModelSpec("3d_fullres", "3d_fullres", ["0"], "nnUNetTrainer", "nnUNetPlans", folder)
    w = prediction_workers(m, imgs, "cpu")
    assert (w.npp, w.nps) == (1, 1) and "export of 4 classes" in w.why
    monkeypatch.setenv("nnUNet_npp", "2")
    monkeypatch.setenv("nnUNet_nps", "5")
    w = prediction_workers(m, imgs, "cuda")
    assert (w.npp, w.nps) == (2, 5) and "nnUNet_npp" in w.why


@pytest.mark.parametrize("labels, order", [
    ({"background": 0, "a": 1, "b": 2}, None),
    ({"background": 0, "a": 1, "b": 2, "ignore": 3}, None),
    ({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3}, [1, 2, 3]),
])
def test_exported_channels_are_nnunets_segmentation_heads(labels, order):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from dataguard.doctor.resources import num_classes

    doc = {"labels": labels, **({"regions_class_order": order} if order else {})}
    assert num_classes(doc) == LabelManager(labels, order).num_segmentation_heads
