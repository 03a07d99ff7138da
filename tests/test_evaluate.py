"""`dataguard evaluate` and `dataguard ensemble suggest` on real nnU-Net output (the session's
tiny 2d and 3d_fullres models, folds 0 and 1, --npz), and the weight search on synthetic
probabilities whose right answer is known."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import dataguard_cli

pytestmark = pytest.mark.nnunet


def run(tm, *args):
    return dataguard_cli(list(args), tm["env"], tm["root"])


def test_evaluate_reports_per_label_and_does_not_score_absent_labels_as_zero(trained_models):
    out = run(trained_models, "evaluate", "-d", "901", "--format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert [m["model"] for m in doc["models"]] == ["2d", "3d_fullres"]
    for m in doc["models"]:
        rv0 = m["folds"]["0"]["right_ventricle"]             # fold 0 validates the two cases without RV
        assert rv0 == {"mean_dice": None, "cases_with_label": 0, "cases": 2, "false_positives": rv0["false_positives"]}
        assert m["folds"]["1"]["right_ventricle"]["cases_with_label"] == 2
        assert m["labels"]["right_ventricle"]["cases_with_label"] == 2 and m["labels"]["right_ventricle"]["cases"] == 4
    rv = [c for c in doc["cases"] if c["label"] == "right_ventricle" and c["fold"] == 0]
    assert rv and all(c["dice"] is None and c["ref_voxels"] == 0 for c in rv)
    scored = [c for c in doc["cases"] if c["dice"] is not None]
    assert scored and all(0 <= c["dice"] <= 1 and c["ref_voxels"] > 0 for c in scored)
    assert doc["findings"] == []
    table = run(trained_models, "evaluate", "-d", "901", "--model", "2d", "--worst", "1", "--plot",
                str(trained_models["root"] / "cv.png"))
    assert table.returncode == 0 and "n/a (0/2)" in table.stdout and "--cases" in table.stdout
    assert (trained_models["root"] / "cv.png").read_bytes()[:4] == b"\x89PNG"
    csv = run(trained_models, "evaluate", "-d", "901", "--model", "3d_fullres", "--format", "csv")
    rows = csv.stdout.strip().splitlines()
    assert rows[0].startswith("model,fold,case,label,dice") and len(rows) == 1 + 4 * 3


def test_a_training_case_in_a_validation_folder_is_dg802(trained_models, tmp_path):
    loose = tmp_path / "val1"
    shutil.copytree(trained_models["trainer_dir"] / "fold_1" / "validation", loose)
    splits = json.loads((trained_models["root"] / "nnUNet_preprocessed/Dataset901_DemoCardiac/splits_final.json")
                        .read_text())
    train_case = sorted(set(splits[1]["train"]) & set(splits[0]["val"]))[0]
    shutil.copy(trained_models["trainer_dir"] / "fold_0" / "validation" / f"{train_case}.nii.gz", loose)
    wide = {**trained_models["env"], "COLUMNS": "200"}      # the message on one line, not wrapped at 80
    out = dataguard_cli(["evaluate", "-d", "901", str(loose), "--fold", "1"], wide, trained_models["root"])
    assert out.returncode == 1 and "DG802" in out.stdout and train_case in out.stdout
    assert "training case" in out.stdout
    missing = sorted(splits[1]["val"])[0]
    (loose / f"{missing}.nii.gz").unlink()
    out = run(trained_models, "evaluate", "-d", "901", str(loose), "--fold", "1", "--format", "json")
    msgs = [f["message"] for f in json.loads(out.stdout)["findings"]]
    assert any(missing in m and "no prediction" in m for m in msgs) and any(train_case in m for m in msgs)


def test_suggested_weights_are_never_worse_than_equal_weights(trained_models, tmp_path):
    w = tmp_path / "w.json"
    out = run(trained_models, "ensemble", "suggest", "-d", "901", "--model", "2d", "--model", "3d_fullres",
              "-o", str(w), "--format", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["cases"] == 4 and doc["mean_chosen"] >= doc["mean_equal"] - 1e-12
    # never below nnU-Net's own choice: each model alone and their equal ensemble
    cands = {c["name"]: c["mean_dice"] for c in doc["nnunet_candidates"]}
    assert set(cands) == {"2d alone", "3d_fullres alone", "equal 2d+3d_fullres"}
    assert doc["mean_best_candidate"] == max(cands.values()) and doc["mean_chosen"] >= max(cands.values())
    assert doc["start"] in cands and 0 < doc["contested_voxels"] <= doc["voxels"]
    g = doc["gain_over_nnunet_pick"]                          # 4 cases: an interval, in words
    assert g["cases"] == 4 and g["low"] <= g["gain"] <= g["high"]
    assert g["significant"] is False and "too few to tell" in g["words"]       # 4 cases prove nothing
    assert g["gain"] == pytest.approx(doc["mean_chosen"] - doc["mean_best_candidate"], abs=1e-9)
    from dataguard.submit.ensemble import Weights

    weights = Weights.parse(json.loads(w.read_text()), ["2d", "3d_fullres"])
    assert set(weights.per_label) == {0, 1, 2, 3}                  # background is a coordinate too
    for lab in doc["labels"].values():
        assert len(lab["candidates"]) == 11                  # the 0.1 simplex for two models
    table = dataguard_cli(["ensemble", "suggest", "-d", "901", "--model", "2d", "--model", "3d_fullres"],
                          {**trained_models["env"], "COLUMNS": "200"}, trained_models["root"])   # headers on one line
    assert "equal" in table.stdout and "chosen weights" in table.stdout and "mean foreground Dice" in table.stdout
    assert "nnU-Net's pick" in table.stdout and "contested voxels" in table.stdout
    assert "is it real?" in table.stdout and "4 cases" in table.stdout


def test_missing_probabilities_name_the_command(trained_models, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(trained_models["root"], root, symlinks=True)
    for p in (root / "nnUNet_results/Dataset901_DemoCardiac/nnUNetTrainer_dataguard__nnUNetPlans__3d_fullres"
              / "fold_1" / "validation").glob("*.npz"):
        p.unlink()
    from conftest import train_env

    out = dataguard_cli(["ensemble", "suggest", "-d", "901", "--model", "2d", "--model", "3d_fullres"],
                        train_env(root), root)
    assert out.returncode == 1 and "3d_fullres fold 1" in out.stdout
    assert "--val" in out.stdout and "--npz" in out.stdout and "-tr nnUNetTrainer_dataguard" in out.stdout


# --- the search itself, where the answer is known -------------------------------------------
def test_search_gives_each_label_to_the_model_that_gets_it_right():
    from dataguard.evaluate.weights import OOF, search

    rng = np.random.default_rng(0)
    refs, probs = {}, {}
    for i in range(4):
        ref = rng.integers(0, 4, size=(6, 8, 8))
        onehot = np.eye(4, dtype=np.float32)[ref].transpose(3, 0, 1, 2)
        a, b = onehot.copy(), onehot.copy()
        a[:, ref == 3] = np.eye(4, dtype=np.float32)[0][:, None]        # A: label 3 voxels -> background
        b[:, ref == 1] = np.eye(4, dtype=np.float32)[0][:, None]        # B: label 1 voxels -> background
        refs[f"c{i}"], probs[f"c{i}"] = ref, [a, b]
    oof = OOF(["A", "B"], {1: "one", 2: "two", 3: "three"}, sorted(refs), probs, refs)
    sug = search(oof)
    assert sug.equal[1] < 1 and sug.equal[3] < 1                        # ties go to background
    assert sug.chosen == {1: 1.0, 2: 1.0, 3: 1.0}
    assert sug.weights[1][0] > sug.weights[1][1] and sug.weights[3][1] > sug.weights[3][0]
    assert sug.single["A"][3] == 0.0 and sug.single["B"][1] == 0.0


def test_dg803_flags_weight_on_a_model_that_never_got_the_label():
    from dataguard.submit.ensemble import Weights
    from dataguard.evaluate.weights import check_weights

    w = Weights.parse({"labels": {"3": {"A": 0.35, "B": 0.65}}}, ["A", "B"])
    found = check_weights(w, {"A": {1: 0.9, 3: 0.0}, "B": {1: 0.8, 3: 0.7}}, {1: "lv", 3: "rv"}, "w.json")
    assert [f.code for f in found] == ["DG803"] and "35%" in found[0].message and "A" in found[0].message
