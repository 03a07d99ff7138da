"""DG507: fold prerequisites (issue 30 item 4), on real nnunetv2 data, with nnU-Net as the oracle.

- fewer training cases than folds: nnU-Net's own trainer `do_split` raises on the same
  preprocessed folder, and the real CLI's scan says DG507 with the command that writes a split;
- a cascade: the folder nnU-Net's own trainer loads the previous stage's segmentations from is
  the one dataguard checks, case by case;
- ensemble suggest without `--npz` probabilities: see tests/test_unfinished_folds.py and
  test_evaluate.py (the refusal is a DG507 finding).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataguard.checks.fold_prereq import cascade_prerequisites, concerns, gate_findings, previous_stage
from dataguard.findings import finding

DS = "Dataset901_DemoCardiac"
KEEP = ("heart_000", "heart_001", "heart_002")


def _env(root: Path) -> dict:
    return {**os.environ, "COLUMNS": "80", "nnUNet_raw": str(root / "nnUNet_raw"),
            "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"), "nnUNet_results": str(root / "nnUNet_results")}


def _three_cases(root: Path) -> None:
    """The real project's Dataset901 cut to 3 training cases (raw and preprocessed), no split."""
    raw, pre = root / "nnUNet_raw" / DS, root / "nnUNet_preprocessed" / DS
    for p in [*(raw / "imagesTr").iterdir(), *(raw / "labelsTr").iterdir(), *(pre / "nnUNetPlans_2d").iterdir(),
              *(pre / "gt_segmentations").iterdir()]:
        if not p.name.startswith(KEEP):
            p.unlink()
    meta = json.loads((raw / "dataset.json").read_text())
    meta["numTraining"] = len(KEEP)
    (raw / "dataset.json").write_text(json.dumps(meta))
    (pre / "dataset.json").write_text(json.dumps(meta))
    assert not (pre / "splits_final.json").exists()


def _scan(root: Path, *args) -> tuple[int, list[dict]]:
    out = subprocess.run([sys.executable, "-m", "dataguard", "scan", "-d", "901", "--format", "json", *args],
                         cwd=root, env=_env(root), capture_output=True, text=True, timeout=600)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)["findings"]


NNUNET_SPLIT = """
import sys, torch
from batchgenerators.utilities.file_and_folder_operations import load_json, join
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
pre = join(nnUNet_preprocessed, sys.argv[1])
plans = load_json(join(pre, "nnUNetPlans.json"))
plans["continue_training"] = False          # as nnunetv2.run.run_training.get_trainer_from_args
t = nnUNetTrainer(plans, sys.argv[2], int(sys.argv[3]), load_json(join(pre, "dataset.json")),
                  device=torch.device("cpu"))
if sys.argv[4] == "split":
    try:
        print("split", t.do_split())
    except Exception as e:
        print("failed", type(e).__name__, e)
else:
    print("folder", t.folder_with_segs_from_previous_stage)
"""


def _nnunet(root: Path, *args) -> str:
    out = subprocess.run([sys.executable, "-c", NNUNET_SPLIT, DS, *args], env=_env(root), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.nnunet
def test_fewer_cases_than_folds_is_dg507_where_nnunet_fails(real_project):
    _three_cases(real_project)
    said = _nnunet(real_project, "2d", "0", "split")                 # nnU-Net's own trainer, fold 0
    assert said.startswith("failed ValueError") and "n_splits=5" in said, said
    rc, found = _scan(real_project)
    [f] = [f for f in found if f["code"] == "DG507"]
    assert rc == 1 and f["severity"] == "error" and f["path"] == "preprocessed/splits_final.json"
    assert "3 training cases" in f["message"] and "n_splits=5 > n_samples=3" in f["message"]
    assert f"dataguard splits rebalance -d {DS} --folds 3" in f["help"] and "fold all" in f["help"]
    # the command it names makes nnU-Net train, and the finding goes
    out = subprocess.run([sys.executable, "-m", "dataguard", "splits", "rebalance", "-d", "901", "--folds", "3"], cwd=real_project, env=_env(real_project), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _nnunet(real_project, "2d", "0", "split").startswith("split")
    assert [f for f in _scan(real_project)[1] if f["code"] == "DG507"] == []


def test_too_few_cases_concerns_numbered_folds_only():
    from dataguard.checks.splits import too_few_cases

    [f] = too_few_cases(DS, 3)
    assert concerns(f, "2d", 0) and concerns(f, "3d_fullres", 4) and not concerns(f, "2d", -1)
    assert too_few_cases(DS, 0) == []
    [one] = too_few_cases(DS, 1)
    assert "add training cases" in one.help and "--folds" not in one.help


CASCADE_PLANS = {
    "3d_lowres": {"inherits_from": "3d_fullres", "data_identifier": "nnUNetPlans_3d_lowres",
                  "next_stage": "3d_cascade_fullres"},
    "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
}


def _with_cascade(root: Path) -> dict:
    pre = root / "nnUNet_preprocessed" / DS
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["configurations"].update(CASCADE_PLANS)
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    return plans


@pytest.mark.nnunet
def test_cascade_needs_every_lowres_prediction_where_nnunet_loads_them(real_project):
    plans = _with_cascade(real_project)
    results = real_project / "nnUNet_results"
    # nnU-Net's trainer says where the cascade reads the previous stage's segmentations from
    said = _nnunet(real_project, "3d_cascade_fullres", "0", "folder")
    folder = results / DS / "nnUNetTrainer__nnUNetPlans__3d_lowres" / "predicted_next_stage" / "3d_cascade_fullres"
    assert said == f"folder {folder}"
    assert previous_stage(plans, "3d_cascade_fullres") == "3d_lowres" and previous_stage(plans, "3d_fullres") is None
    cases = sorted(p.name[:-len(".nii.gz")] for p in (real_project / "nnUNet_raw" / DS / "labelsTr").iterdir())
    assert len(cases) == 8

    def find(**kw):
        return cascade_prerequisites(results, DS, plans, "3d_cascade_fullres", "nnUNetTrainer", "nnUNetPlans",
                                     cases, **kw)
    [f] = find()                                                  # no 3d_lowres run at all
    assert f.code == "DG507" and f.message.startswith("configuration 3d_cascade_fullres needs the predictions")
    assert "8 of 8 cases" in f.message and "folds 0, 1, 2, 3 and 4 of 3d_lowres" in f.message
    assert f.help == "dataguard train 901 3d_lowres 0-4"
    # folds 0-2 validated (their cases written as nnU-Net writes them), 3 trained without, 4 not run
    from dataguard.folds import nnunet_default_split
    split = nnunet_default_split(cases)
    folder.mkdir(parents=True)
    for k in (0, 1, 2):
        for c in split[k]["val"]:
            (folder / f"{c}.b2nd").write_bytes(b"x")
    (folder.parent.parent / "fold_3").mkdir()
    (folder.parent.parent / "fold_3" / "checkpoint_final.pth").write_bytes(b"x")
    [f] = find()
    n = len(split[3]["val"]) + len(split[4]["val"])
    assert f"{n} of 8 cases" in f.message and "folds 3 and 4 of 3d_lowres" in f.message
    assert f.help == ("dataguard train 901 3d_lowres 4; "
                      "nnUNetv2_train 901 3d_lowres 3 -tr nnUNetTrainer -p nnUNetPlans --val")
    for k in (3, 4):
        for c in split[k]["val"]:
            (folder / f"{c}.npz").write_bytes(b"x")
    assert find() == []
    # a configuration without previous stage needs nothing; another trainer's predictions do not count
    assert cascade_prerequisites(results, DS, plans, "3d_fullres", "nnUNetTrainer", "nnUNetPlans", cases) == []
    [f] = cascade_prerequisites(results, DS, plans, "3d_cascade_fullres", "nnUNetTrainerNoMirroring_dataguard",
                                "nnUNetPlans", cases)
    assert "--trainer nnUNetTrainerNoMirroring" in f.help


def test_a_cascade_finding_concerns_the_cascade_only():
    f = finding("DG507", "results/x", "configuration 3d_cascade_fullres needs the predictions of 3d_lowres: ...")
    assert concerns(f, "3d_cascade_fullres", 0) and not concerns(f, "3d_lowres", 0)
    assert not concerns(f, "3d_fullres", 2)


@pytest.mark.nnunet
def test_gate_findings_from_the_gate_scan_view(real_project):
    """What the train gate calls: a cascade's missing predictions for the cascade only, and too
    few cases for a numbered fold only (here with the raw data removed: a preprocessed folder alone)."""
    import dataguard

    _with_cascade(real_project)
    _three_cases(real_project)
    shutil.rmtree(real_project / "nnUNet_raw" / DS)
    ws = dataguard.Workspace([str(real_project / "nnUNet_preprocessed" / DS)], manifest_dir=real_project / "m")
    res = ws.scan()
    assert not [f for f in res.findings if f.code == "DG507"]      # the scan: raw unknown
    view = res.views[DS]
    plans = json.loads((real_project / "nnUNet_preprocessed" / DS / "nnUNetPlans.json").read_text())
    kw = dict(trainer="nnUNetTrainer", plans_name="nnUNetPlans", plans=plans,
              results_root=real_project / "nnUNet_results")
    got = gate_findings(view, "3d_cascade_fullres", 0, **kw)
    assert [f.code for f in got] == ["DG507", "DG507"]
    assert [f.code for f in gate_findings(view, "2d", 0, **kw)] == ["DG507"]
    assert gate_findings(view, "2d", -1, **kw) == []
    only = gate_findings(view, "3d_cascade_fullres", -1, **kw)
    assert [f.message.split()[1] for f in only] == ["3d_cascade_fullres"]


@pytest.mark.nnunet
def test_ensemble_suggest_without_npz_is_dg507_naming_the_fold_and_its_call(trained_models, tmp_path):
    """A finished fold whose validation has no probabilities: `ensemble suggest` refuses with a
    DG507 finding per such fold (JSON), with nnU-Net's --val --npz call on the run's device."""
    from conftest import dataguard_cli, train_env

    root = tmp_path / "project"
    shutil.copytree(trained_models["root"], root, symlinks=True)
    model = root / "nnUNet_results" / DS / "nnUNetTrainer_dataguard__nnUNetPlans__3d_fullres"
    for p in (model / "fold_1" / "validation").glob("*.npz"):
        p.unlink()
    env = {**train_env(root), "COLUMNS": "80"}
    args = ["ensemble", "suggest", "-d", "901", "--model", "2d", "--model", "3d_fullres"]
    out = dataguard_cli([*args, "--format", "json"], env, root)
    assert out.returncode == 1, out.stdout + out.stderr
    [f] = json.loads(out.stdout)["findings"]
    assert f["code"] == "DG507" and f["severity"] == "error"
    assert f["path"] == str(model / "fold_1" / "validation")
    assert f["message"].startswith("model selection needs --npz probabilities of every fold: "
                                   "3d_fullres fold 1 has none of checkpoint_final")
    assert "--val" in f["help"] and "--npz" in f["help"] and "-device cpu" in f["help"]
    table = dataguard_cli(args, env, root)
    assert table.returncode == 1 and "DG507 error: model selection needs" in table.stdout
    # the call stays one line to paste (as before); the rest fits 80 columns
    assert all(len(line) <= 80 for line in table.stdout.splitlines() if "nnUNetv2_train" not in line), table.stdout
