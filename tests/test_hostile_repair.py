"""Repair and the splits writer on hostile ground: read-only datasets, a step failing half-way,
leftovers of a killed writer, file modes.

Read-only is a real read-only bind mount (root ignores file modes), skipped where mounting
is not permitted; the same refusal is also checked with the lowest OS call faked to fail.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import dataguard
from conftest import codes, make_tiny_pre
from dataguard.cli import main
from dataguard.findings import Severity
from dataguard.engine import journal as journal_mod
from dataguard.repair.restore import quarantine_list, restore
from dataguard.workspace import Workspace

APPLEDOUBLE = b"\x00\x05\x16\x07" + bytes(60)
L = "Dataset902_DemoCardiacLegacy"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tree(root: Path) -> dict[str, str]:
    """rel path -> sha1 of every file outside .dataguard/."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".dataguard"]
        for n in filenames:
            p = Path(dirpath) / n
            out[p.relative_to(root).as_posix()] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


@contextlib.contextmanager
def read_only(folder: Path):
    """Bind-mount `folder` read-only over itself (root cannot write there either)."""
    if os.name != "posix" or shutil.which("mount") is None:
        pytest.skip("needs mount(8) for a read-only bind mount")
    r = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"bind mounts not permitted here (needs root/CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"read-only remount not permitted here: {r.stderr.strip()}")
        probe = folder / ".probe"
        try:
            probe.write_bytes(b"")
        except OSError as e:
            assert e.errno == errno.EROFS
        else:
            probe.unlink()
            pytest.skip("the read-only remount did not take effect")
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def junk_dataset(tmp_path: Path) -> Path:
    """tiny_pre plus two things to quarantine: clutter at the top (planned first) and an
    AppleDouble file in the configuration folder."""
    ds = make_tiny_pre(tmp_path)
    (ds / "Notes.txt").write_text("clutter")
    (ds / "nnUNetPlans_3d_fullres" / "._case_1.npz").write_bytes(APPLEDOUBLE)
    return ds


# --- 1. read-only datasets ---------------------------------------------------------------------
def test_repair_on_read_only_dataset_exits_2_naming_the_folder_and_dry_run_works(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")          # the plan's path cells whole, one row each
    ds = junk_dataset(tmp_path)
    before = tree(ds)
    m = str(tmp_path / "m")
    with read_only(ds):
        code, out, err = run(capsys, "repair", str(ds), "--dry-run", "--manifest-dir", m)
        assert code == 1 and "Notes.txt" in out and "internal error" not in err
        code, out, err = run(capsys, "repair", str(ds), "--yes", "--manifest-dir", m)
    assert code == 2, err
    assert "internal error" not in err
    assert str(ds / ".dataguard") in err and "Read-only file system" in err
    assert len(err.strip().splitlines()) == 1
    assert tree(ds) == before and not (ds / ".dataguard").exists()


def test_read_only_folder_of_a_later_action_is_found_before_any_action(tmp_path, capsys):
    ds = junk_dataset(tmp_path)
    cfg = ds / "nnUNetPlans_3d_fullres"
    before = tree(ds)
    with read_only(cfg):
        code, out, err = run(capsys, "repair", str(ds), "--yes", "--manifest-dir", str(tmp_path / "m"))
    assert code == 2, err
    assert f"{cfg}:" in err and "Read-only file system" in err
    assert tree(ds) == before                      # Notes.txt (planned first) was not moved either
    assert not list((ds / ".dataguard").glob("journal/*.jsonl"))
    assert not (ds / ".dataguard").exists()       # the probe left nothing behind


def test_repair_without_write_permission_exits_2_with_the_os_reason(tmp_path, capsys, monkeypatch):
    """The same refusal when the OS says EACCES (a folder owned by someone else), faked at os.mkdir
    and os.open (writes only: the scan still reads) for paths under the dataset only."""
    ds = junk_dataset(tmp_path)
    before = tree(ds)
    real_mkdir, real_open = os.mkdir, os.open

    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def denied(real, writing=lambda *a: True):
        def call(path, *a, **kw):
            if Path(os.fsdecode(path)).is_relative_to(ds) and writing(*a):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return real(path, *a, **kw)
        return call

    monkeypatch.setattr(os, "mkdir", denied(real_mkdir))
    monkeypatch.setattr(os, "open", denied(real_open, lambda flags=0, *a: flags & writes))
    code, out, err = run(capsys, "repair", str(ds), "--yes", "--manifest-dir", str(tmp_path / "m"))
    assert code == 2, err
    assert str(ds / ".dataguard") in err and os.strerror(errno.EACCES) in err
    assert tree(ds) == before


# --- 2. all or nothing per case ------------------------------------------------------------------
def _break_two_cases(project: Path) -> Path:
    from dataguard.demo.project import _corrupt_deflate

    target = project / "nnUNet_preprocessed" / L
    for case in ("heart_004", "heart_006"):
        _corrupt_deflate(target / "nnUNetPlans_2d" / f"{case}.npz")
    return target


def _fail_once(monkeypatch, attr, match):
    """Make journal.<attr> raise OSError(EIO) the first time `match(args)` holds."""
    real = getattr(journal_mod, attr)
    state = {"hit": False}

    def call(*args, **kw):
        if not state["hit"] and match(*args):
            state["hit"] = True
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(args[0]))
        return real(*args, **kw)

    monkeypatch.setattr(journal_mod, attr, call)
    return state


@pytest.mark.nnunet
@pytest.mark.parametrize("step", ["quarantine", "place", "read"])
def test_a_case_whose_step_fails_is_put_back_whole_and_the_others_are_repaired(
        real_project, tmp_path, monkeypatch, step):
    target = _break_two_cases(real_project)
    cfg = target / "nnUNetPlans_2d"
    before = tree(real_project)
    pkl = cfg / "heart_004.pkl"
    if step == "quarantine":       # the old .npz is already in quarantine when its .pkl cannot move
        state = _fail_once(monkeypatch, "_move", lambda src, dst: Path(src) == pkl)
    elif step == "place":          # both old files are in quarantine, the new .npz is in place
        real_replace = os.replace
        state = {"hit": False}

        def replace(src, dst, *a, **kw):
            if not state["hit"] and Path(dst) == pkl and ".dataguard/tmp" in Path(src).as_posix():
                state["hit"] = True
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
            return real_replace(src, dst, *a, **kw)

        monkeypatch.setattr(journal_mod.os, "replace", replace)
    else:                          # the .pkl cannot be read (hashed before it is moved)
        state = _fail_once(monkeypatch, "blake3_file", lambda p: Path(p) == pkl)
    res = Workspace([str(target)], manifest_dir=tmp_path / "m").repair()
    assert state["hit"]
    [failed] = res.failed
    assert failed.action.case == "heart_004" and "Input/output error" in failed.detail
    after = tree(real_project)
    for rel, sha in before.items():     # every file of heart_004: back, byte-identical
        if "/heart_004" in rel:
            assert after.get(rel) == sha, rel
    assert not [r for r in after if "/heart_004" in r and r not in before]
    assert "rolled back" in failed.detail and "incomplete" not in failed.detail
    assert "DG206" not in codes(res.after)
    left = {f.case for f in res.after.findings if f.severity >= Severity.ERROR}
    assert left == {"heart_004"}         # heart_006 was rebuilt, heart_004 is still just broken
    assert after[f"nnUNet_preprocessed/{L}/nnUNetPlans_2d/heart_006.npz"] != \
        before[f"nnUNet_preprocessed/{L}/nnUNetPlans_2d/heart_006.npz"]
    # nothing of heart_004 is reported as held, and the run's journal still undoes the rest exactly
    held = {h.path for h in quarantine_list(dataguard.discover([str(target)]))}
    assert not [h for h in held if "heart_004" in h]
    monkeypatch.undo()
    [rep] = restore(dataguard.discover([str(target)]))
    assert not rep.problems, rep.problems
    assert tree(real_project) == before


@pytest.mark.nnunet
def test_cli_exits_1_when_a_case_was_rolled_back(real_project, tmp_path, monkeypatch, capsys):
    target = _break_two_cases(real_project)
    pkl = target / "nnUNetPlans_2d" / "heart_004.pkl"
    _fail_once(monkeypatch, "_move", lambda src, dst: Path(src) == pkl)
    code, out, err = run(capsys, "repair", str(target), "--yes", "--manifest-dir", str(tmp_path / "m"))
    assert code == 1, err
    assert "FAILED: re-preprocess preprocessed/nnUNetPlans_2d/heart_004" in err and "rolled back" in err
    assert "1 failed" in err


# --- 3. the splits writer ----------------------------------------------------------------------
def cardiac(n=8):
    return {f"c{i}": (1, 2) if i % 4 == 3 else (1, 2, 3) for i in range(n)}


@pytest.fixture
def bad_split(tmp_path):
    """8 cases; c3 and c7 (no label 3) validated together in fold 0 of 4."""
    ds = make_tiny_pre(tmp_path, "Dataset778_Folds", cardiac(), channel="MRI")
    vals = (("c3", "c7"), ("c0", "c1"), ("c2", "c4"), ("c5", "c6"))
    (ds / "splits_final.json").write_text(json.dumps(
        [{"train": [c for c in cardiac() if c not in v], "val": list(v)} for v in vals], indent=4))
    return ds


def test_rebalance_keeps_the_mode_of_splits_final_json(bad_split, tmp_path, capsys):
    path = bad_split / "splits_final.json"
    os.chmod(path, 0o664)              # not what the umask would give: the old mode is kept
    old_umask = os.umask(0o022)
    try:
        code, _, err = run(capsys, "splits", "rebalance", str(bad_split), "--folds", "4",
                           "--manifest-dir", str(tmp_path / "m"))
    finally:
        os.umask(old_umask)
    assert code == 0 and "wrote" in err, err
    assert os.stat(path).st_mode & 0o7777 == 0o664
    os.chmod(path, 0o644)
    code, _, err = run(capsys, "splits", "rebalance", str(bad_split), "--folds", "4", "--seed", "3",
                       "--manifest-dir", str(tmp_path / "m"))
    assert code == 0 and "wrote" in err and os.stat(path).st_mode & 0o7777 == 0o644


def test_atomic_write_bytes_new_file_gets_the_umask_mode(tmp_path):
    from dataguard.engine.manifest import atomic_write_bytes

    old_umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "new.json", b"{}")
        os.umask(0o002)
        atomic_write_bytes(tmp_path / "other.json", b"{}")
    finally:
        os.umask(old_umask)
    assert os.stat(tmp_path / "new.json").st_mode & 0o7777 == 0o644
    assert os.stat(tmp_path / "other.json").st_mode & 0o7777 == 0o664
    os.chmod(tmp_path / "new.json", 0o600)
    atomic_write_bytes(tmp_path / "new.json", b"[]")
    assert os.stat(tmp_path / "new.json").st_mode & 0o7777 == 0o600


LEFTOVER = ".splits_final.json.0123456789ab.tmp"


def _held(capsys, ds, tmp_path):
    code, out, _ = run(capsys, "quarantine", "list", str(ds), "--format", "json",
                       "--manifest-dir", str(tmp_path / "m"))
    assert code == 0
    return json.loads(out)


def test_rebalance_quarantines_temp_files_a_killed_rebalance_left(bad_split, tmp_path, capsys):
    left = bad_split / LEFTOVER
    left.write_text('[{"train": ["c0"], "va')              # torn: the writer was killed
    backup_left = bad_split / ".splits_final.json.bak-20240101-120000.fedcba987654.tmp"
    backup_left.write_text("[")
    lookalikes = [bad_split / n for n in (".splits_final.json.tmp", ".splits_final.json.0123.tmp",
                                          ".other.json.0123456789ab.tmp")]
    for p in lookalikes:
        p.write_text("not ours")
    code, out, err = run(capsys, "splits", "rebalance", str(bad_split), "--folds", "4",
                         "--manifest-dir", str(tmp_path / "m"))
    assert code == 0, err
    assert not left.exists() and not backup_left.exists()
    assert all(p.exists() for p in lookalikes)             # only the writer's exact pattern
    [line] = [ln for ln in err.splitlines() if "leftover" in ln]
    assert "2" in line and "quarantine" in line
    held = {h["path"]: h for h in _held(capsys, bad_split, tmp_path)}
    assert set(held) == {f"preprocessed/{LEFTOVER}", f"preprocessed/{backup_left.name}"}
    stored = bad_split / held[f"preprocessed/{LEFTOVER}"]["stored"].split("/", 1)[1]
    assert stored.read_text() == '[{"train": ["c0"], "va'
    # a rebalance that finds the splits already there still clears a new leftover
    left.write_text("[")
    code, _, err = run(capsys, "splits", "rebalance", str(bad_split), "--folds", "4",
                       "--manifest-dir", str(tmp_path / "m"))
    assert code == 0 and "nothing written" in err and not left.exists()
    assert len(_held(capsys, bad_split, tmp_path)) == 3


def test_rebalance_dry_run_leaves_leftovers_alone(bad_split, tmp_path, capsys):
    (bad_split / LEFTOVER).write_text("[")
    code, _, err = run(capsys, "splits", "rebalance", str(bad_split), "--folds", "4", "--dry-run",
                       "--manifest-dir", str(tmp_path / "m"))
    assert code == 0 and (bad_split / LEFTOVER).exists() and not (bad_split / ".dataguard").exists()


def test_repair_regenerate_splits_quarantines_leftover_temp_files(bad_split, tmp_path, capsys):
    left = bad_split / LEFTOVER
    left.write_text("[")
    code, out, err = run(capsys, "repair", str(bad_split), "--select", "DG5", "--yes",
                         "--manifest-dir", str(tmp_path / "m"))
    assert code == 0, err
    assert not left.exists() and "leftover" in err
    held = {h["path"]: h for h in _held(capsys, bad_split, tmp_path)}
    assert f"preprocessed/{LEFTOVER}" in held and "preprocessed/splits_final.json" in held
    assert len({h["run_id"] for h in held.values()}) == 1      # one repair run, one journal
