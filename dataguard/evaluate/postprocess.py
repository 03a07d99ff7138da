"""Post-processing decided on out-of-fold predictions, as nnU-Net decides it, for any
segmentation (one model's or the ensemble's that `submit` will build).

nnU-Net's `determine_postprocessing` (what `find_best_configuration` writes):
1. keep only the largest connected component of the whole foreground (all labels together);
   kept when the mean foreground Dice rises and no label's mean Dice falls;
2. then, when there is more than one label, for each label in dataset.json's order, keep only
   its largest component (on top of what was kept so far); kept when that label's mean Dice
   rises.
Dice here is nnU-Net's: per case 2tp / (2tp + fp + fn), NaN when the case has neither (a
prediction in a case without the label counts as 0), the reference's ignore label left out;
mean over cases ignoring NaN, foreground mean over labels. Components: every neighbour
touching (26 in 3D, 8 in 2D), every component of the largest size kept (nnU-Net's `acvl_utils`
rule). Removing a label's pieces turns them into background, so no other label's Dice moves:
each case is reduced once to the counts of every variant step 2 could meet, and the
decisions are taken on those counts; nothing is written.

`Decision` is what `submit --postprocess FILE.json` applies, recorded in its manifest.
Regions (overlapping) are not decided here: nnU-Net's order-dependent rule for them would
need the sequential files this module avoids.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from ..checks.resample import components
from ..fsio import atomic_write_text, read_json

FORMAT = "dataguard-postprocessing/1"


def keep_largest(seg, labels, background: int = 0):
    """nnU-Net's remove_all_but_largest_component_from_segmentation: the voxels of `labels`
    (together) outside their largest component(s) become background."""
    import numpy as np

    mask = np.isin(seg, list(labels))
    if not mask.any():
        return seg
    lab, n = components(mask)
    if n <= 1:
        return seg
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = np.flatnonzero(sizes == sizes.max())
    out = np.array(seg, copy=True)
    out[mask & ~np.isin(lab, keep)] = background
    return out


def counts(ref, seg, labels, ignore: int | None = None) -> dict[int, tuple[int, int, int]]:
    """(tp, fp, fn) per label, the reference's ignored voxels left out."""
    import numpy as np

    keep = None if ignore is None else ref != ignore
    out = {}
    for lab in labels:
        r, p = ref == lab, seg == lab
        if keep is not None:
            r &= keep
            p &= keep
        tp = int(np.count_nonzero(r & p))
        out[lab] = (tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp)
    return out


def dice(c: tuple[int, int, int]) -> float:
    tp, fp, fn = c
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan


@dataclass
class CaseTrial:
    """One case reduced to the counts of every variant the decision can meet."""
    case: str
    base: dict
    fg: dict                                   # after step 1
    own_on_base: dict = field(default_factory=dict)    # label -> its counts after its own step 2, on base
    own_on_fg: dict = field(default_factory=dict)      # ... on the step-1 result


def trial(case: str, ref, seg, labels: list[int], ignore: int | None = None) -> CaseTrial:
    fg_seg = keep_largest(seg, labels)
    t = CaseTrial(case, counts(ref, seg, labels, ignore), counts(ref, fg_seg, labels, ignore))
    if len(labels) > 1:
        for lab in labels:
            t.own_on_base[lab] = counts(ref, keep_largest(seg, [lab]), [lab], ignore)[lab]
            t.own_on_fg[lab] = counts(ref, keep_largest(fg_seg, [lab]), [lab], ignore)[lab]
    return t


def _mean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


@dataclass
class Decision:
    """The operations kept, with their out-of-fold effect (nnU-Net's mean Dice before/after)."""
    labels: dict[int, str]
    largest_foreground: bool = False
    largest_per_label: list[int] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)     # every operation tried, kept or not
    before: dict[int, float] = field(default_factory=dict)
    after: dict[int, float] = field(default_factory=dict)
    cases: int = 0
    source: str = ""

    def apply(self, seg):
        """The decided operations, in nnU-Net's order."""
        if self.largest_foreground:
            seg = keep_largest(seg, list(self.labels))
        for lab in self.largest_per_label:
            seg = keep_largest(seg, [lab])
        return seg

    def to_json(self) -> dict:
        def clean(d):
            return {self.labels[k]: (None if math.isnan(v) else v) for k, v in d.items()}
        return {"format": FORMAT, "source": self.source, "cases": self.cases,
                "labels": {str(k): v for k, v in self.labels.items()},
                "largest_foreground": self.largest_foreground,
                "largest_per_label": [self.labels[k] for k in self.largest_per_label],
                "steps": self.steps, "mean_dice_before": clean(self.before), "mean_dice_after": clean(self.after)}

    @classmethod
    def from_json(cls, doc, labels: dict[int, str]) -> "Decision":
        """A decision file, checked against this dataset's labels (ValueError says what is wrong)."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a dataguard post-processing decision (format {FORMAT!r}); "
                             f"make one with: dataguard ensemble postprocess")
        by_name = {v: k for k, v in labels.items()}
        per = doc.get("largest_per_label")
        if not isinstance(doc.get("largest_foreground"), bool) or not isinstance(per, list):
            raise ValueError("largest_foreground must be true/false and largest_per_label a list of label names")
        unknown = [p for p in per if p not in by_name]
        if unknown:
            raise ValueError(f"largest_per_label names {unknown[0]!r}, no label of this dataset")
        return cls(labels, doc["largest_foreground"], [by_name[p] for p in per], source=str(doc.get("source", "")))

    def describe(self) -> str:
        ops = (["largest foreground component"] if self.largest_foreground else []) + \
              [f"largest component of {self.labels[k]}" for k in self.largest_per_label]
        return "; ".join(ops) if ops else "none (no operation helped out of fold)"


def decide(trials: list[CaseTrial], labels: dict[int, str], source: str = "") -> Decision:
    """nnU-Net's decision (see the module's docstring) on the cases' counts."""
    labs = list(labels)
    dec = Decision(labels, cases=len(trials), source=source)
    base = {lab: _mean(dice(t.base[lab]) for t in trials) for lab in labs}
    fg = {lab: _mean(dice(t.fg[lab]) for t in trials) for lab in labs}
    base_mean, fg_mean = _mean(base.values()), _mean(fg.values())
    keep_fg = fg_mean > base_mean and not any(fg[lab] < base[lab] for lab in labs)
    dec.largest_foreground = keep_fg
    dec.steps.append({"operation": "largest foreground component", "mean_dice_before": base_mean,
                      "mean_dice_after": fg_mean, "kept": keep_fg})
    current = dict(fg if keep_fg else base)
    dec.before = base
    if len(labs) > 1:
        for lab in labs:
            own = {t.case: (t.own_on_fg if keep_fg else t.own_on_base)[lab] for t in trials}
            after = _mean(dice(c) for c in own.values())
            kept = after > current[lab]
            dec.steps.append({"operation": f"largest component of {labels[lab]}", "mean_dice_before": current[lab],
                              "mean_dice_after": after, "kept": kept})
            if kept:
                dec.largest_per_label.append(lab)
                current[lab] = after
    dec.after = current
    for s in dec.steps:
        for k in ("mean_dice_before", "mean_dice_after"):
            if isinstance(s[k], float) and math.isnan(s[k]):
                s[k] = None
    return dec


def load_decision(path) -> Decision:
    """A decision file as written by `write`, its labels its own (the ensemble checks them
    against the dataset's); bounded read, no code run (JSON)."""
    doc = read_json(path, limit=1 << 20)
    raw = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(raw, dict) or not all(str(k).isdigit() and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("not a dataguard post-processing decision (no labels); make one with: "
                         "dataguard ensemble postprocess -o PP.json")
    return Decision.from_json(doc, {int(k): v for k, v in raw.items()})


def write(decision: Decision, path) -> None:
    atomic_write_text(path, json.dumps(decision.to_json(), indent=2) + "\n")
