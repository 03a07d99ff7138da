"""Findings → repair actions. Pure: reads the ScanResult, touches no file.

One action per thing to fix: a file to quarantine, a (configuration, case) to rebuild
from raw, a raw label to cast, a case to reorient, a dataset's splits to regenerate. An
action that cannot be carried out carries the reason (`blocked`), so the plan explains
itself. What each kind does, its place in the plan and its description come from its
handler in `repair.actions.HANDLERS`; at plan time each handler puts what it will need
from the scan into `action.payload`, so applying a plan needs no ScanResult.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..checks.files import config_file_kind
from ..checks.splits import is_predicted
from ..findings import ActionKind, Finding, Fix, Severity, code_matches
from .actions import HANDLERS, handler

# raw problems that make re-preprocessing from raw pointless or impossible
RAW_BLOCKERS = ("DG103", "DG105", "DG302", "DG303", "DG304", "DG402")


@dataclass
class Action:
    kind: ActionKind                # a str enum: "quarantine", "re-preprocess", ... (a string is accepted)
    dataset: str
    target: str                     # raw/... or preprocessed/... (file, or config/case)
    case: str | None = None
    config: str | None = None
    findings: list[Finding] = field(default_factory=list)
    blocked: str | None = None      # why it cannot be done (then it is skipped)
    files: list[str] = field(default_factory=list)   # existing files it will move aside or rewrite
    payload: dict[str, Any] = field(default_factory=dict)   # what its handler needs from the scan

    def __post_init__(self) -> None:
        self.kind = handler(self.kind).KIND          # an unknown kind raises ValueError here

    @property
    def codes(self) -> str:
        return ",".join(sorted({f.code for f in self.findings}))

    def describe(self) -> str:
        return HANDLERS[self.kind].describe(self)


def _config_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if parts[0] == "preprocessed" and len(parts) >= 3 else None


def plan_repairs(result, *, select: list[str] | None = None, cases: list[str] | None = None,
                 has_raw: dict[str, bool] | None = None) -> list["Action"]:
    """Turn a scan's findings into actions (deduplicated, ordered: cast → quarantine → rebuild → splits)."""
    # nnU-Net's predicted default split is only written when asked for (--select DG5):
    # a repair of broken files must not add a splits file the user never had
    fs = [f for f in result.findings if f.fix is not None
          and (not select or code_matches(f.code, select))
          and (not cases or f.case in cases)
          and (select or not is_predicted(f))]
    has_raw = has_raw if has_raw is not None else {d.name: d.raw is not None for d in result.datasets}
    raw_errors: dict[tuple[str, str], list[Finding]] = {}
    for f in result.findings:
        if f.path.startswith("raw/") and f.case and f.severity == Severity.ERROR and (
                f.code in RAW_BLOCKERS or (f.code == "DG401" and f.fix is None)):
            raw_errors.setdefault((f.dataset, f.case), []).append(f)
    actions: dict[tuple, Action] = {}

    def add(key, **kw):
        a = actions.get(key)
        if a is None:
            a = actions[key] = Action(**kw)
        return a

    for f in fs:
        if f.fix == Fix.CAST:
            add(("cast", f.dataset, f.path), kind=ActionKind.CAST, dataset=f.dataset, target=f.path,
                case=f.case).findings.append(f)
        elif f.fix == Fix.REORIENT and f.case:
            add(("reorient", f.dataset, f.case), kind=ActionKind.REORIENT, dataset=f.dataset, target=f.path,
                case=f.case).findings.append(f)
        elif f.fix == Fix.REGENERATE_SPLITS:
            add(("splits", f.dataset), kind=ActionKind.REGENERATE_SPLITS, dataset=f.dataset,
                target="preprocessed/splits_final.json").findings.append(f)
        elif f.fix == Fix.REPREPROCESS or (f.code == "DG205" and f.case and has_raw.get(f.dataset)):
            cfg = _config_of(f.path)
            if cfg is None or f.case is None:
                continue
            a = add(("rebuild", f.dataset, cfg, f.case), kind=ActionKind.REPREPROCESS, dataset=f.dataset,
                    target=f"preprocessed/{cfg}/{f.case}", case=f.case, config=cfg)
            a.findings.append(f)
        elif f.fix == Fix.QUARANTINE:
            if f.code == "DG208":   # an orphan case: all its files
                cfg = _config_of(f.path)
                add(("orphan", f.dataset, cfg, f.case), kind=ActionKind.QUARANTINE, dataset=f.dataset,
                    target=f.path, case=f.case, config=cfg).findings.append(f)
            else:
                add(("quarantine", f.dataset, f.path), kind=ActionKind.QUARANTINE, dataset=f.dataset,
                    target=f.path, case=f.case).findings.append(f)
    _rebuild_after_quarantine(actions, result, has_raw)
    for a in actions.values():
        if a.kind == ActionKind.REPREPROCESS:
            if not has_raw.get(a.dataset):
                a.blocked = "no raw dataset found (set nnUNet_raw or keep nnUNet_raw/ next to nnUNet_preprocessed/)"
            elif (a.dataset, a.case) in raw_errors:
                errs = raw_errors[(a.dataset, a.case)]
                a.blocked = "raw case is broken: " + "; ".join(f"{e.code} {e.path.rsplit('/', 1)[-1]}" for e in errs[:3])
    for a in actions.values():
        h = HANDLERS[a.kind]
        a.files = h.files(a, getattr(result, "views", {}).get(a.dataset))
        if not a.blocked:
            _prepare(a, result)
    return sorted(actions.values(), key=lambda a: (HANDLERS[a.kind].ORDER, a.dataset, a.target))


def prepare(actions: list[Action], result) -> None:
    """Fill in what each action's handler needs from `result` where a plan made elsewhere
    (an Action built by hand) lacks it; plan_repairs does this itself."""
    for a in actions:
        if not a.blocked:
            _prepare(a, result)


def _prepare(a: Action, result) -> None:
    """A handler that cannot take its payload from the scan leaves it out and says why in
    payload["unprepared"]: applying that action then fails (rolled back) with the reason,
    as it did when apply derived it, and the rest of the plan still runs."""
    try:
        HANDLERS[a.kind].prepare(a, result)
    except Exception as e:  # noqa: BLE001 - reported when the action is applied
        a.payload["unprepared"] = f"{type(e).__name__}: {e}"


def _rebuild_after_quarantine(actions: dict, result, has_raw: dict) -> None:
    """A quarantined file named like a case file leaves that case incomplete: rebuild it in
    the same run, so one scan before and one after are enough."""
    for a in [a for a in actions.values() if a.kind == ActionKind.QUARANTINE and a.config is None]:
        cfg = _config_of(a.target)
        if cfg is None or not has_raw.get(a.dataset) or a.target.count("/") != 2:
            continue
        case = config_file_kind(a.target.rsplit("/", 1)[-1])[1]
        view = getattr(result, "views", {}).get(a.dataset)
        if case is None or view is None or case not in view.raw_cases():
            continue
        key = ("rebuild", a.dataset, cfg, case)
        if key not in actions:
            actions[key] = Action(kind=ActionKind.REPREPROCESS, dataset=a.dataset, target=f"preprocessed/{cfg}/{case}",
                                  case=case, config=cfg, findings=list(a.findings))

