"""DatasetSpec reads dataset.json as nnU-Net's LabelManager does (the oracle), and says what
is malformed instead of raising."""
from __future__ import annotations

import json

import pytest

from dataguard.spec import load_spec, parse_spec

CASES = [
    {"background": 0, "myocardium": 1, "left_ventricle": 2, "right_ventricle": 3},
    {"background": 0, "a": 1, "b": 2, "ignore": 3},
    {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3},          # BraTS-style regions
    {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": [3], "ignore": 4},
    {"background": 0, "lung": 1},
]


@pytest.mark.parametrize("labels", CASES, ids=[",".join(c) for c in CASES])
def test_labels_as_nnunets_label_manager_reads_them(labels):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    order = [1, 2, 3] if any(isinstance(v, list) and len(v) > 1 for v in labels.values()) else None
    doc = {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": 3, "file_ending": ".nii.gz"}
    if order:
        doc["regions_class_order"] = order
    spec = parse_spec(doc)
    lm = LabelManager(labels, order)
    assert spec.problems == ()
    assert spec.has_regions == lm.has_regions
    assert spec.ignore_label == lm.ignore_label
    assert spec.all_labels == [int(x) for x in lm.all_labels]
    assert spec.foreground == [int(x) for x in lm.foreground_labels]
    want_regions = None if not lm.has_regions else [
        tuple(r) if isinstance(r, (list, tuple)) else r for r in lm.foreground_regions]
    assert spec.regions == want_regions


@pytest.mark.parametrize("doc,problem", [
    ({"labels": {"background": 0, "a": "x"}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}, "not an integer"),
    ({"labels": {"a": 1}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}, "no 'background'"),
    ({"labels": {"background": 0, "a": 1, "ignore": 5}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"},
     "highest value (2)"),
    ({"labels": {"background": 0, "w": [1, 2], "c": 2}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"},
     "regions_class_order' is missing"),
    ({"labels": {"background": 0, "a": 2}, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}, "consecutive"),
    ({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"}, "training": []}, "v1 dataset.json"),
    ([1, 2], "must be an object"),
    ({"labels": {"background": 0}, "channel_names": {"1": "CT"}, "file_ending": 3}, "channel indices"),
])
def test_malformed_values_are_problems_never_exceptions(doc, problem):
    spec = parse_spec(doc)
    assert any(problem in p for p in spec.problems), spec.problems


def test_v1_labels_are_understood(tmp_path):
    p = tmp_path / "dataset.json"
    p.write_text(json.dumps({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "tumour"},
                             "training": [], "numTraining": 0}))
    spec = load_spec(p)
    assert spec.version == 1 and spec.foreground_names == {1: "liver", 2: "tumour"} and spec.channels == {0: "CT"}
    assert load_spec(tmp_path / "missing.json").problems


def test_ignore_label_is_no_foreground():
    spec = parse_spec({"labels": {"background": 0, "a": 1, "ignore": 2}, "channel_names": {"0": "CT"},
                       "file_ending": ".nii.gz"})
    assert spec.foreground == [1] and spec.foreground_names == {1: "a"} and spec.ignore_label == 2


# --- what the walk, the checks and the training log read through the spec ----------------------
GOOD = {"channel_names": {"0": "CT"}, "numTraining": 2, "file_ending": ".nii.gz"}


@pytest.mark.parametrize("fe,want", [(".nii.gz", ".nii.gz"), (".png", ".png"), (5, ".nii.gz"), (None, ".nii.gz"),
                                     ("", ".nii.gz"), (".", ".nii.gz"), ("nii", ".nii.gz"), ([".nii.gz"], ".nii.gz")])
def test_file_ending_falls_back_to_nii_gz_and_the_walk_uses_the_same_rule(fe, want):
    from dataguard.engine.walk import file_ending
    from dataguard.spec import file_ending_of

    assert file_ending is file_ending_of
    assert file_ending_of({"file_ending": fe}) == want == parse_spec({**GOOD, "file_ending": fe}).ending
    assert file_ending_of(None) == file_ending_of([1]) == ".nii.gz"


@pytest.mark.parametrize("labels,values", [
    ({"background": 0, "a": 1, "ignore": 2}, (0, 1, 2)),                  # ignore included: it is in the files
    ({"background": 0, "whole": [1, 2], "core": 2}, (0, 1, 2)),           # regions flattened
    ({"background": 0, "a": "1"}, None),                                   # read as 1, but not written as JSON int
    ({"background": 0, "a": 1.0}, None),
    ({"background": 0, "a": [1, None]}, None),
    ({"background": 0, "a": []}, None),
    ({}, None),
])
def test_label_values_are_only_what_is_written_as_json_integers(labels, values):
    from dataguard.engine.walk import declared_labels

    assert parse_spec({**GOOD, "labels": labels}).label_values == values == declared_labels({"labels": labels})


def test_v1_labels_give_no_values_to_judge_label_files_by():
    spec = parse_spec({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"}, "training": []})
    assert spec.label_values is None and spec.loose_labels == ("0", "1")


@pytest.mark.parametrize("value,fixed", [("1", "1"), (1.0, "1"), ([1, "2"], "[1, 2]")])
def test_labels_read_leniently_are_still_a_problem(value, fixed):
    spec = parse_spec({**GOOD, "labels": {"background": 0, "a": value}, "regions_class_order": [1]})
    assert spec.labels["a"] in (1, (1, 2)) and spec.loose_labels == ("a",)
    assert spec.label_problems == (f"label 'a': write {value!r} as JSON integers, {fixed}",)


def test_label_and_region_problems_are_parts_of_problems():
    spec = parse_spec({"channel_names": [], "file_ending": 3, "regions_class_order": "x",
                       "labels": {"background": 0, "w": [1, 2], "c": 2, "ignore": 5}})
    assert set(spec.label_problems) < set(spec.problems) and set(spec.region_problems) < set(spec.problems)
    assert not any("channel" in p or "file_ending" in p for p in spec.label_problems + spec.region_problems)
    assert "the ignore label must be the highest value (3), not 5" in spec.region_problems
    assert not spec.label_problems            # every label is written as JSON integers
    # given but malformed is said as such, not as "missing"
    assert [p for p in spec.region_problems if "regions_class_order" in p] == [
        "'regions_class_order' must list integers, not 'x'"]


def test_region_order_must_have_one_entry_per_region():
    doc = {**GOOD, "labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2, 3]}
    assert parse_spec(doc).region_problems == ("'regions_class_order' has 3 entries for 2 regions",)
    assert parse_spec({**doc, "regions_class_order": [1, 2]}).region_problems == ()


def test_one_value_regions_are_plain_labels_as_in_nnunet():
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    labels = {"background": 0, "b": 2, "a": [1]}
    spec = parse_spec({**GOOD, "labels": labels})
    assert not spec.has_regions and not LabelManager(labels, None).has_regions
    assert spec.problems == ()                          # 0, [1], 2 are consecutive
    assert spec.dice_names == ["a", "b"] and spec.label_values == (0, 1, 2)


@pytest.mark.parametrize("labels", CASES, ids=[",".join(c) for c in CASES])
def test_dice_names_follow_nnunets_order(labels):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    order = [1, 2, 3] if any(isinstance(v, list) and len(v) > 1 for v in labels.values()) else None
    lm = LabelManager(labels, order)
    by_value = {(tuple(v) if isinstance(v, list) else v): k for k, v in labels.items()}
    want = [by_value[tuple(r) if isinstance(r, (list, tuple)) else int(r)]
            for r in (lm.foreground_regions if lm.has_regions else lm.foreground_labels)]
    assert parse_spec({**GOOD, "labels": labels, "regions_class_order": order}).dice_names == want


def test_training_log_names_come_from_the_spec():
    from dataguard.train.logs import label_names_from

    assert label_names_from({"labels": {"background": 0, "b": 2, "a": 1, "ignore": 3}}) == ["a", "b"]
    assert label_names_from({"labels": {"background": 0, "w": [1, 2], "e": 2}}) == ["w", "e"]
    assert label_names_from({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"},
                             "training": []}) == ["liver"]
    assert label_names_from({"labels": "x"}) is None and label_names_from(None) is None


@pytest.mark.parametrize("text", ["--1", "\u00b2", "1" * 5000, "-"])
def test_strings_that_look_numeric_never_raise(text):
    spec = parse_spec({**GOOD, "labels": {"background": 0, "a": text}, "channel_names": {text: "CT"}})
    assert "a" not in spec.labels and any("label 'a'" in p for p in spec.label_problems)


def _dg301(tmp_path, doc) -> list[str]:
    from dataguard.checks.base import FileTask
    from dataguard.checks.cases import DatasetView
    from dataguard.checks.rawset import dataset_json

    p = tmp_path / "dataset.json"
    p.write_text(json.dumps(doc))
    view = DatasetView("d", [FileTask(str(p), "raw/dataset.json", "json", "raw")], {}, doc, has_raw=True)
    return [f"{f.code} {f.message}" for f in dataset_json(view)]


def test_dg301_says_the_spec_s_label_problems(tmp_path):
    msgs = _dg301(tmp_path, {**GOOD, "labels": {"background": 0, "a": "1", "ignore": 1}})
    assert msgs == ["DG301 dataset.json: label 'a': write '1' as JSON integers, 1",
                    "DG312 dataset.json: the ignore label must be the highest value (2), not 1"]
    assert _dg301(tmp_path, {**GOOD, "labels": {"background": 0, "a": 1}}) == []


def test_dg311_names_a_v1_file_and_its_converter(tmp_path):
    msgs = _dg301(tmp_path, {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"},
                             "training": [], "numTraining": 0, "file_ending": ".nii.gz"})
    # the DG301 behind it is the cascade cascades.fold folds into the DG311
    assert msgs[0].startswith("DG311 dataset.json is an nnU-Net v1 file") and msgs[1:] == [
        "DG301 dataset.json: 'channel_names' is missing"]
