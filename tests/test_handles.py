"""The small door: `Workspace` keeps what every face needs, `ws.dataset(name)` hands out the rest."""
from __future__ import annotations

import warnings

import pytest

import dataguard
from conftest import make_tiny_pre
from dataguard.handles.dataset import DatasetHandle
from dataguard.workspace import _DEPRECATED, Workspace


def _public(cls) -> list[str]:
    """Public callables and properties defined on the class itself (deprecated aliases live in
    `_DEPRECATED` behind `__getattr__`, so they are not among them)."""
    return sorted(n for n, v in vars(cls).items() if not n.startswith("_")
                  and (callable(v) or isinstance(v, (property, staticmethod, classmethod))))


def test_the_workspace_keeps_at_most_15_public_methods():
    got = _public(Workspace)
    assert len(got) <= 15, got
    assert {"datasets", "dataset", "scan", "verify", "recorded", "cases", "case"} <= set(got)
    assert not set(got) & set(_DEPRECATED)


@pytest.fixture
def two(tmp_path):
    make_tiny_pre(tmp_path, "Dataset777_Tiny")
    make_tiny_pre(tmp_path, "Dataset778_Other")
    return Workspace([str(tmp_path / "nnUNet_preprocessed")], manifest_dir=tmp_path / "m")


def test_dataset_returns_a_handle_with_its_features(two):
    h = two.dataset("777")
    assert isinstance(h, DatasetHandle) and h.name == "Dataset777_Tiny" and h.id == 777
    assert h.preprocessed is not None and h.raw is None and h.layout in two.datasets
    assert {c.dataset for c in h.cases()} == {"Dataset777_Tiny"}
    assert h.case("case_0").case == "case_0"
    assert h.label_names() and h.dataset_json() == h.preprocessed / "dataset.json"
    [action] = h.splits.plan_rebalance()
    assert action.dataset == "Dataset777_Tiny"
    assert all(a.dataset == "Dataset777_Tiny" for a in h.repair.plan())
    for feature in (h.splits, h.repair, h.train, h.evaluate, h.submit):
        assert "Dataset777_Tiny" in repr(feature)
    with pytest.raises(dataguard.DataguardError, match="name one"):
        two.dataset()
    with pytest.raises(dataguard.DataguardError, match="have: Dataset77"):
        two.dataset("Dataset999_Nope")


def test_scan_dataset_uses_this_workspace_and_keeps_last(two, monkeypatch):
    made = []
    monkeypatch.setattr(Workspace, "__init__", lambda *a, **k: made.append(a))   # no second Workspace
    res = two._scan_dataset(two.datasets[0])
    assert made == [] and list(res.views) == ["Dataset777_Tiny"] and two.last is None


def test_old_methods_warn_and_delegate(two):
    two.scan()
    with pytest.warns(DeprecationWarning, match=r"ws\.dataset\(name\)\.splits\.plan_rebalance"):
        old = two.plan_rebalance("777")
    assert old == two.dataset("777").splits.plan_rebalance()
    with pytest.warns(DeprecationWarning, match=r"ws\.repair\.plan"):
        assert two.plan() == two.repair.plan()
    with pytest.warns(DeprecationWarning, match=r"ws\.repair\.run"):
        run = two.repair(dry_run=True)
    assert run.after is None
    with pytest.warns(DeprecationWarning):
        assert two.label_names("778") == two.dataset("778").label_names()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two.repair.plan()                           # the new spelling never warns
    with pytest.raises(AttributeError):
        two.no_such_method  # noqa: B018
