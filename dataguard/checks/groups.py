"""Patients: which cases belong together, and DG506 when one is on both sides of a fold.

Several scans of one patient (follow-ups, both kidneys, left and right) look alike. When
cross-validation trains on one and validates on another, its Dice is about a patient it has
seen, and model selection believes it. nnU-Net's default split knows nothing of patients.

A case -> patient map comes from a file (CSV `case,patient` with or without a header, or JSON
`{"case": "patient"}` / `[{"case": ..., "patient": ...}]`) or from a regular expression over
case ids (`patient(\\d+)_`: the first group, else the whole match). Cases the rule does not
name are their own patient. The rule is remembered per dataset in the manifest folder
(`<Dataset>.groups.json`), so later commands use it without the flag; this module only
parses and judges, the engine stores.
"""
from __future__ import annotations

import csv
import io
import json
import re

from ..errors import UsageError
from ..findings import Finding, finding

MAX_GROUP_FILE = 16 << 20      # a case -> patient table; anything larger is not one
KEYS = ("patient", "group", "subject")


def parse_group_file(text: str, name: str = "groups") -> dict[str, str]:
    """case -> patient from a CSV or JSON text (see the module's docstring)."""
    s = text.lstrip("\ufeff").strip()
    if not s:
        raise UsageError(f"{name}: empty")
    if s[0] in "[{":
        try:
            doc = json.loads(s)
        except ValueError as e:
            raise UsageError(f"{name}: not valid JSON: {e}") from None
        if isinstance(doc, dict) and all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in doc.items()):
            return {k: str(v) for k, v in doc.items()}
        if isinstance(doc, list):
            out = {}
            for row in doc:
                key = next((k for k in KEYS if isinstance(row, dict) and k in row), None)
                if key is None or not isinstance(row.get("case"), str):
                    raise UsageError(f"{name}: each entry must be {{\"case\": ..., \"patient\": ...}}, got "
                                     f"{str(row)[:60]}")
                out[row["case"]] = str(row[key])
            return out
        raise UsageError(f"{name}: expected {{\"case\": \"patient\"}} or a list of {{\"case\", \"patient\"}}")
    rows = [r for r in csv.reader(io.StringIO(s)) if r and any(x.strip() for x in r)]
    if rows and rows[0] and rows[0][0].strip().lower() in ("case", "case_id", "identifier"):
        rows = rows[1:]
    out = {}
    for i, r in enumerate(rows, 1):
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise UsageError(f"{name}: row {i} must be `case,patient`, got {','.join(r)[:60]!r}")
        out[r[0].strip()] = r[1].strip()
    return out


def compile_regex(pattern: str):
    try:
        return re.compile(pattern)
    except re.error as e:
        raise UsageError(f"--group-regex {pattern!r} is not a regular expression: {e}") from None


def regex_groups(pattern: str, cases) -> dict[str, str]:
    """case -> the regex's first group (or whole match) for every case it matches."""
    rx = compile_regex(pattern)
    out = {}
    for c in cases:
        m = rx.search(c)
        if m:
            out[c] = m.group(1) if rx.groups else m.group(0)
    return out


def resolve(rule: dict, cases, file_text: str | None = None) -> dict[str, str]:
    """case -> patient for every case: the rule's answer, else the case itself."""
    cases = sorted(set(cases))
    named: dict[str, str] = {}
    if rule.get("regex"):
        named = regex_groups(rule["regex"], cases)
    elif rule.get("file") is not None:
        named = parse_group_file(file_text or "", rule["file"])
    return {c: named.get(c, c) for c in cases}


def patient_leaks(splits: list[dict], groups: dict[str, str], path: str, which: str = "") -> list[Finding]:
    """DG506: per fold, each patient with cases in both its train and its val set."""
    out = []
    for k, fold in enumerate(splits):
        train: dict[str, list[str]] = {}
        for c in fold.get("train", []):
            train.setdefault(groups.get(c, c), []).append(c)
        val: dict[str, list[str]] = {}
        for c in fold.get("val", []):
            val.setdefault(groups.get(c, c), []).append(c)
        for g in sorted(set(train) & set(val)):
            t, v = sorted(train[g]), sorted(val[g])
            out.append(finding(
                "DG506", path, f"fold {k}{which}: patient {g} is in the train set ({', '.join(t[:4])}"
                f"{'...' if len(t) > 4 else ''}) and in the val set ({', '.join(v[:4])}{'...' if len(v) > 4 else ''}): "
                f"cross-validation scores a patient it trained on", case=v[0],
                help="dataguard splits rebalance --groups ... writes folds that keep each patient in one "
                     "validation set"))
    return out


def grouped(groups: dict[str, str]) -> dict[str, list[str]]:
    """patient -> its cases (sorted)."""
    out: dict[str, list[str]] = {}
    for c, g in sorted(groups.items()):
        out.setdefault(g, []).append(c)
    return out
