"""`dataguard repair` / `restore` on real nnunetv2 data: exact rebuilds, nothing lost, crash-safe."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dataguard
from conftest import codes
from dataguard.engine.journal import read_journal
from dataguard.engine.lock import DatasetLock, LockedError
from dataguard.repair.restore import RestoreError, quarantine_list, restore
from dataguard.workspace import Workspace

M, L = "Dataset901_DemoCardiac", "Dataset902_DemoCardiacLegacy"
pytestmark = pytest.mark.nnunet
APPLEDOUBLE = b"\x00\x05\x16\x07" + bytes(60)


def repair(targets, manifest_dir, **kw):
    """Scan, plan, apply, rescan through the Workspace, as every face does."""
    return Workspace(targets, manifest_dir=manifest_dir).repair(**kw)


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """rel path -> (sha1, mtime_ns) of every file outside .dataguard/."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".dataguard"]
        for n in filenames:
            p = Path(dirpath) / n
            out[p.relative_to(root).as_posix()] = (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def content(t):
    return {k: v[0] for k, v in t.items()}


def break_legacy(project: Path) -> Path:
    cfg = project / "nnUNet_preprocessed" / L / "nnUNetPlans_2d"
    from dataguard.demo.project import _corrupt_deflate

    _corrupt_deflate(cfg / "heart_004.npz")
    (cfg / "._heart_005.npz").write_bytes(APPLEDOUBLE)
    return project / "nnUNet_preprocessed" / L


def break_modern(project: Path) -> Path:
    cfg = project / "nnUNet_preprocessed" / M / "nnUNetPlans_2d"
    b = cfg / "heart_002.b2nd"
    b.write_bytes(b.read_bytes()[: b.stat().st_size // 2])
    (cfg / "heart_003.pkl").unlink()
    return project / "nnUNet_preprocessed" / M


def test_repair_rebuilds_exactly_what_nnunet_wrote_and_touches_nothing_else(
        real_project, _real_project_master, tmp_path):
    import blosc2

    target = break_modern(real_project)
    before = tree(real_project)
    res = repair([str(target)], manifest_dir=tmp_path / "m")
    assert [a.kind for a in res.plan] == ["re-preprocess", "re-preprocess"]
    assert codes(res.after) == [], [f.to_dict() for f in res.after.findings]
    after = tree(real_project)
    cfg_rel = f"nnUNet_preprocessed/{M}/nnUNetPlans_2d/"
    rebuilt = {cfg_rel + n for c in ("heart_002", "heart_003") for n in (f"{c}.b2nd", f"{c}_seg.b2nd", f"{c}.pkl")}
    for rel, v in before.items():          # every other file: same bytes, same mtime
        if rel not in rebuilt:
            assert after[rel] == v, rel
    master = _real_project_master
    for case in ("heart_002", "heart_003"):
        for suffix in (".b2nd", "_seg.b2nd"):
            new = blosc2.open(str(real_project / cfg_rel / f"{case}{suffix}"), mode="r")[...]
            ref = blosc2.open(str(master / cfg_rel / f"{case}{suffix}"), mode="r")[...]
            assert new.dtype == ref.dtype and np.array_equal(new, ref)
        import pickle

        new_p = pickle.loads((real_project / cfg_rel / f"{case}.pkl").read_bytes())
        ref_p = pickle.loads((master / cfg_rel / f"{case}.pkl").read_bytes())
        assert new_p.keys() == ref_p.keys()
        for k in ref_p:
            if k == "class_locations":
                for lab in ref_p[k]:
                    assert np.array_equal(np.asarray(new_p[k][lab]), np.asarray(ref_p[k][lab]))
            else:
                assert repr(new_p[k]) == repr(ref_p[k]), k
    # the manifest was updated by the final rescan: nothing left to read
    assert dataguard.scan([str(target)], manifest_dir=tmp_path / "m").stats.checked == 0


def test_legacy_layout_rebuild_and_nothing_deleted(real_project, _real_project_master, tmp_path):
    target = break_legacy(real_project)
    cfg = target / "nnUNetPlans_2d"
    corrupt_sha = hashlib.sha1((cfg / "heart_004.npz").read_bytes()).hexdigest()
    res = repair([str(target)], manifest_dir=tmp_path / "m")
    assert codes(res.after) == []
    with np.load(cfg / "heart_004.npz") as new, np.load(
            _real_project_master / "nnUNet_preprocessed" / L / "nnUNetPlans_2d" / "heart_004.npz") as ref:
        assert np.array_equal(new["data"], ref["data"]) and np.array_equal(new["seg"], ref["seg"])
        assert new["seg"].dtype == ref["seg"].dtype
    held = {h.path: h for h in quarantine_list(dataguard.discover([str(target)]))}
    assert set(held) >= {"preprocessed/nnUNetPlans_2d/heart_004.npz", "preprocessed/nnUNetPlans_2d/heart_004.pkl",
                         "preprocessed/nnUNetPlans_2d/._heart_005.npz"}
    stored = target / held["preprocessed/nnUNetPlans_2d/heart_004.npz"].stored.split("/", 1)[1]
    assert hashlib.sha1(stored.read_bytes()).hexdigest() == corrupt_sha


def test_restore_is_byte_identical_and_deletes_nothing(real_project, tmp_path):
    target = break_legacy(real_project)
    before = content(tree(real_project))
    repair([str(target)], manifest_dir=tmp_path / "m")
    assert content(tree(real_project)) != before
    [rep] = restore(dataguard.discover([str(target)]))
    assert not rep.problems and rep.restored and rep.removed
    assert content(tree(real_project)) == before
    # what the repair had written is held in the restore's own quarantine, not deleted
    held = quarantine_list(dataguard.discover([str(target)]))
    assert any(h.reason.startswith("written by repair") for h in held)


def test_dry_run_changes_nothing_and_blocked_actions_explain_why(real_project, tmp_path):
    target = break_modern(real_project)
    lab = real_project / "nnUNet_raw" / M / "labelsTr" / "heart_002.nii.gz"
    lab.write_bytes(lab.read_bytes()[:100])          # the raw label of a broken case is broken too
    before = tree(real_project)
    res = repair([str(target)], dry_run=True, manifest_dir=tmp_path / "m")
    assert tree(real_project) == before and res.after is None
    blocked = {a.case: a.blocked for a in res.plan}
    assert "raw case is broken" in blocked["heart_002"] and blocked["heart_003"] is None
    [a3] = [a for a in res.plan if a.case == "heart_003"]
    assert a3.files == ["preprocessed/nnUNetPlans_2d/heart_003.b2nd", "preprocessed/nnUNetPlans_2d/heart_003_seg.b2nd"]


def test_second_repair_of_one_dataset_is_refused(real_project, tmp_path):
    target = break_legacy(real_project)
    with DatasetLock(target):
        with pytest.raises(LockedError):
            with DatasetLock(target):
                pass
        out = subprocess.run([sys.executable, "-m", "dataguard", "repair", str(target), "--yes",
                              "--manifest-dir", str(tmp_path / "m")], capture_output=True, text=True)
    assert out.returncode == 2 and "another dataguard repair is running" in out.stderr


def test_cli_repair_needs_confirmation_without_a_terminal(real_project, tmp_path):
    target = break_legacy(real_project)
    out = subprocess.run([sys.executable, "-m", "dataguard", "repair", str(target),
                          "--manifest-dir", str(tmp_path / "m")], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "--yes" in out.stderr
    assert "heart_004" in out.stdout          # the plan was shown


def _run_repair(target, m, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "dataguard", "repair", str(target), "--yes",
                           "--manifest-dir", str(m)], capture_output=True, text=True, env=env)


def test_sigkill_at_every_journal_step_leaves_everything_recoverable(real_project, tmp_path):
    """Kill the repair at each step it journals; `restore` must give back the exact
    pre-repair tree, and re-running `repair` must finish the job."""
    import shutil

    target = break_legacy(real_project)
    pristine = tmp_path / "pristine"
    shutil.copytree(real_project, pristine, copy_function=shutil.copy2)
    reference = content(tree(pristine))
    clean = _run_repair(target, tmp_path / "m0")
    assert clean.returncode == 0, clean.stderr
    [jp] = list((target / ".dataguard" / "journal").glob("*.jsonl"))
    steps = len(read_journal(jp))
    assert steps >= 8
    for n in range(1, steps + 1):
        work = tmp_path / f"kill{n}"
        shutil.copytree(pristine, work, copy_function=shutil.copy2)
        wt = work / "nnUNet_preprocessed" / L
        killed = _run_repair(wt, tmp_path / f"m{n}", {"DATAGUARD_CRASH_AT": str(n)})
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr[-500:])
        if n % 3 == 0:   # finish the job instead of undoing it
            again = _run_repair(wt, tmp_path / f"m{n}")
            assert again.returncode == 0, (n, again.stdout[-800:], again.stderr[-800:])
            assert codes(dataguard.scan([str(wt)], manifest_dir=tmp_path / f"m{n}")) == []
            continue
        try:
            restore(dataguard.discover([str(wt)]))
        except RestoreError:
            assert n == 1      # killed before anything was journalled (or changed)
        assert content(tree(work)) == reference, f"not recoverable after a kill at step {n}"


def test_sigkill_at_random_moments(real_project, tmp_path):
    import shutil

    target = break_legacy(real_project)
    reference = content(tree(real_project))
    rng = random.Random(7)
    for i in range(3):
        work = tmp_path / f"r{i}"
        shutil.copytree(real_project, work, copy_function=shutil.copy2)
        wt = work / "nnUNet_preprocessed" / L
        p = subprocess.Popen([sys.executable, "-m", "dataguard", "repair", str(wt), "--yes",
                              "--manifest-dir", str(tmp_path / f"mr{i}")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        _restore_after_kill(wt)
        assert content(tree(work)) == reference
    assert target.exists()


def _restore_after_kill(wt):
    """Restore; the kernel drops a killed holder's lock, give stragglers a moment."""
    for attempt in range(50):
        try:
            restore(dataguard.discover([str(wt)]))
            return
        except RestoreError:        # killed before the first journal entry: nothing to undo
            return
        except LockedError:
            if attempt == 49:
                holders = subprocess.run(["sh", "-c", f"fuser -v {wt}/../../*/*/.dataguard/repair.lock; ps -ef"],
                                         capture_output=True, text=True)
                raise AssertionError(holders.stdout + holders.stderr)
            time.sleep(0.2)


def test_cast_float_label_repair(real_project, tmp_path):
    import nibabel as nib

    raw = real_project / "nnUNet_raw" / M
    lab = raw / "labelsTr" / "heart_001.nii.gz"
    img = nib.load(lab)
    arr = np.asarray(img.dataobj).astype(np.float64)
    arr[arr == 1] = 1.00000002
    nib.save(nib.Nifti1Image(arr, img.affine), lab)
    assert "DG401" in codes(dataguard.scan([str(raw)], manifest_dir=tmp_path / "m"))
    res = repair([str(raw)], select=["DG401"], manifest_dir=tmp_path / "m")
    assert [a.kind for a in res.plan] == ["cast"]
    fixed = nib.load(lab)
    assert fixed.get_data_dtype() == np.uint8
    assert np.allclose(fixed.affine, img.affine)
    assert np.array_equal(np.asarray(fixed.dataobj), np.rint(arr).astype(np.uint8))
    assert "DG401" not in codes(res.after)


def test_regenerate_splits_repair(real_project, tmp_path):
    import json

    pre = real_project / "nnUNet_preprocessed" / M
    cases = sorted(p.stem for p in (pre / "nnUNetPlans_2d").glob("*.pkl"))
    # label 3 is absent in heart_003 and heart_007: put both in fold 0's validation set
    val0 = ["heart_003", "heart_007"]
    rest = [c for c in cases if c not in val0]
    folds = [val0] + [rest[i::3] for i in range(3)]
    (pre / "splits_final.json").write_text(json.dumps(
        [{"train": [c for c in cases if c not in v], "val": v} for v in folds]))
    assert "DG504" in codes(dataguard.scan([str(pre)], manifest_dir=tmp_path / "m"))
    old = (pre / "splits_final.json").read_bytes()
    res = repair([str(pre)], select=["DG5"], manifest_dir=tmp_path / "m")
    assert [a.kind for a in res.plan] == ["regenerate-splits"]
    assert not [f for f in res.after.findings if f.code.startswith("DG5")]
    assert len(json.loads((pre / "splits_final.json").read_text())) == 4
    [held] = [h for h in quarantine_list(dataguard.discover([str(pre)])) if h.path.endswith("splits_final.json")]
    assert (pre / held.stored.split("/", 1)[1]).read_bytes() == old
