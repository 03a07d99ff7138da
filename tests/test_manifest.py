"""Manifest: incremental rescans and `verify` (DG701, DG702, DG703)."""
from __future__ import annotations

import json
import os

import jsonschema
import numpy as np
import pytest

import dataguard
from conftest import codes, write_case_npz, write_pkl
from dataguard.engine.manifest import SCHEMA, Manifest, ManifestError


def _scan(ds, tmp_path, **kw):
    return dataguard.scan([str(ds)], manifest_dir=tmp_path / "m", **kw)


def _verify(ds, tmp_path):
    return dataguard.verify([str(ds)], manifest_dir=tmp_path / "m")


def test_manifest_records_every_file_with_blake3_and_matches_schema(tiny_pre, tmp_path):
    from blake3 import blake3

    _scan(tiny_pre, tmp_path)
    data = json.loads((tmp_path / "m" / "Dataset777_Tiny.json").read_text())
    schema = json.loads((__import__("pathlib").Path(__file__).parents[1] / "dataguard" / "data" /
                         "manifest.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert data["schema"] == SCHEMA
    p = tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.npz"
    e = data["files"]["preprocessed/nnUNetPlans_3d_fullres/case_0.npz"]
    assert e["blake3"] == blake3(p.read_bytes()).hexdigest()
    assert e["size"] == p.stat().st_size and e["inode"] == p.stat().st_ino


def test_rescan_reads_only_the_touched_file(tiny_pre, tmp_path):
    first = _scan(tiny_pre, tmp_path)
    assert first.stats.checked == first.stats.files == 9
    os.utime(tiny_pre / "nnUNetPlans_3d_fullres" / "case_1.npz")   # touch: new mtime, same bytes
    second = _scan(tiny_pre, tmp_path)
    assert second.stats.read == ["Dataset777_Tiny/preprocessed/nnUNetPlans_3d_fullres/case_1.npz"]
    assert (second.stats.checked, second.stats.reused) == (1, 8)


def test_cached_findings_are_reused_and_full_rereads(tiny_pre, tmp_path):
    (tiny_pre / "nnUNetPlans_3d_fullres" / "case_2.npz").write_bytes(b"PK\x03\x04garbage")
    assert codes(_scan(tiny_pre, tmp_path)) == ["DG201"]
    again = _scan(tiny_pre, tmp_path)
    assert codes(again) == ["DG201"] and again.stats.checked == 0
    full = _scan(tiny_pre, tmp_path, full=True)
    assert codes(full) == ["DG201"] and full.stats.checked == 9


def test_changed_dataset_json_labels_invalidate_cached_results(tiny_pre, tmp_path):
    assert _scan(tiny_pre, tmp_path).findings == []
    dj = tiny_pre / "dataset.json"
    meta = json.loads(dj.read_text())
    meta["labels"] = {"background": 0, "myocardium": 1}
    dj.write_text(json.dumps(meta))
    assert "DG210" in codes(_scan(tiny_pre, tmp_path))


def test_verify_clean_then_silent_corruption_gone_and_new(tiny_pre, tmp_path):
    _scan(tiny_pre, tmp_path)
    assert _verify(tiny_pre, tmp_path).findings == []
    cfg = tiny_pre / "nnUNetPlans_3d_fullres"
    victim = cfg / "case_0.npz"
    st = victim.stat()
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF                        # one flipped bit-group, same size ...
    victim.write_bytes(bytes(raw))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))   # ... and the same mtime
    (cfg / "case_1.pkl").unlink()
    write_case_npz(cfg, "case_new")
    r = _verify(tiny_pre, tmp_path)
    by = {f.code: f for f in r.findings}
    assert sorted(by) == ["DG701", "DG702", "DG703"]
    assert "silently" in by["DG701"].message and str(by["DG701"].fix) == "re-preprocess"
    assert by["DG702"].path.endswith("case_1.pkl")
    assert by["DG703"].path.endswith("case_new.npz")
    assert by["DG703"].severity == dataguard.Severity.INFO


def test_verify_without_manifest_is_a_usage_error(tiny_pre, tmp_path):
    with pytest.raises(ManifestError, match="run `dataguard scan` first"):
        _verify(tiny_pre, tmp_path)


def test_verify_does_not_update_the_manifest(tiny_pre, tmp_path):
    _scan(tiny_pre, tmp_path)
    before = (tmp_path / "m" / "Dataset777_Tiny.json").read_bytes()
    write_case_npz(tiny_pre / "nnUNetPlans_3d_fullres", "case_new")
    _verify(tiny_pre, tmp_path)
    assert (tmp_path / "m" / "Dataset777_Tiny.json").read_bytes() == before


def test_corrupt_manifest_gives_clear_error(tiny_pre, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "Dataset777_Tiny.json").write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable"):
        Manifest.load(tmp_path / "m", "Dataset777_Tiny")


def test_touched_but_identical_files_are_only_hashed(tiny_pre, tmp_path):
    """Copying a dataset between machines changes mtimes/inodes, not bytes: no re-check."""
    (tiny_pre / "nnUNetPlans_3d_fullres" / "case_2.npz").write_bytes(b"PK\x03\x04garbage")
    assert codes(_scan(tiny_pre, tmp_path)) == ["DG201"]
    for p in tiny_pre.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(10**18, 10**18))
    again = _scan(tiny_pre, tmp_path)
    assert again.stats.checked == 9 and again.stats.same_content == 9
    assert codes(again) == ["DG201"]                    # recorded findings still reported
    assert _scan(tiny_pre, tmp_path).stats.checked == 0  # and the new stat was recorded
    write_case_npz(tiny_pre / "nnUNetPlans_3d_fullres", "case_1", data=np.ones((1, 4, 8, 8), np.float32))
    changed = _scan(tiny_pre, tmp_path)
    assert changed.stats.checked == 1 and changed.stats.same_content == 0


# --- Engine v2: what a rescan reuses, and what it does not read ---------------------------------
CFG = "nnUNetPlans_3d_fullres"


def test_bumping_one_check_version_rereads_only_its_kind(tiny_pre, tmp_path):
    import dataclasses

    from dataguard.checks import get, register

    assert _scan(tiny_pre, tmp_path).stats.checked == 9
    old = get("pkl")
    register(dataclasses.replace(old, version=old.version + 1))     # same fn, new version
    try:
        again = _scan(tiny_pre, tmp_path)
    finally:
        register(old)
    assert again.stats.read == [f"Dataset777_Tiny/preprocessed/{CFG}/case_{i}.pkl" for i in range(3)]
    data = json.loads((tmp_path / "m" / "Dataset777_Tiny.json").read_text())
    assert data["files"][f"preprocessed/{CFG}/case_0.pkl"]["checks"]["pkl"]["v"] == old.version + 1
    assert data["files"][f"preprocessed/{CFG}/case_0.npz"]["checks"]["npz"] == {"v": get("npz").version,
                                                                              "findings": []}
    assert _scan(tiny_pre, tmp_path).stats.read == [f"Dataset777_Tiny/preprocessed/{CFG}/case_{i}.pkl"
                                                     for i in range(3)]   # back to the old version


def test_unchanged_rescan_rewrites_nothing_and_reuses_dataset_checks(tiny_pre, tmp_path):
    import dataclasses

    from dataguard.checks import Selection, get, register

    (tiny_pre / CFG / "case_2.pkl").unlink()                 # DG206: a dataset-level finding
    first = _scan(tiny_pre, tmp_path)
    assert codes(first) == ["DG206"] and first.stats.dataset_checks_reused == 0
    m = tmp_path / "m" / "Dataset777_Tiny.json"
    before = (m.stat().st_mtime_ns, m.read_bytes())
    assert sorted(json.loads(before[1])["dataset_checks"]) == sorted(Selection.of().dataset)
    calls = []
    old = get("case-completeness")
    register(dataclasses.replace(old, fn=lambda view: calls.append(1) or old.fn(view)))
    index = m.with_suffix(".index")
    try:
        index.unlink()                   # the stat index would answer first: test the manifest's reuse
        again = _scan(tiny_pre, tmp_path)
        assert codes(again) == ["DG206"] and again.stats.checked == 0 and not calls
        assert again.stats.dataset_checks_reused == len(Selection.of().dataset)
        assert (m.stat().st_mtime_ns, m.read_bytes()) == before          # not even rewritten
        os.utime(tiny_pre / CFG / "case_1.pkl", ns=(10**18, 10**18))     # touched, same bytes
        index.unlink()
        touched = _scan(tiny_pre, tmp_path)
        assert touched.stats.same_content == 1 and not calls             # dataset checks reused
        assert m.read_bytes() != before[1]                               # the new stat is recorded
        write_pkl(tiny_pre / CFG, "case_2")                              # an input changed: run again
        index.unlink()
        fixed = _scan(tiny_pre, tmp_path)
        assert codes(fixed) == [] and calls == [1]
    finally:
        register(old)


def test_select_dg5_full_decompresses_nothing(tiny_pre, tmp_path):
    from conftest import write_b2nd

    cfg = tiny_pre / CFG
    write_b2nd(cfg / "case_3.b2nd", np.zeros((1, 4, 8, 8), np.float32))
    write_b2nd(cfg / "case_3_seg.b2nd", np.zeros((1, 4, 8, 8), np.int8))
    write_pkl(cfg, "case_3")
    (tiny_pre / "splits_final.json").write_text(json.dumps(
        [{"train": ["case_0", "case_1", "case_3"], "val": ["case_2"]},
         {"train": ["case_2", "case_3"], "val": ["case_0", "case_1"]}]))
    for full in (False, True):          # fresh manifest, then with everything recorded
        r = _scan(tiny_pre, tmp_path, select=["DG5"], full=full)
        assert r.stats.read == [f"Dataset777_Tiny/preprocessed/{CFG}/case_{i}.pkl" for i in range(4)]
        assert {f.code[:3] for f in r.findings} <= {"DG5"}
    everything = _scan(tiny_pre, tmp_path)
    assert any(p.endswith(".npz") for p in everything.stats.read)
    assert any(p.endswith(".b2nd") for p in everything.stats.read)


def test_select_dg5_reads_raw_labels_but_no_raw_image(tmp_path):
    from dataguard.demo.synthetic import write_raw_dataset

    raw = write_raw_dataset(tmp_path / "nnUNet_raw", n_cases=3, shape=(8, 8, 4))
    (raw / "splits_final.json").write_text("[]")
    r = dataguard.scan([str(raw)], manifest_dir=tmp_path / "m", select=["DG5"], full=True)
    assert r.stats.read and all("/raw/labelsTr/" in p for p in r.stats.read)


def _findings_dump(result):
    return [f.to_dict() for f in result.findings]


def test_same_findings_through_threads_processes_and_in_process(tiny_pre, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from dataguard.engine.scanner import make_executor

    cfg = tiny_pre / CFG
    for i in range(3, 8):
        write_case_npz(cfg, f"case_{i}")
        write_pkl(cfg, f"case_{i}")
    (cfg / "case_4.npz").write_bytes(b"PK\x03\x04garbage")                  # DG201
    (cfg / "case_5.pkl").unlink()                                           # DG206
    (cfg / "._case_6.npz").write_bytes(b"\x00\x05\x16\x07" + bytes(60))    # DG101
    write_case_npz(cfg, "case_7", seg=np.full((1, 4, 8, 8), 9, np.int8))   # DG210
    serial = _scan(tiny_pre, tmp_path / "serial", jobs=1, full=True)
    assert {"DG101", "DG201", "DG206", "DG210"} <= set(codes(serial))
    with ThreadPoolExecutor(max_workers=3) as ex:
        threads = _scan(tiny_pre, tmp_path / "threads", executor=ex, full=True)
    with make_executor("process", 2) as ex:
        procs = _scan(tiny_pre, tmp_path / "procs", executor=ex, full=True)
    assert _findings_dump(threads) == _findings_dump(serial) == _findings_dump(procs)
    assert serial.stats.checked == threads.stats.checked == procs.stats.checked == len(serial.stats.read)


def test_stat_index_answers_unchanged_and_touched_rescans(tiny_pre, tmp_path):
    """The index in front of the manifest: nothing decoded when nothing changed, a touched
    file only hashed, anything else a full (incremental) scan."""
    (tiny_pre / CFG / "case_2.pkl").unlink()                 # DG206 stays recorded
    first = _scan(tiny_pre, tmp_path)
    m = tmp_path / "m" / "Dataset777_Tiny.json"
    index = m.with_suffix(".index")
    assert index.exists() and first.stats.indexed == 0
    manifest_bytes = m.read_bytes()
    again = _scan(tiny_pre, tmp_path)
    assert again.stats.indexed == 1 and again.stats.checked == 0
    assert again.findings == first.findings
    assert set(again.views) == {"Dataset777_Tiny"}           # built on demand from the manifest
    assert again.views["Dataset777_Tiny"].results            # (every file reused, nothing read)
    os.utime(tiny_pre / CFG / "case_1.pkl", ns=(10**18, 10**18))   # touched, same bytes
    touched = _scan(tiny_pre, tmp_path)
    assert touched.stats.indexed == 1 and touched.stats.read == [f"Dataset777_Tiny/preprocessed/{CFG}/case_1.pkl"]
    assert touched.findings == first.findings and m.read_bytes() == manifest_bytes
    assert _scan(tiny_pre, tmp_path).stats.checked == 0      # the index moved on with the new stat
    os.utime(tiny_pre / CFG / "case_1.npz", ns=(10**18, 10**18))   # .npz mtimes matter (DG206)
    assert _scan(tiny_pre, tmp_path).stats.indexed == 0
    assert _scan(tiny_pre, tmp_path, select=["DG2"]).stats.indexed == 0   # another selection
    data = (tiny_pre / CFG / "case_0.pkl").read_bytes()
    (tiny_pre / CFG / "case_0.pkl").write_bytes(data[: len(data) // 2])    # a real change
    changed = _scan(tiny_pre, tmp_path)
    assert changed.stats.indexed == 0 and "DG204" in codes(changed)
    (tiny_pre / CFG / "extra.txt").write_text("x")                        # a new file
    assert _scan(tiny_pre, tmp_path).stats.indexed == 0
    assert _scan(tiny_pre, tmp_path, write_manifest=True).stats.indexed == 1
