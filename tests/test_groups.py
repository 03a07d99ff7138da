"""Patients (DG506): the case -> patient rule, the finding, and grouped rebalancing.

The property test brute-forces small instances: whenever some split keeps every patient in
one validation set and puts every label found in >= k patients into every validation set,
`rebalance_grouped` finds one that does too; and it never splits a patient.
"""
from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataguard
from dataguard.checks.groups import parse_group_file, patient_leaks, regex_groups, resolve
from dataguard.demo.synthetic import write_raw_dataset
from dataguard.errors import UsageError
from dataguard.splits.folds import coverage_gaps, rebalance_grouped


def test_group_files_in_csv_and_json():
    assert parse_group_file("case,patient\na,p1\nb,p1\nc,p2\n") == {"a": "p1", "b": "p1", "c": "p2"}
    assert parse_group_file("a,p1\nb,p2") == {"a": "p1", "b": "p2"}
    assert parse_group_file('{"a": "p1", "b": 7}') == {"a": "p1", "b": "7"}
    assert parse_group_file('[{"case": "a", "patient": "p1"}]') == {"a": "p1"}
    for bad in ("", "a\n", '{"a": [1]}', "[1, 2]", "{not json"):
        with pytest.raises(UsageError):
            parse_group_file(bad)


def test_regex_groups_and_unnamed_cases_are_their_own_patient():
    cases = ["patient01_a", "patient01_b", "patient02_a", "other"]
    assert regex_groups(r"patient(\d+)_", cases) == {"patient01_a": "01", "patient01_b": "01", "patient02_a": "02"}
    assert resolve({"regex": r"patient(\d+)_"}, cases)["other"] == "other"
    with pytest.raises(UsageError, match="regular expression"):
        regex_groups("(", cases)


def test_patient_leaks_name_the_patient_and_both_sides():
    splits = [{"train": ["a1", "b1"], "val": ["a2", "b2"]}, {"train": ["a2", "b2"], "val": ["a1", "b1"]}]
    groups = {"a1": "A", "a2": "A", "b1": "B1", "b2": "B2"}
    found = patient_leaks(splits, groups, "preprocessed/splits_final.json")
    assert [f.code for f in found] == ["DG506", "DG506"]
    assert "patient A" in found[0].message and "a1" in found[0].message and "a2" in found[0].message
    assert patient_leaks(splits, {c: c for c in groups}, "x") == []


def _brute_force_feasible(case_labels, groups, k) -> bool:
    """Is there an assignment of patients to folds (each fold non-empty) covering every label
    found in >= k patients in every fold?"""
    pats = sorted(set(groups.values()))
    labels_of = {p: set().union(*[case_labels[c] for c in case_labels if groups[c] == p]) for p in pats}
    must = {lab for lab in set().union(*labels_of.values()) if sum(lab in labels_of[p] for p in pats) >= k}
    for assign in itertools.product(range(k), repeat=len(pats)):
        if len(set(assign)) < k:
            continue
        folds = [set().union(*[labels_of[p] for p, f in zip(pats, assign) if f == j]) for j in range(k)]
        if all(must <= s for s in folds):
            return True
    return False


@st.composite
def instances(draw):
    n = draw(st.integers(4, 8))
    k = draw(st.integers(2, 3))
    cases = [f"c{i}" for i in range(n)]
    labels = {c: set(draw(st.lists(st.integers(1, 3), max_size=3))) for c in cases}
    n_pat = draw(st.integers(k, n))
    groups = {c: f"p{draw(st.integers(0, n_pat - 1))}" for c in cases}
    return labels, groups, k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_grouped_rebalance_never_splits_a_patient_and_keeps_coverage_when_possible(inst):
    labels, groups, k = inst
    if len(set(groups.values())) < k:
        with pytest.raises(Exception):
            rebalance_grouped(labels, groups, k)
        return
    splits, notes = rebalance_grouped(labels, groups, k)
    assert sorted(c for s in splits for c in s["val"]) == sorted(labels)          # each case validated once
    for s in splits:
        assert set(s["train"]) | set(s["val"]) == set(labels) and not set(s["train"]) & set(s["val"])
        assert s["val"]
    fold_of = {c: i for i, s in enumerate(splits) for c in s["val"]}
    for c in labels:                                                             # no patient split
        assert all(fold_of[d] == fold_of[c] for d in labels if groups[d] == groups[c])
    assert patient_leaks(splits, groups, "x") == []
    if _brute_force_feasible(labels, groups, k):
        pats = {groups[c] for c in labels}
        must = {lab for lab in set().union(*labels.values())
                if len({groups[c] for c in labels if lab in labels[c]}) >= k}
        gaps = {lab for _, lab in coverage_gaps(splits, labels)}
        assert not (must & gaps), (splits, notes, pats)
    else:
        assert notes                                                             # it says what gave way


@pytest.fixture
def grouped_raw(tmp_path):
    """8 raw cases, pairs of them one patient (pt0_a/pt0_b, ...)."""
    ds = write_raw_dataset(tmp_path / "nnUNet_raw", 781, "Patients", n_cases=8, shape=(16, 16, 4))
    for i, p in enumerate(sorted((ds / "imagesTr").glob("*.nii.gz"))):
        new = f"pt{i // 2}_{'ab'[i % 2]}"
        p.rename(p.with_name(f"{new}_0000.nii.gz"))
        lab = ds / "labelsTr" / p.name.replace("_0000.nii.gz", ".nii.gz")
        lab.rename(lab.with_name(f"{new}.nii.gz"))
    return ds


def test_dg506_from_a_remembered_regex_and_a_file(grouped_raw, tmp_path):
    pre = tmp_path / "nnUNet_preprocessed" / grouped_raw.name
    pre.mkdir(parents=True)
    (pre / "dataset.json").write_text((grouped_raw / "dataset.json").read_text())
    (pre / "nnUNetPlans.json").write_text(json.dumps({"plans_name": "nnUNetPlans", "configurations": {}}))
    cases = sorted(p.name[: -len(".nii.gz")] for p in (grouped_raw / "labelsTr").glob("*.nii.gz"))
    splits = [{"train": [c for c in cases if c != v], "val": [v]} for v in cases[:2]]    # pt0_a / pt0_b apart
    (pre / "splits_final.json").write_text(json.dumps(splits))
    ws = dataguard.Workspace([str(grouped_raw.parent.parent)], manifest_dir=tmp_path / "m")
    assert not [f for f in ws.scan().findings if f.code == "DG506"]          # no rule: nothing to judge
    ws.dataset().splits.set_groups(regex=r"(pt\d+)_")
    found = [f for f in ws.scan().findings if f.code == "DG506"]
    assert len(found) == 2 and all("patient pt0" in f.message for f in found)
    again = dataguard.Workspace([str(grouped_raw.parent.parent)], manifest_dir=tmp_path / "m")
    assert [f.code for f in again.scan().findings if f.code == "DG506"] == ["DG506", "DG506"]   # remembered
    table = tmp_path / "patients.csv"
    table.write_text("case,patient\n" + "".join(f"{c},{c}\n" for c in cases))      # every case its own patient
    again.dataset().splits.set_groups(file=table)
    assert not [f for f in again.scan().findings if f.code == "DG506"]
    table.write_text("case,patient\npt0_a,X\npt0_b,X\n")                          # the file edited: read again
    assert len([f for f in again.scan().findings if f.code == "DG506"]) == 2


def test_splits_rebalance_with_a_group_regex_keeps_patients_together(grouped_raw, tmp_path, capsys):
    from dataguard.cli import main

    pre = tmp_path / "nnUNet_preprocessed" / grouped_raw.name
    pre.mkdir(parents=True)
    (pre / "dataset.json").write_text((grouped_raw / "dataset.json").read_text())
    (pre / "nnUNetPlans.json").write_text(json.dumps({"plans_name": "nnUNetPlans", "configurations": {}}))
    code = main(["splits", "rebalance", str(tmp_path), "--folds", "2", "--group-regex", r"(pt\d+)_",
                 "--manifest-dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 0 and "patients: 4 for 8 cases" in err, err
    splits = json.loads((pre / "splits_final.json").read_text())
    for fold in splits:
        pats_val = {c.split("_")[0] for c in fold["val"]}
        pats_train = {c.split("_")[0] for c in fold["train"]}
        assert not pats_val & pats_train
    # remembered: a plain scan now judges the written splits by patient, and finds nothing
    ws = dataguard.Workspace([str(tmp_path)], manifest_dir=tmp_path / "m")
    assert not [f for f in ws.scan().findings if f.code == "DG506"] and ws.dataset().splits.groups()["pt3_b"] == "pt3"
