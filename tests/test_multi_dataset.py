"""Several datasets in one scan: each gets its own results, whatever the order or the way named.

Two datasets share case names (`case_0`..`case_2`, as a dataset and its fixed copy do)
but differ in content: A is clean, B holds a truncated `.pkl` and a pickle that
references `posix.system`. Results were once keyed by the dataset-relative path only,
so `scan A B` reported B's faults in both and `scan B A` in neither.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

import dataguard
from conftest import make_tiny_pre
from dataguard.cli import main

A, B = "Dataset001_Heart", "Dataset002_HeartCopy"


class Evil:
    """Pickles as a call to os.system: a scan must report it, never run it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def _dataset(root: Path, name: str) -> Path:
    return make_tiny_pre(root, name)


@pytest.fixture
def two(tmp_path):
    root = tmp_path / "data"
    a, b = _dataset(root, A), _dataset(root, B)
    cfg = b / "nnUNetPlans_3d_fullres"
    good = (cfg / "case_1.pkl").read_bytes()
    (cfg / "case_1.pkl").write_bytes(good[: len(good) // 2])       # truncated: DG204
    (cfg / "case_2.pkl").write_bytes(pickle.dumps(Evil()))          # posix.system: DG205
    return root, a, b


def _by_dataset(result) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set] = {A: set(), B: set()}
    for f in result.findings:
        out[f.dataset].add((f.code, f.path))
    return out


EXPECTED_B = {("DG204", "preprocessed/nnUNetPlans_3d_fullres/case_1.pkl"),
              ("DG205", "preprocessed/nnUNetPlans_3d_fullres/case_2.pkl")}


def _targets(how: str, root: Path, a: Path, b: Path, monkeypatch) -> list[str] | None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    if how == "A B":
        return [str(a), str(b)]
    if how == "B A":
        return [str(b), str(a)]
    if how == "parent root":
        return [str(root / "nnUNet_preprocessed")]
    monkeypatch.setenv("nnUNet_preprocessed", str(root / "nnUNet_preprocessed"))
    return None        # env vars only


ORDERS = ["A B", "B A", "parent root", "env vars only"]


@pytest.mark.parametrize("how", ORDERS)
@pytest.mark.parametrize("jobs", [1, 2])
def test_each_dataset_gets_its_own_findings(two, tmp_path, monkeypatch, how, jobs):
    root, a, b = two
    ws = dataguard.Workspace(_targets(how, root, a, b, monkeypatch), manifest_dir=tmp_path / "m", jobs=jobs)
    res = ws.scan()
    assert {d.name for d in res.datasets} == {A, B}
    got = _by_dataset(res)
    assert got[A] == set(), f"clean dataset got {got[A]}"
    assert got[B] == EXPECTED_B
    # a rescan reuses the manifests: still right, nothing read again
    again = ws.scan()
    assert _by_dataset(again) == got and again.stats.checked == 0


@pytest.mark.parametrize("how", ORDERS)
def test_manifests_record_each_datasets_own_results(two, tmp_path, monkeypatch, how):
    root, a, b = two
    dataguard.Workspace(_targets(how, root, a, b, monkeypatch), manifest_dir=tmp_path / "m").scan()
    man = {n: json.loads((tmp_path / "m" / f"{n}.json").read_text()) for n in (A, B)}

    def recorded(doc, rel):
        return {f["code"] for c in doc["files"][rel]["checks"].values() for f in c["findings"]}

    for rel in ("preprocessed/nnUNetPlans_3d_fullres/case_1.pkl", "preprocessed/nnUNetPlans_3d_fullres/case_2.pkl"):
        assert recorded(man[A], rel) == set(), rel
    assert recorded(man[B], "preprocessed/nnUNetPlans_3d_fullres/case_1.pkl") == {"DG204"}
    assert recorded(man[B], "preprocessed/nnUNetPlans_3d_fullres/case_2.pkl") == {"DG205"}
    # the two datasets' identical files have identical hashes, their changed files not
    a_files, b_files = man[A]["files"], man[B]["files"]
    assert a_files["preprocessed/nnUNetPlans_3d_fullres/case_0.pkl"]["blake3"] == \
        b_files["preprocessed/nnUNetPlans_3d_fullres/case_0.pkl"]["blake3"]
    assert a_files["preprocessed/nnUNetPlans_3d_fullres/case_1.pkl"]["blake3"] != \
        b_files["preprocessed/nnUNetPlans_3d_fullres/case_1.pkl"]["blake3"]


@pytest.mark.parametrize("how", ORDERS)
def test_repair_plan_touches_only_the_broken_dataset(two, tmp_path, monkeypatch, how):
    root, a, b = two
    ws = dataguard.Workspace(_targets(how, root, a, b, monkeypatch), manifest_dir=tmp_path / "m")
    plan = ws.repair.plan()
    assert plan and {act.dataset for act in plan} == {B}
    kinds = {(act.kind, act.target) for act in plan}
    assert ("quarantine", "preprocessed/nnUNetPlans_3d_fullres/case_2.pkl") in kinds
    rebuild = [act for act in plan if act.kind == "re-preprocess"]
    assert [act.target for act in rebuild] == ["preprocessed/nnUNetPlans_3d_fullres/case_1"]
    assert "no raw dataset" in rebuild[0].blocked


def test_cli_json_keeps_datasets_apart(two, tmp_path, capsys):
    root, a, b = two
    for order in ([a, b], [b, a]):
        rc = main(["scan", *map(str, order), "--format", "json", "--manifest-dir", str(tmp_path / "m"),
                   "--no-progress"])
        doc = json.loads(capsys.readouterr().out)
        assert rc == 1
        assert {(f["dataset"], f["code"]) for f in doc["findings"]} == {(B, "DG204"), (B, "DG205")}
