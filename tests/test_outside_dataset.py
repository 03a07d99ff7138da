"""A dataset from someone else's machine must not make repair or restore act outside it.

Each test builds the hostile dataset itself (links, FIFOs, a planted `.dataguard/`), runs the
CLI under the audit hook, and snapshots a sibling folder ("outside") byte for byte before and
after `repair --yes` and `restore`: nothing there may change, appear or vanish.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from audit import watch
from conftest import make_tiny_pre
from dataguard.cli import main
from dataguard.engine import own_state
from dataguard.fsio import OutsideError, check_rel
from dataguard.engine.journal import Journal

CFG = "nnUNetPlans_3d_fullres"
APPLEDOUBLE = b"\x00\x05\x16\x07" + bytes(60)
posix_only = pytest.mark.skipif(os.name != "posix", reason="symbolic links and FIFOs as on POSIX")


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below folder (links and FIFOs included, never followed): its kind and bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            rel = p.relative_to(folder).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
            else:
                out[rel] = f"mode:{stat.S_IFMT(st.st_mode)}"
    return out


@pytest.fixture
def world(tmp_path):
    """(dataset with one `._` junk file, a sibling folder 'outside' with files, the manifest dir)."""
    ds = make_tiny_pre(tmp_path / "data")
    (ds / CFG / "._case_1.npz").write_bytes(APPLEDOUBLE)
    outside = tmp_path / "outside"
    (outside / "tmp").mkdir(parents=True)
    (outside / "victim.txt").write_text("precious")
    (outside / "tmp" / "keep.bin").write_bytes(b"keep me")
    (outside / "sub").mkdir()
    (outside / "sub" / "a.txt").write_text("a")
    return ds, outside, tmp_path / "m"


def cli(capsys, *argv, allow=()):
    with watch(allow_writes=allow) as events:
        code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err, events


def write_events(events, outside: Path) -> list[str]:
    return [e for e in events if str(outside) in e]


# --- 1. dataguard's own state is dataguard's ------------------------------------------------------
@posix_only
@pytest.mark.parametrize("linked", [".dataguard", ".dataguard/quarantine", ".dataguard/tmp", ".dataguard/journal"])
def test_a_linked_state_folder_stops_repair_and_restore_before_any_change(world, capsys, linked):
    ds, outside, m = world
    link = ds / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    before, inside = snapshot(outside), snapshot(ds)
    main(["scan", str(ds), "--manifest-dir", str(m)])          # warm lazy imports outside the watch
    capsys.readouterr()
    code, out, err, events = cli(capsys, "repair", ds, "--yes", "--manifest-dir", m, allow=[m, ds])
    assert code == 2, err
    assert "not dataguard's" in err and str(link) in err and "symbolic link" in err
    assert snapshot(outside) == before and snapshot(ds) == inside
    assert write_events(events, outside) == []
    code, out, err, _ = cli(capsys, "restore", ds, allow=[m, ds])
    assert code == 2 and str(link) in err
    assert snapshot(outside) == before and snapshot(ds) == inside


@posix_only
def test_a_linked_lock_file_is_never_truncated(world, capsys):
    ds, outside, m = world
    (ds / ".dataguard").mkdir()
    (ds / ".dataguard" / "repair.lock").symlink_to(outside / "victim.txt")
    before = snapshot(outside)
    code, _, err, _ = cli(capsys, "repair", ds, "--yes", "--manifest-dir", m, allow=[m, ds])
    assert code == 2 and "repair.lock" in err
    code, _, err, _ = cli(capsys, "restore", ds, allow=[m, ds])
    assert code == 2 and "repair.lock" in err
    assert snapshot(outside) == before and (outside / "victim.txt").read_text() == "precious"


@posix_only
def test_a_scan_names_a_linked_state_folder_dg106(world, capsys):
    ds, outside, m = world
    (ds / ".dataguard").symlink_to(outside)
    code, out, err, _ = cli(capsys, "scan", ds, "--manifest-dir", m, "--format", "json", allow=[m])
    found = [f for f in json.loads(out)["findings"] if f["code"] == "DG106"]
    assert found and "symbolic link" in found[0]["message"] and found[0]["severity"] == "warning"


# --- 2. the journal is authenticated and confined ---------------------------------------------------
def plant_journal(ds: Path, run_id: str, records: list[dict]) -> Path:
    """A journal as someone else's machine could ship it (plausible, but not signed by this user)."""
    j = ds / ".dataguard" / "journal" / f"{run_id}.jsonl"
    j.parent.mkdir(parents=True, exist_ok=True)
    j.write_text("".join(json.dumps(r) + "\n" for r in records))
    return j


def payload(ds: Path, run_id: str) -> tuple[str, str]:
    from blake3 import blake3

    q = ds / ".dataguard" / "quarantine" / run_id / "payload"
    q.parent.mkdir(parents=True, exist_ok=True)
    q.write_bytes(b"attacker's bytes")
    return q.relative_to(ds).as_posix(), blake3(b"attacker's bytes").hexdigest()


def test_a_planted_journal_is_never_obeyed(world, capsys):
    ds, outside, m = world
    rid = "99991231-235959-ffffff"
    to, digest = payload(ds, rid)
    depth = len(ds.relative_to(outside.parent).parts)
    victim = "../" * depth + "outside/victim.txt"
    fresh = "../" * depth + "outside/new/evil.pth"
    plant_journal(ds, rid, [{"op": "quarantine", "path": victim, "to": to, "blake3": digest},
                            {"op": "quarantine", "path": fresh, "to": to, "blake3": digest, "seq": 1, "mac": "0" * 64},
                            {"op": "quarantine", "path": "nnUNetPlans.json",
                             "to": "../" * depth + "outside/victim.txt", "blake3": digest}])
    before = snapshot(outside)
    code, out, err, events = cli(capsys, "restore", ds, allow=[m, ds])
    assert code == 2, err
    assert "not written by dataguard for this user" in err and rid in err
    code, out, err, events2 = cli(capsys, "restore", ds, "--run", rid, allow=[m, ds])
    assert code == 2 and "not written by dataguard for this user" in err
    assert snapshot(outside) == before and (outside / "victim.txt").read_text() == "precious"
    assert write_events(events + events2, outside) == []
    # the scan says someone else's state came with the dataset
    code, out, _, _ = cli(capsys, "scan", ds, "--manifest-dir", m, "--format", "json", allow=[m])
    dg106 = [f for f in json.loads(out)["findings"] if f["code"] == "DG106"]
    assert dg106 and rid in dg106[0]["path"] and "not written by dataguard for this user" in dg106[0]["message"]


def test_a_planted_journal_that_sorts_last_does_not_hide_a_genuine_repair(world, capsys):
    ds, outside, m = world
    junk = ds / CFG / "._case_1.npz"
    code, out, err, _ = cli(capsys, "repair", ds, "--yes", "--manifest-dir", m, allow=[m, ds])
    assert code == 0, err
    assert not junk.exists()
    rid = "99991231-235959-ffffff"
    to, digest = payload(ds, rid)
    depth = len(ds.relative_to(outside.parent).parts)
    plant_journal(ds, rid, [{"op": "quarantine", "path": "../" * depth + "outside/victim.txt", "to": to,
                             "blake3": digest}])
    before = snapshot(outside)
    code, out, err, events = cli(capsys, "restore", ds, allow=[m, ds])
    assert code == 0, err
    assert junk.read_bytes() == APPLEDOUBLE                  # the genuine run was restored
    assert rid in out + err and "not written by dataguard for this user" in out + err
    assert snapshot(outside) == before and write_events(events, outside) == []


def test_a_genuine_record_edited_to_leave_the_dataset_stops_verifying(world, capsys):
    ds, outside, m = world
    code, _, err, _ = cli(capsys, "repair", ds, "--yes", "--manifest-dir", m, allow=[m, ds])
    assert code == 0, err
    [jpath] = (ds / ".dataguard" / "journal").glob("*.jsonl")
    depth = len(ds.relative_to(outside.parent).parts)
    lines = jpath.read_text().splitlines()
    edited = []
    for line in lines:
        rec = json.loads(line)
        if rec.get("op") == "quarantine":
            rec["path"] = "../" * depth + "outside/victim.txt"       # the MAC no longer matches
        edited.append(json.dumps(rec))
    jpath.write_text("\n".join(edited) + "\n")
    before = snapshot(outside)
    code, out, err, _ = cli(capsys, "restore", ds, allow=[m, ds])
    assert snapshot(outside) == before
    assert "not written by dataguard for this user" in out + err


def test_a_signed_record_that_leaves_the_dataset_is_still_refused(world, capsys):
    """Defence in depth: even a record with a valid MAC (as a bug of ours could write) must name
    a path inside the dataset and a copy inside its own run's quarantine."""
    ds, outside, m = world
    rid = "20990101-000000-aaaaaa"
    to, digest = payload(ds, rid)
    depth = len(ds.relative_to(outside.parent).parts)
    j = Journal(ds, rid)
    j.write(op="quarantine", path="../" * depth + "outside/victim.txt", to=to, blake3=digest, reason="x")
    j.write(op="quarantine", path="nnUNetPlans.json", to="../" * depth + "outside/victim.txt", blake3=digest,
            reason="x")
    before = snapshot(outside)
    code, out, err, _ = cli(capsys, "restore", ds, allow=[m, ds])
    assert snapshot(outside) == before and (ds / "nnUNetPlans.json").exists()
    assert out.count("refused") + err.count("refused") >= 2, out + err


def test_every_journal_path_is_relative_normalised_and_inside():
    for bad in ("../x", "/etc/passwd", "a/../../x", "a//b", "./a", "", "a/.", ".."):
        with pytest.raises(OutsideError):
            check_rel(bad)
    assert check_rel("nnUNetPlans_3d_fullres/case_0.npz")
    rec = {"op": "quarantine", "path": "a", "to": ".dataguard/quarantine/OTHER/a"}
    assert "outside run R's quarantine" in own_state.confined(rec, "R")
    assert own_state.confined({"op": "quarantine", "path": "a", "to": ".dataguard/quarantine/R/a"}, "R") is None


def test_the_journal_key_is_private_and_outside_the_dataset(world, capsys):
    ds, _, m = world
    code, _, err, _ = cli(capsys, "repair", ds, "--yes", "--manifest-dir", m, allow=[m, ds])
    assert code == 0, err
    key = own_state.key_path()
    assert key.is_file() and ds not in key.parents
    if os.name == "posix":
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    [jpath] = (ds / ".dataguard" / "journal").glob("*.jsonl")
    recs = [json.loads(x) for x in jpath.read_text().splitlines()]
    assert all(len(r["mac"]) == 64 and isinstance(r["seq"], int) for r in recs)
    assert own_state.verified_records(jpath, own_state.load_key(False))[1] == []
    assert own_state.verified_records(jpath, b"\x01" * 32)[0] == []      # another user's key


# --- 3. links and special files inside the dataset ---------------------------------------------------
@posix_only
def test_a_linked_folder_is_one_finding_and_its_repair_moves_only_the_link(world, capsys):
    ds, outside, m = world
    (ds / CFG / "sub").symlink_to(outside / "sub")
    before = snapshot(outside)
    code, out, err, _ = cli(capsys, "scan", ds, "--manifest-dir", m, "--format", "json", allow=[m])
    fs = json.loads(out)["findings"]
    links = [f for f in fs if f["code"] == "DG105"]
    assert len(links) == 1 and links[0]["path"] == f"preprocessed/{CFG}/sub"
    assert "outside the dataset" in links[0]["message"] and links[0]["severity"] == "error"
    assert not [f for f in fs if "a.txt" in f["path"]]               # nothing behind the link was read
    code, out, err, events = cli(capsys, "repair", ds, "--yes", "--manifest-dir", m, allow=[m, ds])
    assert code == 0, err
    assert snapshot(outside) == before and write_events(events, outside) == []
    assert not os.path.lexists(ds / CFG / "sub")
    held = list((ds / ".dataguard" / "quarantine").rglob("sub"))
    assert len(held) == 1 and held[0].is_symlink() and os.readlink(held[0]) == str(outside / "sub")
    # a second repair trusts its own quarantined link (a verified record accounts for it)
    code, _, err, _ = cli(capsys, "repair", ds, "--yes", "--manifest-dir", m, allow=[m, ds])
    assert code == 0, err
    code, out, err, _ = cli(capsys, "restore", ds, allow=[m, ds])
    assert code == 0, err
    assert os.readlink(ds / CFG / "sub") == str(outside / "sub") and snapshot(outside) == before


def run_bounded(fn, seconds: float):
    box = {}

    def go():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            box["error"] = e
    t = threading.Thread(target=go, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (a hang)"
    if "error" in box:
        raise box["error"]
    return box["result"], time.monotonic() - t0


@posix_only
def test_links_to_dev_zero_proc_and_a_fifo_never_hang_scan_or_repair(world, capsys):
    ds, outside, m = world
    mac = ds / "__MACOSX"
    mac.mkdir()
    (mac / "zero").symlink_to("/dev/zero")
    os.mkfifo(mac / "pipe")
    (ds / CFG / "proc").symlink_to("/proc/self")
    (ds / CFG / "fifo.npz").parent.mkdir(exist_ok=True)
    os.mkfifo(ds / CFG / "fifo.npz")
    code, took = run_bounded(lambda: main(["scan", str(ds), "--manifest-dir", str(m), "--format", "json"]), 60)
    out = json.loads(capsys.readouterr().out)
    paths = {f["path"]: f for f in out["findings"] if f["code"] == "DG105"}
    assert {f"preprocessed/{CFG}/proc", f"preprocessed/{CFG}/fifo.npz"} <= set(paths)
    assert "a FIFO" in paths[f"preprocessed/{CFG}/fifo.npz"]["message"]
    code, took = run_bounded(lambda: main(["repair", str(ds), "--yes", "--manifest-dir", str(m)]), 60)
    err = capsys.readouterr().err
    assert code == 0, err
    assert not os.path.lexists(mac / "zero") and not os.path.lexists(mac / "pipe")
    assert not os.path.lexists(ds / CFG / "proc") and not os.path.lexists(ds / CFG / "fifo.npz")
    code, took = run_bounded(lambda: main(["restore", str(ds)]), 60)
    assert code == 0, capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(mac / "pipe").st_mode) and os.readlink(mac / "zero") == "/dev/zero"
    assert os.readlink(ds / CFG / "proc") == "/proc/self"


# --- 4. names are bytes ------------------------------------------------------------------------------
@posix_only
@pytest.mark.parametrize("name", [b"._case\n1.npz", b"._\xff\xfe.npz", b"Notes\r\x1b[2J.txt"])
def test_junk_with_odd_bytes_in_its_name_is_really_moved(world, capsys, name):
    ds, outside, m = world
    path = os.path.join(os.fsencode(ds / CFG), name)
    with open(path, "wb") as f:
        f.write(APPLEDOUBLE)
    code, out, err, _ = cli(capsys, "repair", ds, "--yes", "--manifest-dir", m, allow=[m, ds])
    assert code == 0, err
    assert not os.path.lexists(path), "the finding's escaped name was used instead of the real one"
    code, out, _, _ = cli(capsys, "scan", ds, "--manifest-dir", m, "--format", "json", allow=[m])
    assert json.loads(out)["findings"] == []
    code, out, err, _ = cli(capsys, "restore", ds, allow=[m, ds])
    assert code == 0, err
    with open(path, "rb") as f:
        assert f.read() == APPLEDOUBLE


# --- the audit hook itself ---------------------------------------------------------------------------
def test_the_audit_hook_survives_the_top_of_a_spawn_workers_stack(tmp_path):
    """sys._getframe(2) raises ValueError where the stack is shallower (a spawn worker's first
    frames): the hook must say '?' and record, never raise into the audited code."""
    import subprocess
    import sys

    here = Path(__file__).parent
    code = ("import sys; sys.path.insert(0, %r); import audit\n"
            "with audit.watch() as ev:\n"
            "    exec(compile('x = 1', '<data>', 'exec'))\n"
            "print(audit._caller()); print(len(ev))\n") % str(here)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["?", "1"]
