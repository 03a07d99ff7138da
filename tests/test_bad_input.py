"""Hostile inputs end as findings or one-line errors, never tracebacks; scans never write data."""
from __future__ import annotations

import hashlib
import os
import threading

import numpy as np
import pytest

import dataguard
from conftest import codes, write_case_npz, write_pkl
from dataguard.checks.base import FileTask
from dataguard.checks.files import check_file


def _scan(ds, tmp_path, **kw):
    return dataguard.scan([str(ds)], manifest_dir=tmp_path / "m", **kw)


def _tree_state(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            data = b"" if os.path.islink(p) else open(p, "rb").read()
            out[p] = (st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())
    return out


def test_scan_never_modifies_the_dataset(tiny_pre, tmp_path):
    (tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz").write_bytes(b"PK\x03\x04junk")
    (tiny_pre / "nnUNetPlans_3d_fullres" / "._case_1.npz").write_bytes(b"\x00\x05\x16\x07")
    before = _tree_state(tiny_pre)
    _scan(tiny_pre, tmp_path)
    _scan(tiny_pre, tmp_path, full=True)
    assert _tree_state(tiny_pre) == before


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else False,
                    reason="root reads files whatever their permissions")
def test_permission_denied_is_a_finding(tiny_pre, tmp_path):
    p = tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz"
    p.chmod(0)
    try:
        [f] = codes(_scan(tiny_pre, tmp_path), "DG201")
        assert "Permission" in f.message
    finally:
        p.chmod(0o644)


def test_unreadable_file_is_a_finding_even_as_root(tiny_pre, tmp_path):
    # a folder where a data file should be: open() fails with an OSError for everyone
    (tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz").unlink()
    (tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz").mkdir()
    r = _scan(tiny_pre, tmp_path)
    assert r.findings, "a folder named case_0.npz must be reported"
    assert all(f.severity >= dataguard.Severity.WARNING for f in r.findings)


def test_symlink_loop_folders_and_files(tiny_pre, tmp_path):
    cfg = tiny_pre / "nnUNetPlans_3d_fullres"
    (cfg / "loop").symlink_to(cfg, target_is_directory=True)
    (cfg / "a.pkl").symlink_to(cfg / "b.pkl")
    (cfg / "b.pkl").symlink_to(cfg / "a.pkl")
    r = _scan(tiny_pre, tmp_path)
    links = {f.path.rsplit("/", 1)[-1]: f for f in r.findings if f.code == "DG105"}
    assert set(links) == {"loop", "a.pkl", "b.pkl"}         # each link is one finding, never entered
    assert "inside the dataset" in links["loop"].message


def test_broken_symlink_is_a_finding(tiny_pre, tmp_path):
    (tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz").unlink()
    (tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz").symlink_to(tmp_path / "gone.npz")
    r = _scan(tiny_pre, tmp_path)
    assert r.findings


def test_non_utf8_file_name(tiny_pre, tmp_path, capsys):
    cfg = os.fsencode(tiny_pre / "nnUNetPlans_3d_fullres")
    write_case_npz(tiny_pre / "nnUNetPlans_3d_fullres", "tmpname")
    os.rename(cfg + b"/tmpname.npz", cfg + b"/caf\xe9.npz")
    r = _scan(tiny_pre, tmp_path)
    [f] = codes(r, "DG206")          # it has no .pkl
    assert f.case == "caf\\xe9"
    from dataguard.cli import main

    assert main(["scan", str(tiny_pre), "--format", "json", "--manifest-dir", str(tmp_path / "m")]) == 1
    assert "caf\\\\xe9" in capsys.readouterr().out


def test_file_deleted_while_scanning_is_skipped(tiny_pre, tmp_path):
    p = tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz"
    task = FileTask(str(p), "preprocessed/nnUNetPlans_3d_fullres/case_0.npz", "npz", "config", "case_0")
    p.unlink()
    assert check_file(task).vanished


def test_file_deleted_during_a_real_scan(tiny_pre, tmp_path, monkeypatch):
    import dataguard.engine.scanner as scanner

    real = scanner.run_file_checks
    victim = tiny_pre / "nnUNetPlans_3d_fullres" / "case_2.pkl"

    def racing(tasks, *a, **k):
        victim.unlink()            # gone after listing, before reading
        return real(tasks, *a, **k)

    monkeypatch.setattr(scanner, "run_file_checks", racing)
    r = _scan(tiny_pre, tmp_path)
    assert r.stats.vanished == 1
    assert [(f.code, f.case) for f in r.findings] == [("DG206", "case_2")]   # its .pkl is gone


def test_random_bytes_everywhere(tiny_pre, tmp_path):
    rng = np.random.default_rng(5)
    cfg = tiny_pre / "nnUNetPlans_3d_fullres"
    for name in ("case_0.npz", "case_0.pkl", "case_1.npz"):
        (cfg / name).write_bytes(rng.bytes(5000))
    r = _scan(tiny_pre, tmp_path)
    assert {f.code for f in r.findings} == {"DG201", "DG204"}


def test_gigantic_claimed_zip_member_is_bounded(tiny_pre, tmp_path):
    # a zip bomb: 200 MB of zeros inflate from a few hundred kB; memory stays bounded
    import zipfile

    p = tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz"
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1, 50, 1024, 1024)})
    hdr = buf.getvalue()
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("data.npy", "w", force_zip64=True) as f:
            f.write(hdr)
            zeros = bytes(1 << 20)
            for _ in range(200):
                f.write(zeros)
        zf.writestr("seg.npy", b"")
    resource = pytest.importorskip("resource")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = _scan(tiny_pre, tmp_path, jobs=1)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, grown_mb
    # the 200 MiB of zeros are a valid array; only the empty seg member is wrong
    assert [(f.code, f.message.split(":")[0]) for f in r.findings] == [("DG201", "seg.npy")]


def test_parallel_scan_uses_spawn_and_matches_serial(tiny_pre, tmp_path):
    cfg = tiny_pre / "nnUNetPlans_3d_fullres"
    for i in range(3, 12):
        write_case_npz(cfg, f"case_{i}")
        write_pkl(cfg, f"case_{i}")
    (cfg / "case_5.npz").write_bytes(b"PK\x05\x06" + bytes(18))
    serial = dataguard.scan([str(tiny_pre)], manifest_dir=tmp_path / "a", jobs=1)
    parallel = dataguard.scan([str(tiny_pre)], manifest_dir=tmp_path / "b", jobs=2, force_parallel=True)
    assert [f.to_dict() for f in serial.findings] == [f.to_dict() for f in parallel.findings]
    assert codes(parallel) == ["DG202", "DG202"]   # an empty zip: no data, no seg


def test_concurrent_scans_do_not_corrupt_the_manifest(tiny_pre, tmp_path):
    errors = []

    def go():
        try:
            _scan(tiny_pre, tmp_path, full=True)
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _scan(tiny_pre, tmp_path).stats.checked == 0
