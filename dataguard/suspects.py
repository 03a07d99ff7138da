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
