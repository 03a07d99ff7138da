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
