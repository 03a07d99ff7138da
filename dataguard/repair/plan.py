"""Findings → repair actions. Pure: reads the ScanResult, touches no file.

One action per thing to fix: a file to quarantine, a (configuration, case) to rebuild
from raw, a raw label to cast, a dataset's splits to regenerate. An action that cannot
be carried out carries the reason (`blocked`), so the plan explains itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..checks.files import config_file_kind
from ..checks.splits import is_predicted
from ..findings import Finding, Fix, Severity, code_matches

# raw problems that make re-preprocessing from raw pointless or impossible
RAW_BLOCKERS = ("DG103", "DG105", "DG302", "DG303", "DG304", "DG402")


@dataclass
class Action:
    kind: str                       # quarantine | re-preprocess | cast | reorient | regenerate-splits
    dataset: str
    target: str                     # raw/... or preprocessed/... (file, or config/case)
    case: str | None = None
    config: str | None = None
    findings: list[Finding] = field(default_factory=list)
    blocked: str | None = None      # why it cannot be done (then it is skipped)
    files: list[str] = field(default_factory=list)   # existing files it will move aside or rewrite

    @property
    def codes(self) -> str:
        return ",".join(sorted({f.code for f in self.findings}))

    def describe(self) -> str:
        if self.kind == "re-preprocess":
            return f"rebuild case {self.case} in {self.config} from raw (old files to quarantine)"
        if self.kind == "quarantine":
            return "move to quarantine"
        if self.kind == "cast":
            return "rewrite label with an unsigned integer type (original to quarantine)"
        if self.kind == "reorient":
            return "reorient the case's images and label to the training majority (originals to quarantine)"
        return "write stratified splits (previous file kept as backup)"


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
            add(("cast", f.dataset, f.path), kind="cast", dataset=f.dataset, target=f.path,
                case=f.case).findings.append(f)
        elif f.fix == Fix.REORIENT and f.case:
            add(("reorient", f.dataset, f.case), kind="reorient", dataset=f.dataset, target=f.path,
                case=f.case).findings.append(f)
        elif f.fix == Fix.REGENERATE_SPLITS:
            add(("splits", f.dataset), kind="regenerate-splits", dataset=f.dataset,
                target="preprocessed/splits_final.json").findings.append(f)
        elif f.fix == Fix.REPREPROCESS or (f.code == "DG205" and f.case and has_raw.get(f.dataset)):
            cfg = _config_of(f.path)
            if cfg is None or f.case is None:
                continue
            a = add(("rebuild", f.dataset, cfg, f.case), kind="re-preprocess", dataset=f.dataset,
                    target=f"preprocessed/{cfg}/{f.case}", case=f.case, config=cfg)
            a.findings.append(f)
        elif f.fix == Fix.QUARANTINE:
            if f.code == "DG208":   # an orphan case: all its files
                cfg = _config_of(f.path)
                add(("orphan", f.dataset, cfg, f.case), kind="quarantine", dataset=f.dataset,
                    target=f.path, case=f.case, config=cfg).findings.append(f)
            else:
                add(("quarantine", f.dataset, f.path), kind="quarantine", dataset=f.dataset,
                    target=f.path, case=f.case).findings.append(f)
    _rebuild_after_quarantine(actions, result, has_raw)
    for a in actions.values():
        if a.kind == "re-preprocess":
            if not has_raw.get(a.dataset):
                a.blocked = "no raw dataset found (set nnUNet_raw or keep nnUNet_raw/ next to nnUNet_preprocessed/)"
            elif (a.dataset, a.case) in raw_errors:
                errs = raw_errors[(a.dataset, a.case)]
                a.blocked = "raw case is broken: " + "; ".join(f"{e.code} {e.path.rsplit('/', 1)[-1]}" for e in errs[:3])
    for a in actions.values():
        a.files = _files_touched(a, getattr(result, "views", {}).get(a.dataset))
    order = {"cast": 0, "reorient": 0, "quarantine": 1, "re-preprocess": 2, "regenerate-splits": 3}
    return sorted(actions.values(), key=lambda a: (order[a.kind], a.dataset, a.target))


def _rebuild_after_quarantine(actions: dict, result, has_raw: dict) -> None:
    """A quarantined file named like a case file leaves that case incomplete: rebuild it in
    the same run, so one scan before and one after are enough."""
    for a in [a for a in actions.values() if a.kind == "quarantine" and a.config is None]:
        cfg = _config_of(a.target)
        if cfg is None or not has_raw.get(a.dataset) or a.target.count("/") != 2:
            continue
        case = config_file_kind(a.target.rsplit("/", 1)[-1])[1]
        view = getattr(result, "views", {}).get(a.dataset)
        if case is None or view is None or case not in view.raw_cases():
            continue
        key = ("rebuild", a.dataset, cfg, case)
        if key not in actions:
            actions[key] = Action(kind="re-preprocess", dataset=a.dataset, target=f"preprocessed/{cfg}/{case}",
                                  case=case, config=cfg, findings=list(a.findings))


def _files_touched(a: Action, view) -> list[str]:
    """The dataset's current files an action moves aside or replaces (from the scan, no I/O)."""
    if a.kind == "reorient":
        return sorted(t.rel for t in (view.tasks if view is not None else ()) if t.case == a.case
                      and t.where == "raw" and t.rel.split("/")[1] in ("imagesTr", "labelsTr")) or [a.target]
    if a.kind in ("cast", "regenerate-splits") or (a.kind == "quarantine" and a.config is None):
        return [a.target]
    if view is None:
        return []
    prefix = f"preprocessed/{a.config}/"
    return sorted(t.rel for t in view.tasks
                  if t.case == a.case and t.where == "config" and t.rel.startswith(prefix)
                  and t.rel in view.results)
