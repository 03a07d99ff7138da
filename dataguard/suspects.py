"""One suspect annotation: what every audit returns and every face renders."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Suspect:
    """A case's annotation of one label, scored by how unlike it is to what is expected.
    `score` is comparable within one source ('data' or 'models'); higher is more suspect.
    `reasons` are short sentences, the strongest first; `slice` is the axis-0 (z) index of
    the slice worth looking at, in nnU-Net's array order, when known."""
    case: str
    label: int
    name: str
    score: float
    source: str                       # "data" | "models"
    reasons: list[str] = field(default_factory=list)
    slice: int | None = None
    figures: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["score"] = round(float(self.score), 4)
        return d


def ranked(suspects: list[Suspect]) -> list[Suspect]:
    """Most suspect first; ties by case and label, so the order is reproducible."""
    return sorted(suspects, key=lambda s: (-s.score, s.case, s.label))


def per_case(suspects: list[Suspect]) -> dict[str, float]:
    """One score per case: its most suspect label's."""
    out: dict[str, float] = {}
    for s in suspects:
        out[s.case] = max(out.get(s.case, float("-inf")), s.score)
    return out


DATA_SCALE = 4.0     # a data-alone score of 4 (DG406's info threshold) is 1 - 1/e ~ 0.63 here


def combined(data: list[Suspect], models: list[Suspect]) -> list[Suspect]:
    """Both audits' evidence in one ranking, source 'both': per (case, label), the data-alone
    score mapped to [0, 1) as 1 - exp(-score / DATA_SCALE) and the models' score (already in
    [0, 1]) joined as independent evidence, 1 - (1 - d)(1 - m): an annotation either audit is
    sure of ranks high, one both doubt ranks higher. Reasons: the stronger source's first. A
    pair only one audit scored keeps that one's evidence."""
    import math

    by: dict[tuple[str, int], dict[str, Suspect]] = {}
    for s in data:
        by.setdefault((s.case, s.label), {})["data"] = s
    for s in models:
        by.setdefault((s.case, s.label), {})["models"] = s
    out = []
    for (case, label), got in by.items():
        d, m = got.get("data"), got.get("models")
        pd = 1 - math.exp(-max(d.score, 0.0) / DATA_SCALE) if d else 0.0
        pm = min(max(m.score, 0.0), 1.0) if m else 0.0
        first, second = (d, m) if pd >= pm else (m, d)
        first = first or second
        reasons = list(first.reasons) + [r for r in (second.reasons if second and second is not first else [])
                                         if r not in first.reasons]
        out.append(Suspect(case, label, first.name, 1 - (1 - pd) * (1 - pm), "both", reasons[:3],
                           first.slice if first.slice is not None else (second.slice if second else None),
                           {"data": round(pd, 4), "models": round(pm, 4)}))
    return ranked(out)
