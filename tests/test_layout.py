"""Dataset discovery from paths, roots, parent folders, ids and nnU-Net env vars."""
from __future__ import annotations

import pytest

from dataguard.engine.layout import LayoutError, discover


@pytest.fixture
def env_roots(tiny_pre, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tiny_pre.parent))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    return tiny_pre


@pytest.mark.parametrize("ident", ["777", "Dataset777_Tiny", "0777"])
def test_dataset_id_via_env(env_roots, ident):
    [ds] = discover([ident])
    assert ds.name == "Dataset777_Tiny" and ds.preprocessed == env_roots
    assert [c.name for c in ds.config_dirs] == ["nnUNetPlans_3d_fullres"]


def test_no_target_uses_env(env_roots):
    assert [d.name for d in discover(None)] == ["Dataset777_Tiny"]


def test_unknown_id(env_roots):
    with pytest.raises(LayoutError, match="not found"):
        discover(["5"])


@pytest.mark.parametrize("which", ["dataset", "root", "parent", "config"])
def test_path_forms(tiny_pre, which):
    path = {"dataset": tiny_pre, "root": tiny_pre.parent, "parent": tiny_pre.parent.parent,
            "config": tiny_pre / "nnUNetPlans_3d_fullres"}[which]
    [ds] = discover([str(path)])
    assert ds.preprocessed == tiny_pre


def test_same_dataset_named_twice_is_scanned_once(tiny_pre):
    assert len(discover([str(tiny_pre), str(tiny_pre.parent)])) == 1


def test_raw_found_through_env_when_not_a_sibling(tiny_pre, tmp_path, monkeypatch):
    raw = tmp_path / "elsewhere" / "Dataset777_Tiny"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "dataset.json").write_text("{}")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "elsewhere"))
    [ds] = discover([str(tiny_pre)])
    assert ds.raw == raw


def test_file_instead_of_folder(tiny_pre):
    with pytest.raises(LayoutError, match="not a folder"):
        discover([str(tiny_pre / "dataset.json")])
