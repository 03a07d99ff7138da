"""regenerate-splits: write stratified splits_final.json (the previous file kept as backup);
each training case's labels are taken from the scan at plan time (payload "case_labels")."""
from __future__ import annotations

from pathlib import Path

from ...errors import RepairError
from ...findings import ActionKind
from ...fsio import read_json
from ...splits import folds as sp
from ...splits.context import context_from_result
from .base import ApplyContext, Outcome, target_only

KIND = ActionKind.REGENERATE_SPLITS
ORDER = 3
files = target_only


def describe(a) -> str:
    return "write stratified splits (previous file kept as backup)"


def prepare(a, result) -> None:
    """payload["case_labels"]: every training case -> its classes, from the scan's view."""
    ds = next((d for d in getattr(result, "datasets", ()) if d.name == a.dataset), None)
    if ds is None or a.dataset not in (getattr(result, "views", None) or {}):
        return
    a.payload["case_labels"] = context_from_result(result, ds).case_labels


def run(a, ctx: ApplyContext) -> Outcome:
    if "case_labels" not in a.payload:
        raise RepairError(a.payload.get("unprepared") or
                          "regenerating splits needs the case labels from the scan the plan came from "
                          "(plan it with plan_repairs)")
    j = ctx.journals["preprocessed"]
    new = sp.rebalance(a.payload["case_labels"], folds=_current_folds(ctx.ds.preprocessed / "splits_final.json"))
    swept = sp.quarantine_leftovers(j.root / "splits_final.json", journal=j)
    sp.write_splits(j.root / "splits_final.json", new, journal=j, reason=a.codes)
    detail = f"stratified {len(new)}-fold splits written"
    if swept:
        detail += f"; {len(swept)} leftover temp file(s) of an interrupted splits write moved to quarantine"
    return Outcome(a, True, detail, [a.target] + [f"preprocessed/{n}" for n in swept])


def _current_folds(path: Path) -> int:
    try:
        data = read_json(path)
        if isinstance(data, list) and 2 <= len(data) <= 20:
            return len(data)
    except (OSError, ValueError):
        pass
    return 5
