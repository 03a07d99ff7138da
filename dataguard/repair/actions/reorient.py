"""reorient (DG308): rewrite a training case's channels and label in the training majority's
axis order; the target axis codes are taken from the scan at plan time (payload "axcodes")."""
from __future__ import annotations

from ...checks.consistency import profile, raw_channels
from ...errors import RepairError
from ...findings import ActionKind
from ...spec import parse_spec
from .base import ApplyContext, Outcome

KIND = ActionKind.REORIENT
ORDER = 0


def describe(a) -> str:
    return "reorient the case's images and label to the training majority (originals to quarantine)"


def prepare(a, result) -> None:
    """payload["axcodes"]: the training majority's axis codes ("RAS"), None when there is none."""
    views = getattr(result, "views", None) or {}
    if a.dataset not in views:
        return
    view = views[a.dataset]
    a.payload["axcodes"] = profile([f for f in raw_channels(view, parse_spec(view.meta or {}).ending)
                                    if f.split == "Tr"], {}).axcodes


def files(a, view) -> list[str]:
    return sorted(t.rel for t in (view.tasks if view is not None else ()) if t.case == a.case
                  and t.where == "raw" and t.rel.split("/")[1] in ("imagesTr", "labelsTr")) or [a.target]


def run(a, ctx: ApplyContext) -> Outcome:
    """nibabel's as_reoriented: voxels permuted/flipped, affine updated, the world position of
    every voxel unchanged; originals to quarantine, so restore undoes it."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    if "axcodes" not in a.payload:
        raise RepairError(a.payload.get("unprepared") or
                          "reorienting needs the target orientation from the scan the plan came from "
                          "(plan it with plan_repairs)")
    target = a.payload["axcodes"]
    if target is None:
        return Outcome(a, False, "the training data has no majority orientation to reorient to")
    j = ctx.journals["raw"]
    rels = [r.split("/", 1)[1] for r in a.files if r.startswith("raw/")]
    done = []
    for rel in rels:
        src = j.root / rel
        img = nib.load(str(src))
        moved = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(target))))
        staged = j.staging / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        nib.save(moved, str(staged))
        done.append((staged, rel))
    for staged, rel in done:                       # all written first: a failure leaves the case whole
        j.quarantine_file(rel, reason=a.codes)
        j.place_file(staged, rel)
    return Outcome(a, True, f"{len(done)} file(s) reoriented to {target}; its preprocessed data is now stale "
                   f"(DG209): re-preprocess the case", [f"raw/{r}" for _, r in done])
