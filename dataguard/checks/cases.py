"""Dataset-level checks over preprocessed cases: DG104 (mixed endings), DG206–DG209.

These run in the main process on the per-file results (fresh or from the manifest),
so they cost no file reads.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

from ..errors import SplitError
from ..findings import Finding, Fix, finding
from ..folds import SPLITS_NAME, load_splits
from .base import FileResult, FileTask

SPLITS_REL = f"preprocessed/{SPLITS_NAME}"


@dataclass
class DatasetView:
    """Everything a dataset-level check may look at (no file I/O needed)."""
    name: str
    tasks: list[FileTask]
    results: dict[str, FileResult]
    meta: dict
    plans: dict[str, dict] = field(default_factory=dict)       # config folder name -> plans section
    config_names: list[str] = field(default_factory=list)
    snapshots: dict[str, dict] = field(default_factory=dict)   # manifest snapshots, updated in place
    has_raw: bool = False
    raw_root: str | None = None
    preprocessed_root: str | None = None
    groups: dict[str, str] | None = None    # case -> patient, when a rule is remembered (DG506)

    # results of the case groupings below, computed once per view: several dataset checks ask
    # (30,000 files: ~50 ms each time). Callers treat them as read-only.
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def splits(self) -> list[dict[str, list[str]]] | SplitError | None:
        """The dataset's preprocessed/splits_final.json, read and validated once per view (the
        split check, the case list and the faces all ask): its folds, the SplitError that says
        why nnU-Net cannot use it, or None when the scan found none."""
        if "splits" not in self._memo:
            path = next((t.path for t in self.tasks if t.rel == SPLITS_REL), None)
            try:
                self._memo["splits"] = None if path is None else load_splits(path)
            except SplitError as e:
                self._memo["splits"] = e
        return self._memo["splits"]

    def config_cases(self) -> dict[str, dict[str, list[FileTask]]]:
        """config folder -> case -> its files (files with a result only). Cached: read-only."""
        out = self._memo.get("config_cases")
        if out is None:
            out = self._memo["config_cases"] = self._config_cases()
        return out

    def _config_cases(self) -> dict[str, dict[str, list[FileTask]]]:
        out: dict[str, dict[str, list[FileTask]]] = {c: defaultdict(list) for c in self.config_names}
        results = self.results
        for t in self.tasks:
            if t.where == "config" and t.case is not None and t.rel in results:
                cfg = t.rel.split("/", 2)[1]
                cases = out.get(cfg)
                if cases is None:
                    cases = out[cfg] = defaultdict(list)
                cases[t.case].append(t)
        return out

    def raw_cases(self) -> dict[str, list[FileTask]]:
        """Training cases of the raw dataset and their image/label files. Cached: read-only."""
        out = self._memo.get("raw_cases")
        if out is None:
            out = self._memo["raw_cases"] = self._raw_cases()
        return out

    def _raw_cases(self) -> dict[str, list[FileTask]]:
        out: dict[str, list[FileTask]] = defaultdict(list)
        results = self.results
        for t in self.tasks:
            if t.where == "raw" and (t.kind == "image" or t.kind == "label") and t.rel in results \
                    and t.rel.split("/", 2)[1] in ("imagesTr", "labelsTr"):
                out[t.case].append(t)
        explicit = self.meta.get("dataset")
        if isinstance(explicit, dict):
            for case in explicit:
                out.setdefault(case, [])
        return out


def _role(t: FileTask) -> str:
    name = t.rel.rsplit("/", 1)[-1]
    if name.endswith("_seg.b2nd"):
        return "b2nd_seg"
    if name.endswith("_seg.npy"):
        return "npy_seg"
    return {"npz": "npz", "npy": "npy", "b2nd": "b2nd", "pkl": "pkl"}[t.kind]


def case_completeness(view: DatasetView) -> list[Finding]:
    out = []
    for cfg, cases in view.config_cases().items():
        families = defaultdict(int)
        for case, files in sorted(cases.items()):
            roles = {_role(t): t for t in files}
            where = f"preprocessed/{cfg}/{case}"
            problems = []
            has_data = any(r in roles for r in ("npz", "b2nd", "npy"))
            if has_data and "pkl" not in roles:
                problems.append("data without its .pkl properties")
            if "pkl" in roles and not has_data and "b2nd_seg" not in roles and "npy_seg" not in roles:
                problems.append(".pkl without any data file")
            if ("b2nd" in roles) != ("b2nd_seg" in roles):
                problems.append(".b2nd without _seg.b2nd" if "b2nd" in roles else "_seg.b2nd without .b2nd")
            if ("npy" in roles) != ("npy_seg" in roles):
                problems.append("half-unpacked: .npy without _seg.npy" if "npy" in roles
                                else "half-unpacked: _seg.npy without .npy")
            if ("npy" in roles or "npy_seg" in roles) and "npz" not in roles:
                problems.append("unpacked .npy without its .npz")
            if "npz" in roles:
                npz_time = view.results[roles["npz"].rel].mtime_ns
                stale = [r for r in ("npy", "npy_seg") if r in roles
                         and view.results[roles[r].rel].mtime_ns < npz_time]
                if stale:
                    problems.append("stale .npy older than the .npz next to it (nnU-Net would train on the old arrays)")
            for p in problems:
                out.append(finding("DG206", where, f"incomplete case: {p}", case=case, fix=Fix.REPREPROCESS))
            if "npz" in roles:
                families[".npz"] += 1
            if "b2nd" in roles or "b2nd_seg" in roles:
                families[".b2nd"] += 1
        if len(families) > 1:
            desc = " and ".join(f"{k} ({v} cases)" for k, v in sorted(families.items()))
            out.append(finding("DG104", f"preprocessed/{cfg}",
                               f"folder mixes {desc}; nnU-Net cannot tell which dataset format to use"))
    return out


def _sig(pairs) -> str:
    return hashlib.blake2b(json.dumps(sorted(pairs)).encode(), digest_size=12).hexdigest()


def staleness(view: DatasetView) -> list[Finding]:
    """DG209: raw inputs or plans changed (by content) after a case was preprocessed.

    The manifest keeps, per preprocessed case, the raw hashes and plans hash seen when
    the case's own files were last seen to change. Raw or plans moving on while the
    case stays the same means the case is stale.
    """
    if not view.has_raw:
        return []
    raw = view.raw_cases()
    out = []
    for cfg, cases in view.config_cases().items():
        plans_sig = _sig([("plans", json.dumps(view.plans.get(cfg), sort_keys=True))])
        for case, files in sorted(cases.items()):
            if case not in raw:
                continue
            pre_sig = _sig((t.rel, view.results[t.rel].blake3) for t in files)
            raw_sig = _sig((t.rel, view.results[t.rel].blake3) for t in raw[case])
            key = f"{cfg}/{case}"
            snap = view.snapshots.get(key)
            if snap is None or snap.get("pre") != pre_sig:
                view.snapshots[key] = {"pre": pre_sig, "raw": raw_sig, "plans": plans_sig}
                continue
            what = []
            if snap.get("raw") != raw_sig:
                what.append("raw image/label content changed")
            if snap.get("plans") != plans_sig:
                what.append(f"plans for {cfg} changed")
            if what:
                out.append(finding("DG209", f"preprocessed/{cfg}/{case}",
                                   f"stale: {' and '.join(what)} since this case was preprocessed",
                                   case=case, fix=Fix.REPREPROCESS))
    return out


def case_labels(view: DatasetView) -> dict[str, set[int]]:
    """Which labels each training case contains, without decompressing anything new.

    Raw label files (facts `seg_values`, recorded by the raw checks) win; otherwise the
    `.pkl` `class_locations` of the first configuration folder that has the case.
    Background (0) and the -1 marker are left out. Cached per view: treat as read-only.
    """
    memo = getattr(view, "_memo", None)
    if memo is not None and "case_labels" in memo:
        return memo["case_labels"]
    out = _case_labels(view)
    if memo is not None:
        memo["case_labels"] = out
    return out


def _case_labels(view: DatasetView) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for t in view.tasks:
        r = view.results.get(t.rel)
        if r is None or t.case is None:
            continue
        if t.where == "raw" and t.rel.startswith("raw/labelsTr/") and "seg_values" in r.facts:
            out[t.case] = {int(v) for v in r.facts["seg_values"] if int(v) > 0}
    for t in view.tasks:
        r = view.results.get(t.rel)
        if r is None or t.case is None or t.case in out or t.where != "config" or t.kind != "pkl":
            continue
        labels = r.facts.get("labels_present")
        if labels is not None:
            out[t.case] = {int(v) for v in labels if int(v) > 0}
    return out
