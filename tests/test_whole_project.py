"""Item 8 of issue 29: a folder holding nnUNet_raw / nnUNet_preprocessed / nnUNet_results is a
whole project for every command, with or without nnU-Net's environment variables; where
results are needed and cannot be found, a warning says so.

The real CLI in subprocesses with every nnUNet_* variable removed from the environment, on the
real nnunetv2-preprocessed project (and, for the report, the session's trained tiny models).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import dataguard_cli

M = "Dataset901_DemoCardiac"
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)


def _bare_env(state: Path) -> dict:
    """No nnU-Net variables at all: what a new shell on the demo's folder has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(DATAGUARD_STATE_DIR=str(state), COLUMNS="80", OMP_NUM_THREADS="1")
    return env


def test_scan_and_verify_in_a_project_folder_without_env_vars(real_project, tmp_path):
    env = _bare_env(tmp_path / "state")
    scan = dataguard_cli(["scan", "--no-progress"], env, real_project)    # was: "nothing to scan"
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert M in scan.stdout + scan.stderr or "No findings" in scan.stdout + scan.stderr
    by_id = dataguard_cli(["verify", "-d", "901", "--no-progress"], env, real_project)
    assert by_id.returncode == 0, by_id.stdout + by_id.stderr
    # the project named by its path from anywhere else is the same project, the same manifest
    ver = dataguard_cli(["verify", str(real_project), "--no-progress"], env, tmp_path)
    assert ver.returncode == 0, ver.stdout + ver.stderr


def test_restore_run_finds_the_runs_dataset(real_project, tmp_path):
    """`repair` prints `undo: dataguard restore --run ID`: run as printed, from another folder
    and without the env vars, it undoes that run (it said "nothing to scan")."""
    env = _bare_env(tmp_path / "state")
    junk = real_project / "nnUNet_preprocessed" / M / "nnUNetPlans_2d" / "._heart_001.b2nd"
    junk.write_bytes(APPLEDOUBLE)
    rep = dataguard_cli(["repair", str(real_project), "--yes", "--no-progress"], env, tmp_path)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert not junk.exists()
    [run] = re.findall(r"repair run (\S+):", rep.stderr)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    back = dataguard_cli(["restore", "--run", run], env, elsewhere)
    assert back.returncode == 0, back.stdout + back.stderr
    assert junk.read_bytes() == APPLEDOUBLE
    # and from the project folder itself (the roots are its folders)
    junk.unlink()
    rep = dataguard_cli(["repair", "--yes", "--no-progress"], env, real_project)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    [run] = re.findall(r"repair run (\S+):", rep.stderr) or [None]
    assert run is None or dataguard_cli(["restore", "--run", run], env, real_project).returncode == 0


def test_restore_of_an_unknown_run_says_what_to_pass(tmp_path):
    env = _bare_env(tmp_path / "state")
    out = dataguard_cli(["restore", "--run", "20990101-000000-nope"], env, tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "dataguard restore PATH --run 20990101-000000-nope" in out.stderr
    assert "nothing to scan" not in out.stderr
    assert all(len(ln) <= 80 for ln in out.stderr.splitlines()), out.stderr


def test_report_without_results_says_so(real_project, tmp_path):
    """No nnUNet_results anywhere: the page has no training section, and stderr says why."""
    shutil.rmtree(real_project / "nnUNet_results")
    env = _bare_env(tmp_path / "state")
    out = dataguard_cli(["report", str(real_project), "-o", str(tmp_path / "r.html"), "--no-images",
                         "--cases", "0"], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nnUNet_results is not set" in out.stderr and str(real_project) in out.stderr
    assert "not shown" in out.stderr
    assert "nnUNet_results is not set" in (tmp_path / "r.html").read_text()


@pytest.mark.nnunet
def test_report_of_the_demo_folder_without_env_vars(trained_models, tmp_path):
    """The demo's own next step, `report dataguard-demo`, left out Training and
    Cross-validation though the folder holds nnUNet_results with trained models."""
    root = tmp_path / "dataguard-demo"
    shutil.copytree(trained_models["root"], root, symlinks=True)
    env = _bare_env(tmp_path / "state")
    out = dataguard_cli(["report", "dataguard-demo", "-o", "r.html", "--no-images", "--cases", "0"], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "training, cross-validation" in " ".join(out.stderr.split()), out.stderr
    assert "not set" not in out.stderr          # (Dataset902 has no models: its note says so)
