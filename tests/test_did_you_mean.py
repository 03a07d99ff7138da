"""Item 10 of issue 29 (datasets and configurations outside train/submit/evaluate): a name that
does not exist is a usage error (exit 2) with the close matches and the names that exist,
as `dataguard train 901 3d_fulres 0` answers "(have: 2d, 3d_fullres)".

The real CLI in subprocesses on the real nnunetv2-preprocessed project.
"""
from __future__ import annotations

import pytest

from conftest import dataguard_cli, train_env

M = "Dataset901_DemoCardiac"


@pytest.fixture
def env(real_project, tmp_path):
    e = train_env(real_project)
    e.update(DATAGUARD_STATE_DIR=str(tmp_path / "state"), COLUMNS="80")
    return e


def _fits(text: str) -> bool:
    return all(len(ln) <= 80 for ln in text.splitlines())


def test_doctor_config_typo_is_a_usage_error_with_the_configurations(env, tmp_path):
    """It exited 0 and advised running nnUNetv2_plan_and_preprocess."""
    out = dataguard_cli(["doctor", "-d", "901", "--config", "3d_fulres"], env, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "did you mean 3d_fullres?" in out.stderr and "have: 2d, 3d_fullres" in out.stderr
    assert "plan_and_preprocess" not in out.stdout + out.stderr and _fits(out.stderr)
    plans = dataguard_cli(["doctor", "-d", "901", "--config", "2d", "--plans", "nnUNetPlan"], env, tmp_path)
    assert plans.returncode == 2 and "did you mean nnUNetPlans?" in plans.stderr
    good = dataguard_cli(["doctor", "-d", "901", "--config", "2d"], env, tmp_path)
    assert good.returncode in (0, 1), good.stderr          # a real estimate (1: a DG9xx error here)
    assert "did you mean" not in good.stderr


@pytest.mark.parametrize("argv", [
    ["scan", "-d", "999"],
    ["verify", "-d", "999"],
    ["repair", "-d", "999", "--dry-run"],
    ["splits", "show", "-d", "999"],
    ["report", "-d", "999", "-o", "r.html"],
    ["tui", "-d", "999"],
    ["doctor", "-d", "999"],
])
def test_an_unknown_dataset_id_lists_the_datasets(env, tmp_path, argv):
    out = dataguard_cli(argv, env, tmp_path, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"have: {M}, Dataset902_" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert _fits("\n".join(ln for ln in out.stderr.splitlines() if str(env["nnUNet_raw"]) not in ln
                           and str(env["nnUNet_preprocessed"]) not in ln)), out.stderr


@pytest.mark.parametrize("cmd", ["scan", "verify", "splits"])
def test_a_misspelt_dataset_name_gets_a_suggestion(env, tmp_path, cmd):
    argv = [cmd, "show"] if cmd == "splits" else [cmd]
    out = dataguard_cli([*argv, "-d", "Dataset901_DemoCardac"], env, tmp_path, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"did you mean {M}?" in out.stderr


def test_a_name_in_a_workspace_of_several(real_project):
    import dataguard

    ws = dataguard.Workspace([str(real_project)])
    with pytest.raises(dataguard.DataguardError, match=f"did you mean {M}\\?"):
        ws.dataset("Dataset901_DemoCardiak")


def test_the_helper():
    from dataguard.names import close, hint, unknown

    assert close("3d_fulres", ["2d", "3d_fullres", "3d_lowres"]) == ["3d_fullres"]
    assert close("2D", ["2d", "3d_fullres"]) == ["2d"]
    assert close("xyz", ["2d"]) == []
    assert hint("x", []) == "  (there are no names here)"
    many = unknown("dataset", "Dataset1", [f"Dataset{i:03d}_{'Long' * 5}" for i in range(40)])
    assert _fits(many) and "and 28 more)" in " ".join(many.split())
    assert unknown("configuration", "3d", ["2d"], "in nnUNetPlans.json").startswith(
        "no configuration '3d' in nnUNetPlans.json\n")
