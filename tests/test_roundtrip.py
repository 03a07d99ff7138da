"""DG405: a configuration that cannot represent a label (round trip through its target spacing).

nnU-Net is the oracle: its own ConfigurationManager resampling functions on the same case give
the same per-label Dice as dataguard's figure (to 1e-6). Real NIfTI files, real plans written by
nnUNetv2_plan (the real_project fixture), the real CLI in a subprocess.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import dataguard_cli, train_env
from dataguard.checks import roundtrip as rt
from dataguard.checks.base import FileTask
from dataguard.engine.scanner import scan

DS = "Dataset901_DemoCardiac"


def _add_lowres(root: Path, factor: float = 3.0, name: str = "3d_lowres") -> dict:
    """A coarse copy of 3d_fullres in the real plans, as nnU-Net's 3d_lowres would be."""
    f = root / "nnUNet_preprocessed" / DS / "nnUNetPlans.json"
    plans = json.loads(f.read_text())
    conf = dict(plans["configurations"]["3d_fullres"])
    conf["spacing"] = [conf["spacing"][0]] + [s * factor for s in conf["spacing"][1:]]
    conf["data_identifier"] = f"nnUNetPlans_{name}"
    plans["configurations"][name] = conf
    f.write_text(json.dumps(plans, indent=2))
    return plans


def _task(label: Path, root: Path) -> FileTask:
    from dataguard.engine.layout import planned_configurations

    specs = rt.config_specs(planned_configurations(root / "nnUNet_preprocessed" / DS))
    return FileTask(str(label), f"raw/labelsTr/{label.name}", "label", "raw", label.name[:-7], roundtrip=specs)


def _nnunet_roundtrip(plans: dict, config: str, label: Path) -> dict[int, float]:
    """Per-label Dice of nnU-Net's round trip, written with nnU-Net's objects only: its reader,
    its ConfigurationManager's resampling_fn_seg / resampling_fn_probabilities, argmax."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(config)
    seg, props = SimpleITKIO().read_seg(str(label))
    seg = seg.transpose([0, *[i + 1 for i in pm.transpose_forward]])
    spacing = [props["spacing"][i] for i in pm.transpose_forward]
    target = cm.spacing if len(cm.spacing) == 3 else [spacing[0], *cm.spacing]
    new_shape = compute_new_shape(seg.shape[1:], spacing, target)
    small = cm.resampling_fn_seg(seg, new_shape, spacing, target)[0]
    classes = [int(v) for v in np.unique(seg)]
    onehot = np.stack([(small == c).astype(np.float32) for c in classes])
    back = cm.resampling_fn_probabilities(onehot, seg.shape[1:], target, spacing)
    pred = np.asarray(classes)[torch.from_numpy(np.asarray(back)).argmax(0).numpy()]
    ref = seg[0]
    out = {}
    for c in classes:
        if c:
            a, b = ref == c, pred == c
            out[c] = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
    return out


def test_figures_equal_nnunets_own_round_trip(real_project):
    plans = _add_lowres(real_project)
    labels = sorted((real_project / "nnUNet_raw" / DS / "labelsTr").glob("*.nii.gz"))[:3]
    for label in labels:
        with open(label, "rb") as f:
            _, facts = rt.check_roundtrip(_task(label, real_project), f, None)
        mine = facts["roundtrip"]["configs"]["3d_lowres"]["labels"]
        theirs = _nnunet_roundtrip(plans, "3d_lowres", label)
        assert set(map(int, mine)) == set(theirs)
        for lab, dice in theirs.items():
            assert abs(mine[str(lab)][0] - dice) <= 1e-6, (label.name, lab, mine[str(lab)][0], dice)
        # 2d and 3d_fullres are at the cases' own spacing: nothing resampled, every label kept
        for conf in ("2d", "3d_fullres"):
            assert facts["roundtrip"]["configs"][conf].get("same") is True


def test_clean_real_project_has_no_dg405_and_rescan_resamples_nothing(real_project, monkeypatch):
    env = train_env(real_project)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, env[k])
    res = scan([DS])
    assert not [f for f in res.findings if f.code == "DG405"]
    rows = rt.table(res.views[DS])
    assert {r["configuration"] for r in rows} == {"2d", "3d_fullres"}
    assert {r["label"] for r in rows} == {1, 2, 3}
    assert all(r["mean"] == 1.0 for r in rows)
    again = scan([DS])
    assert again.stats.checked == 0 and not again.stats.read
    # an image changes, the labels do not: no label is read (nor resampled) again
    img = next((real_project / "nnUNet_raw" / DS / "imagesTr").glob("*.nii.gz"))
    img.write_bytes(img.read_bytes())
    import os
    os.utime(img, ns=(1, 1))
    third = scan([DS])
    assert not [r for r in third.stats.read if "labelsTr" in r]


def test_coarse_configuration_is_flagged_in_the_cli_naming_the_one_that_represents(real_project):
    _add_lowres(real_project)
    env = train_env(real_project)
    proc = dataguard_cli(["scan", "-d", "901", "--select", "DG405", "--format", "json"], env, real_project)
    out = json.loads(proc.stdout)
    dg = [f for f in out["findings"] if f["code"] == "DG405"]
    assert dg, proc.stdout
    assert all("configuration 3d_lowres" in f["message"] for f in dg)
    myo = [f for f in dg if "'myocardium'" in f["message"]]
    assert myo and "configuration 2d represents it" in myo[0]["message"]
    assert "spacing 8 x 3.75 x 3.75 mm" in myo[0]["message"]
    assert all(f["severity"] == "warning" for f in dg)


def _nifti(path: Path, arr, spacing):
    import nibabel as nib

    aff = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(arr, aff), str(path))


def _thin_wall_dataset(root: Path, coarse_spacing=(3.0, 3.0, 3.0)) -> Path:
    """Raw data with a 1-voxel wall (label 2) beside a big blob (label 1), and plans with a
    3d_fullres at the images' spacing and a coarse custom configuration."""
    ds = "Dataset950_Wall"
    raw = root / "nnUNet_raw" / ds
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        seg = np.zeros((64, 64, 30), np.uint8)
        seg[4:36, 8:56, 3:27] = 1              # an organ: survives 3 mm
        seg[45 + i, 4:60, 2:28] = 2            # a wall one voxel thick along x: does not
        _nifti(raw / "labelsTr" / f"w_{i:03d}.nii.gz", seg, (1.0, 1.0, 1.0))
        _nifti(raw / "imagesTr" / f"w_{i:03d}_0000.nii.gz", rng.normal(size=seg.shape).astype(np.float32),
               (1.0, 1.0, 1.0))
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {
        "background": 0, "blob": 1, "wall": 2}, "numTraining": 3, "file_ending": ".nii.gz"}))
    pre = root / "nnUNet_preprocessed" / ds
    pre.mkdir(parents=True)
    kw_seg = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
    kw_prob = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    base = {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [32, 32, 32], "batch_size": 2,
            "spacing": [1.0, 1.0, 1.0], "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_seg_kwargs": kw_seg, "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": kw_prob, "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}}
    plans = {"plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "configurations": {"3d_fullres": base,
                                "3d_coarse": {"inherits_from": "3d_fullres", "spacing": list(coarse_spacing),
                                              "data_identifier": "nnUNetPlans_3d_coarse"}}}
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    shutil.copy(raw / "dataset.json", pre / "dataset.json")
    return root


def test_thin_wall_vanishes_in_a_coarse_configuration(tmp_path):
    root = _thin_wall_dataset(tmp_path / "p")
    env = train_env(root)
    proc = dataguard_cli(["scan", "-d", "950", "--select", "DG405", "--format", "json"], env, root)
    dg = [f for f in json.loads(proc.stdout)["findings"] if f["code"] == "DG405"]
    assert len(dg) == 1, proc.stdout
    msg = dg[0]["message"]
    assert "configuration 3d_coarse" in msg and "label 2 'wall'" in msg and "spacing 3 x 3 x 3 mm" in msg
    assert "configuration 3d_fullres represents it (Dice 1.000)" in msg
    # the figure in the message is the table's, and the table is nnU-Net's round trip
    res = scan([str(root / "nnUNet_raw" / "Dataset950_Wall")], manifest_dir=tmp_path / "m")
    rows = {(r["configuration"], r["label"]): r for r in rt.table(res.views["Dataset950_Wall"])}
    wall = rows[("3d_coarse", 2)]
    assert f"round-trip Dice {wall['mean']:.3f}" in msg
    assert wall["mean"] < rt.THRESHOLD and rows[("3d_coarse", 1)]["mean"] >= rt.THRESHOLD
    assert rows[("3d_fullres", 2)]["mean"] == 1.0


def test_hostile_plans_spacing_is_refused_not_allocated(tmp_path):
    root = _thin_wall_dataset(tmp_path / "p", coarse_spacing=(1e-3, 1e-3, 50.0))
    res = scan([str(root / "nnUNet_raw" / "Dataset950_Wall")], manifest_dir=tmp_path / "m")
    dg = [f for f in res.findings if f.code == "DG405"]
    refused = [f for f in dg if "not computed" in f.message]
    assert refused and "configuration 3d_coarse" in refused[0].message and "more than 4x" in refused[0].message
    assert refused[0].severity.name.lower() == "info"


def test_unknown_resampling_function_is_not_called(tmp_path):
    root = _thin_wall_dataset(tmp_path / "p")
    f = root / "nnUNet_preprocessed" / "Dataset950_Wall" / "nnUNetPlans.json"
    plans = json.loads(f.read_text())
    plans["configurations"]["3d_coarse"]["resampling_fn_seg"] = "os.system"
    f.write_text(json.dumps(plans))
    res = scan([str(root / "nnUNet_raw" / "Dataset950_Wall")], manifest_dir=tmp_path / "m")
    msgs = [f.message for f in res.findings if f.code == "DG405"]
    assert any("not nnU-Net's default" in m for m in msgs)


def test_context_key_of_other_files_is_unchanged():
    t = FileTask("/x", "raw/imagesTr/a_0000.nii.gz", "image", "raw", "a", (0, 1))
    assert t.context_key() == "image|raw|a|(0, 1)"
    lab = FileTask("/x", "raw/labelsTr/a.nii.gz", "label", "raw", "a", (0, 1), roundtrip="[]")
    assert lab.context_key().startswith("label|raw|a|(0, 1)|rt:")


def test_doctor_config_names_only_that_configurations_dg405(real_project):
    _add_lowres(real_project)
    env = train_env(real_project)
    low = dataguard_cli(["doctor", "-d", "901", "--config", "3d_lowres", "--format", "json"], env, real_project)
    dg = [f for f in json.loads(low.stdout)["findings"] if f["code"] == "DG405"]
    assert dg and all("configuration 3d_lowres" in f["message"] for f in dg), low.stdout[-3000:]
    full = dataguard_cli(["doctor", "-d", "901", "--config", "3d_fullres", "--format", "json"], env, real_project)
    assert not [f for f in json.loads(full.stdout)["findings"] if f["code"] == "DG405"]
    table = dataguard_cli(["doctor", "-d", "901", "--config", "3d_lowres"], env, real_project)
    assert "DG405" in table.stdout and max(map(len, table.stdout.splitlines())) <= 80


def test_report_draws_the_configuration_by_label_table(real_project, tmp_path):
    _add_lowres(real_project)
    env = train_env(real_project)
    out = tmp_path / "r.html"
    proc = dataguard_cli(["report", "-d", "901", "-o", str(out), "--no-images"], env, real_project)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    html = out.read_text()
    sec = html[html.index('id="roundtrip"'):]
    sec = sec[:sec.index("</section>")]
    for c in ("2d", "3d_fullres", "3d_lowres", "myocardium", "right_ventricle", "DG405"):
        assert c in sec
    assert "round trip" in proc.stderr


def test_a_label_with_thousands_of_values_is_not_resampled_per_value(tmp_path):
    root = _thin_wall_dataset(tmp_path / "p")
    lab = root / "nnUNet_raw" / "Dataset950_Wall" / "labelsTr" / "w_000.nii.gz"
    _nifti(lab, (np.arange(64 * 64 * 30) % 3000).reshape(64, 64, 30).astype(np.int16), (1.0, 1.0, 1.0))
    with open(lab, "rb") as f:
        _, facts = rt.check_roundtrip(_task_for(root, lab), f, None)
    assert "3000 distinct values" in facts["roundtrip"]["skipped"]
    res = scan([str(root / "nnUNet_raw" / "Dataset950_Wall")], manifest_dir=tmp_path / "m", select=["DG405"])
    info = [f for f in res.findings if "not computed for 1 training label" in f.message]
    assert info and info[0].severity.name.lower() == "info" and "w_000" in info[0].message


def _task_for(root: Path, label: Path) -> FileTask:
    from dataguard.engine.layout import planned_configurations

    specs = rt.config_specs(planned_configurations(root / "nnUNet_preprocessed" / "Dataset950_Wall"))
    return FileTask(str(label), f"raw/labelsTr/{label.name}", "label", "raw", label.name[:-7], roundtrip=specs)


def test_figures_equal_nnunets_whole_preprocessing_and_export(real_project):
    """The strongest oracle: nnU-Net's DefaultPreprocessor.run_case (reader, transpose, crop to
    nonzero, resampling) and convert_predicted_logits_to_segmentation_with_correct_shape (the
    export) on a perfect prediction (the preprocessed label, one-hot) give dataguard's figure.
    The demo's images are nonzero everywhere, so nnU-Net's crop is the whole case here."""
    import SimpleITK as sitk
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = _add_lowres(real_project)
    raw = real_project / "nnUNet_raw" / DS
    dj = json.loads((raw / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm, lm = pm.get_configuration("3d_lowres"), pm.get_label_manager(dj)
    for lab in sorted((raw / "labelsTr").glob("*.nii.gz"))[:2]:
        case = lab.name[:-7]
        _, seg, props = DefaultPreprocessor(verbose=False).run_case(
            [str(raw / "imagesTr" / f"{case}_0000.nii.gz")], str(lab), pm, cm, dj)
        onehot = torch.from_numpy(np.stack([(seg[0] == c).astype(np.float32) for c in range(len(lm.all_labels))]))
        pred = convert_predicted_logits_to_segmentation_with_correct_shape(onehot, pm, cm, lm, props)
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(lab)))
        with open(lab, "rb") as f:
            _, facts = rt.check_roundtrip(_task(lab, real_project), f, None)
        mine = facts["roundtrip"]["configs"]["3d_lowres"]["labels"]
        assert mine
        for c, figs in mine.items():
            a, b = ref == int(c), pred == int(c)
            dice = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
            assert abs(figs[0] - dice) <= 1e-6, (case, c, figs[0], dice)


@pytest.mark.parametrize("shape", [(12, 20, 24), (40, 50)])
@pytest.mark.parametrize("share", [0.05, 0.1, 0.2])
def test_component_counts_equal_scipys_full_connectivity(shape, share):
    """The components counted with cc3d are scipy's with a 3^n structure (every neighbour)."""
    import numpy as np
    from scipy import ndimage

    from dataguard.checks.resample import components

    mask = np.random.default_rng(len(shape) * 10 + int(share * 100)).random(shape) < share
    lab, n = components(mask)
    ref, k = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    assert n == k > 1
    assert np.array_equal(lab > 0, mask)
    assert sorted(np.bincount(lab.ravel())[1:]) == sorted(np.bincount(ref.ravel())[1:])


def test_labels_to_round_trip_are_parallel_work():
    """Compressed labels are small, but each round trip is tens of ms of GIL-free numpy: eight
    or more of them run on the pool even when the bytes alone would stay in-process."""
    from dataguard.engine.executors import PARALLEL_MIN_FILES, choose_pool

    kinds, sizes = ["label"] * 20, [30_000] * 20
    assert not choose_pool(kinds, sizes, jobs=2).parallel
    assert choose_pool(kinds, sizes, jobs=2, heavy=PARALLEL_MIN_FILES).parallel
    assert not choose_pool(kinds, sizes, jobs=2, heavy=PARALLEL_MIN_FILES - 1).parallel
    assert not choose_pool(kinds, sizes, jobs=1, heavy=20).parallel     # one core: nothing to share
