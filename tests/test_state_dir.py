"""Item 7 of issue 29: the manifest does not depend on the working folder.

Manifests, stat indexes and groups rules live in this user's state folder, one folder per
dataset keyed by its name and where it lives; `--manifest-dir` still puts them anywhere; an
old `./manifests/<name>.json` is adopted once, with a note. The real CLI in subprocesses, run
from different folders, on the real nnunetv2-preprocessed project.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from conftest import dataguard_cli, make_tiny_pre, train_env

M = "Dataset901_DemoCardiac"


def _env(root: Path, state: Path) -> dict:
    env = train_env(root)
    env["DATAGUARD_STATE_DIR"] = str(state)
    env["COLUMNS"] = "80"
    return env


def _state_manifests(state: Path, name: str = M) -> list[Path]:
    return sorted(state.glob(f"datasets/{name}-*/{name}.json"))


def test_the_suite_keeps_state_out_of_the_home_folder():
    from dataguard.engine.user_dirs import user_dir

    state = user_dir("state")
    assert os.environ.get("DATAGUARD_STATE_DIR") and state == Path(os.environ["DATAGUARD_STATE_DIR"])
    assert not str(state).startswith(os.path.expanduser("~") + os.sep)


def test_scan_in_one_folder_verify_from_another(real_project, tmp_path):
    """The issue's case: `verify -d 901` from another folder found no manifest (./manifests)."""
    state, a, b = tmp_path / "state", tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    env = _env(real_project, state)
    scan = dataguard_cli(["scan", "-d", "901", "--no-progress"], env, a)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    ver = dataguard_cli(["verify", "-d", "901", "--no-progress"], env, b)
    assert ver.returncode == 0, ver.stdout + ver.stderr
    assert "no manifest" not in ver.stderr
    # the same dataset by a relative path from a third folder: the same manifest, read not rewritten
    [man] = _state_manifests(state)
    before = man.stat().st_mtime_ns
    rel = os.path.relpath(real_project / "nnUNet_preprocessed" / M, real_project)
    again = dataguard_cli(["verify", rel, "--no-progress"], env, real_project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _state_manifests(state) == [man] and man.stat().st_mtime_ns == before
    for cwd in (a, b, real_project):
        assert not (cwd / "manifests").exists(), f"a manifests/ folder appeared in {cwd}"
    # the state folders are this user's only; the manifest knows its dataset's roots
    for d in (state, man.parent.parent, man.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    roots = json.loads(man.read_bytes())["roots"]
    assert Path(roots["preprocessed"]).resolve() == (real_project / "nnUNet_preprocessed" / M).resolve()


def test_two_datasets_of_one_name_do_not_share_a_manifest(tmp_path):
    from dataguard import Workspace

    one = make_tiny_pre(tmp_path / "one")
    two = make_tiny_pre(tmp_path / "two")
    (two / "nnUNetPlans_3d_fullres" / "case_1.pkl").unlink()          # differs: a finding in two only
    state = Path(os.environ["DATAGUARD_STATE_DIR"])
    r1 = Workspace([str(one)], jobs=1).scan()
    r2 = Workspace([str(two)], jobs=1).scan()
    assert [f.code for f in r1.findings] != [f.code for f in r2.findings]
    w1, w2 = Workspace([str(one)]), Workspace([str(two)])
    p1, p2 = w1.dataset("Dataset777_Tiny").manifest_path, w2.dataset("Dataset777_Tiny").manifest_path
    assert p1 != p2 and p1.is_file() and p2.is_file()
    assert p1.parent.parent == p2.parent.parent == state / "datasets"
    # rescans answer each from its own manifest: unchanged findings, nothing read again
    again = Workspace([str(one)], jobs=1).scan()
    assert again.stats.checked == 0 and [f.code for f in again.findings] == [f.code for f in r1.findings]
    # the same dataset named through a link to its folder is the same dataset
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "one")
    via = Workspace([str(link / "nnUNet_preprocessed" / "Dataset777_Tiny")])
    assert via.dataset().manifest_path == p1


def test_manifest_dir_still_overrides(real_project, tmp_path):
    state, elsewhere = tmp_path / "state", tmp_path / "mine"
    env = _env(real_project, state)
    scan = dataguard_cli(["scan", "-d", "901", "--manifest-dir", str(elsewhere), "--no-progress"], env, tmp_path)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert (elsewhere / f"{M}.json").is_file() and (elsewhere / f"{M}.index").is_file()
    assert _state_manifests(state) == []
    ver = dataguard_cli(["verify", "-d", "901", "--manifest-dir", str(elsewhere), "--no-progress"], env, tmp_path)
    assert ver.returncode == 0, ver.stdout + ver.stderr
    # the state folder has none: without the flag there is nothing to verify against
    ver = dataguard_cli(["verify", "-d", "901", "--no-progress"], env, tmp_path)
    assert ver.returncode == 2 and "run `dataguard scan` first" in ver.stderr


def test_an_old_manifests_folder_is_adopted_once_with_a_note(real_project, tmp_path):
    state, work = tmp_path / "state", tmp_path / "work"
    work.mkdir()
    env = _env(real_project, state)
    old = dataguard_cli(["scan", "-d", "901", "--manifest-dir", "manifests", "--no-progress",
                         "--group-regex", r"heart_(\d+)"], env, work)    # where 0.2 wrote by default
    assert old.returncode == 0, old.stdout + old.stderr
    assert (work / "manifests" / f"{M}.json").is_file()
    first = dataguard_cli(["verify", "-d", "901", "--no-progress"], env, work)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "using the manifest found in" in first.stderr and "manifests" in first.stderr
    [man] = _state_manifests(state)
    assert str(man.parent) in first.stderr
    assert all(len(ln) <= 80 for ln in first.stderr.splitlines() if str(man.parent) not in ln), first.stderr
    assert man.read_bytes() == (work / "manifests" / f"{M}.json").read_bytes()
    assert (man.parent / f"{M}.groups.json").is_file()         # the groups rule came along
    assert (work / "manifests" / f"{M}.json").is_file()        # nothing deleted
    second = dataguard_cli(["verify", "-d", "901", "--no-progress"], env, work)
    assert second.returncode == 0 and "using the manifest found in" not in second.stderr
    # the rule travelled: the scan from the state folder still knows the patients
    scan = dataguard_cli(["scan", "-d", "901", "--no-progress", "--format", "json"], env, tmp_path)
    assert scan.returncode == 0, scan.stderr
    assert json.loads((man.parent / f"{M}.groups.json").read_text()) == {"regex": r"heart_(\d+)"}


def test_an_old_manifest_of_another_dataset_of_that_name_is_not_adopted(real_project, tmp_path):
    state, work = tmp_path / "state", tmp_path / "work"
    other = tmp_path / "other"
    shutil.copytree(real_project, other, symlinks=True)
    work.mkdir()
    env = _env(real_project, state)
    old = dataguard_cli(["scan", str(other / "nnUNet_preprocessed" / M), "--manifest-dir", "manifests",
                         "--no-progress"], env, work)
    assert old.returncode == 0, old.stdout + old.stderr
    ver = dataguard_cli(["verify", "-d", "901", "--no-progress"], env, work)
    assert ver.returncode == 2 and "using the manifest" not in ver.stderr
    assert "run `dataguard scan` first" in ver.stderr


def test_a_state_folder_that_is_a_link_is_refused(real_project, tmp_path):
    target = tmp_path / "somewhere"
    target.mkdir()
    state = tmp_path / "state"
    (state / "datasets").mkdir(parents=True)
    state.chmod(0o700)
    # a link where the dataset's folder would be: never written through
    from dataguard.engine.layout import discover
    from dataguard.engine.user_dirs import dataset_anchor, dataset_key

    [ds] = [d for d in discover([str(real_project / "nnUNet_preprocessed" / M)])]
    (state / "datasets" / dataset_key(ds.name, dataset_anchor(ds))).symlink_to(target)
    env = _env(real_project, state)
    scan = dataguard_cli(["scan", "-d", "901", "--no-progress"], env, tmp_path)
    assert scan.returncode == 2, scan.stdout + scan.stderr
    assert "not a folder" in scan.stderr and list(target.iterdir()) == []


def test_the_key_is_the_name_and_where_it_lives():
    from dataguard.engine.user_dirs import dataset_key

    assert dataset_key("Dataset001_Heart", "/a/x").startswith("Dataset001_Heart-")
    assert dataset_key("Dataset001_Heart", "/a/x") != dataset_key("Dataset001_Heart", "/b/x")
    weird = dataset_key("Dataset001_a\nb/../c", "/a")
    assert "/" not in weird and "\n" not in weird and not weird.startswith(".")
