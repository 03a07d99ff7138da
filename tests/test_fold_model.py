"""The read-only fold model (`dataguard.folds`, vocabulary) and how often a scan reads it."""
from __future__ import annotations

import json

import dataguard.folds as folds_mod
from conftest import make_tiny_pre
from dataguard.workspace import Workspace


def _count_reads(monkeypatch) -> list[str]:
    """Every read of a splits_final.json, wherever the code looks for `load_splits`."""
    calls: list[str] = []
    real = folds_mod.load_splits

    def counting(path):
        calls.append(str(path))
        return real(path)

    import dataguard.checks.cases
    import dataguard.checks.splits
    import dataguard.engine.caseinfo
    import dataguard.handles.splits
    import dataguard.splits.folds

    for mod in (folds_mod, dataguard.checks.cases, dataguard.checks.splits, dataguard.engine.caseinfo,
                dataguard.splits.folds, dataguard.handles.splits):
        if hasattr(mod, "load_splits"):
            monkeypatch.setattr(mod, "load_splits", counting)
    return calls


def test_a_scan_and_its_cases_read_splits_final_json_once(tmp_path, monkeypatch):
    ds = make_tiny_pre(tmp_path)
    (ds / "splits_final.json").write_text(json.dumps(
        [{"train": ["case_0", "case_1"], "val": ["case_2"]}, {"train": ["case_1", "case_2"], "val": ["case_0"]}]))
    calls = _count_reads(monkeypatch)
    ws = Workspace([str(ds)], manifest_dir=tmp_path / "m", jobs=1)
    ws.scan()
    cases = ws.cases()
    assert {c.case: c.val_fold for c in cases} == {"case_0": 1, "case_1": None, "case_2": 0}
    _, splits, table, note = ws.dataset().splits.folds_view()     # the faces' folds table too
    assert len(splits) == 2 and note is None
    assert len(calls) == 1, calls


def test_an_unusable_splits_file_is_read_once_and_reported(tmp_path, monkeypatch):
    ds = make_tiny_pre(tmp_path)
    (ds / "splits_final.json").write_text("[{]")
    calls = _count_reads(monkeypatch)
    ws = Workspace([str(ds)], manifest_dir=tmp_path / "m", jobs=1)
    res = ws.scan()
    assert [f.code for f in res.findings if f.code == "DG501"] == ["DG501"]
    assert all(c.val_fold is None for c in ws.cases())
    assert len(calls) == 1, calls


def test_the_fold_model_is_the_one_the_splits_feature_re_exports():
    import dataguard.splits.folds as sp

    for name in ("load_splits", "parse_splits", "structure_problems", "label_table", "coverage_gaps",
                 "nnunet_default_split", "fold_sizes", "NNUNET_SEED", "NNUNET_FOLDS", "SPLITS_NAME"):
        assert getattr(sp, name) is getattr(folds_mod, name)
