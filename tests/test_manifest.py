"""Manifest: incremental rescans and `verify` (DG701, DG702, DG703)."""
from __future__ import annotations

import json
import os

import jsonschema
import numpy as np
import pytest

import dataguard
from conftest import codes, write_case_npz
from dataguard.manifest import SCHEMA, Manifest, ManifestError


def _scan(ds, tmp_path, **kw):
    return dataguard.scan([str(ds)], manifest_dir=tmp_path / "m", **kw)


def _verify(ds, tmp_path):
    return dataguard.verify([str(ds)], manifest_dir=tmp_path / "m")


def test_manifest_records_every_file_with_blake3_and_matches_schema(tiny_pre, tmp_path):
    from blake3 import blake3

    _scan(tiny_pre, tmp_path)
    data = json.loads((tmp_path / "m" / "Dataset777_Tiny.json").read_text())
    schema = json.loads((__import__("pathlib").Path(__file__).parents[1] / "manifests" /
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
    assert second.stats.read == ["preprocessed/nnUNetPlans_3d_fullres/case_1.npz"]
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
