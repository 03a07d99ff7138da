"""The check registry: every check, the codes it can emit, and where it runs.

`--select/--ignore`, `dataguard explain` and the documentation tests derive from
this one list. Adding a check = one function, one line here, one test pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import cases, rawset, splits


@dataclass(frozen=True)
class Check:
    name: str
    codes: tuple[str, ...]
    scope: str                      # "file" (process pool) or "dataset" (main process)
    doc: str
    run: Callable | None = None     # dataset checks: run(view) -> list[Finding]


REGISTRY: tuple[Check, ...] = (
    Check("junk", ("DG101", "DG102", "DG103", "DG104"), "file",
          "stray files by name and magic: AppleDouble, OS junk, empty data, unexpected files"),
    Check("npz", ("DG201", "DG202", "DG210"), "file",
          "legacy .npz/.npy: every zip member inflated and CRC-checked, keys, dtypes, shapes, values"),
    Check("b2nd", ("DG202", "DG203", "DG210"), "file",
          "blosc2 .b2nd: every chunk decompressed, values summarised"),
    Check("pkl", ("DG204", "DG205"), "file",
          ".pkl properties via a restricted unpickler (never executed)"),
    Check("raw-files", ("DG302", "DG306", "DG401", "DG402", "DG403"), "file",
          "raw images/labels: gzip verified to the end, header, voxels streamed, label dtype and values"),
    Check("dataset-json", ("DG301",), "dataset", "raw dataset.json keys, labels, channels",
          rawset.dataset_json),
    Check("raw-cases", ("DG303", "DG305"), "dataset", "every case has its channels and label; numTraining",
          rawset.case_files),
    Check("raw-geometry", ("DG304",), "dataset", "channels and label agree in shape/spacing/origin/direction",
          rawset.geometry),
    Check("unused-labels", ("DG404",), "dataset", "every declared label occurs somewhere",
          rawset.unused_labels),
    Check("case-completeness", ("DG104", "DG206"), "dataset",
          "each case has all its files; one data format per folder", cases.case_completeness),
    Check("raw-coverage", ("DG207", "DG208"), "dataset",
          "raw training cases vs preprocessed cases", cases.raw_coverage),
    Check("staleness", ("DG209",), "dataset",
          "raw or plans changed after preprocessing (by content hash)", cases.staleness),
    Check("splits", ("DG501", "DG502", "DG503", "DG504"), "dataset",
          "splits_final.json: structure, leakage, unknown/unvalidated cases, labels per fold", splits.check_splits),
)

VERIFY_CODES = ("DG701", "DG702", "DG703")


def dataset_checks() -> list[Check]:
    return [c for c in REGISTRY if c.scope == "dataset"]


def all_codes() -> set[str]:
    return {code for c in REGISTRY for code in c.codes} | set(VERIFY_CODES)
