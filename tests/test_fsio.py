"""fsio: the one way dataguard writes and moves files. A move across file systems whose copy
is corrupted in flight keeps the source; writers other than fsio do not rename or overwrite."""
from __future__ import annotations

import ast
import errno
import os
import shutil
from pathlib import Path

import pytest

import dataguard
from conftest import mounted_tmpfs
from dataguard import fsio


@pytest.fixture
def other_fs(tmp_path):
    """A second file system (a tmpfs), so os.replace really fails with EXDEV."""
    yield from mounted_tmpfs(tmp_path / "tmpfs", size="4m")


def _exdev(monkeypatch, marker="elsewhere"):
    """os.replace fails with EXDEV from outside a folder whose path holds `marker` into it."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if marker in str(Path(dst).parent) and marker not in str(Path(src).parent):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", replace)


def _corrupting_copy(monkeypatch):
    real = shutil.copy2

    def copy2(src, dst, *a, **k):
        out = real(src, dst, *a, **k)
        with open(dst, "r+b") as f:              # one bit flipped in flight
            b = f.read(1)
            f.seek(0)
            f.write(bytes([b[0] ^ 1]))
        return out
    monkeypatch.setattr(shutil, "copy2", copy2)


def test_move_across_file_systems_verifies_before_unlinking(tmp_path, other_fs):
    src = tmp_path / "case.npz"
    src.write_bytes(os.urandom(100_000))
    want = fsio.blake3_file(src)
    fsio.move_durably(src, other_fs / "case.npz")
    assert not src.exists() and fsio.blake3_file(other_fs / "case.npz") == want


def test_a_copy_corrupted_in_flight_leaves_the_source(tmp_path, other_fs, monkeypatch):
    src = tmp_path / "case.npz"
    src.write_bytes(os.urandom(100_000))
    want = fsio.blake3_file(src)
    _corrupting_copy(monkeypatch)
    with pytest.raises(fsio.CopyMismatch):
        fsio.move_durably(src, other_fs / "case.npz")
    assert fsio.blake3_file(src) == want
    assert list(other_fs.iterdir()) == []                  # neither the bad copy nor a temp file


def test_exdev_without_a_mount(tmp_path, monkeypatch):
    """The same with os.replace raising EXDEV (for machines that cannot mount)."""
    (tmp_path / "elsewhere").mkdir()
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 5000)
    _exdev(monkeypatch)
    _corrupting_copy(monkeypatch)
    with pytest.raises(fsio.CopyMismatch):
        fsio.move_durably(src, tmp_path / "elsewhere" / "a.bin")
    assert src.read_bytes() == b"x" * 5000 and list((tmp_path / "elsewhere").iterdir()) == []
    monkeypatch.undo()
    _exdev(monkeypatch)
    fsio.move_durably(src, tmp_path / "elsewhere" / "a.bin")
    assert not src.exists() and (tmp_path / "elsewhere" / "a.bin").read_bytes() == b"x" * 5000


def test_quarantine_across_file_systems_keeps_the_bytes(tmp_path, monkeypatch):
    """The journal's quarantine move is fsio's: a corrupted copy never costs the original."""
    from dataguard.engine.journal import Journal

    root = tmp_path / "ds"
    root.mkdir()
    (root / "x.npz").write_bytes(b"precious" * 100)
    _exdev(monkeypatch, "/.dataguard/quarantine")
    _corrupting_copy(monkeypatch)
    with pytest.raises(fsio.CopyMismatch):
        Journal(root, "run1").quarantine_file("x.npz", reason="DG101")
    assert (root / "x.npz").read_bytes() == b"precious" * 100
    monkeypatch.undo()
    _exdev(monkeypatch, "/.dataguard/quarantine")
    held = Journal(root, "run2").quarantine_file("x.npz", reason="DG101")
    assert not (root / "x.npz").exists() and (root / held).read_bytes() == b"precious" * 100


def test_atomic_write_leaves_no_temp_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "splits_final.json"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        fsio.atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["splits_final.json"]


# writers that may write without fsio, and why
ALLOWED_RAW_WRITES = {
    "demo/project.py": "builds the demo's own fresh folder (synthetic data, no user file)",
    "demo/synthetic.py": "writes synthetic cases into a fresh demo folder",
}


def test_no_module_renames_or_overwrites_files_outside_fsio():
    root = Path(dataguard.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel == "fsio.py" or rel in ALLOWED_RAW_WRITES:
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = getattr(node.func.value, "id", "")
                name = node.func.attr
                if (owner, name) in {("os", "replace"), ("os", "rename"), ("shutil", "move"), ("shutil", "copy"),
                                     ("shutil", "copy2"), ("shutil", "copyfile")} \
                        or name in ("write_text", "write_bytes"):
                    bad.append(f"{rel}:{node.lineno} {owner}.{name}")
    assert bad == [], bad
