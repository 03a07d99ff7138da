"""DG601-DG607: predictions and submissions, judged from a `predictions.PredictionSet`
(label maps against their test images) or `ProbabilityInputs` (an ensemble's inputs).

The thresholds are the raw-data checks' own: DG601 uses DG401's cast tolerance (1e-3),
DG603 the DG304 geometry tolerances.
"""
from __future__ import annotations

import math
from dataclasses import replace

from ..findings import Finding, Fix, Severity, finding
from ..spec import bunched, few, short
from .raw import CAST_TOLERANCE
from .rawset import _geometry_problems

NEAR_ZERO_DICE = 0.05           # DG803: a model's out-of-fold Dice for a label at or below this


def near_zero(v: float | None) -> bool:
    """A Dice that says the model never got this label right (nan is no evidence either way)."""
    return v is not None and not math.isnan(v) and v <= NEAR_ZERO_DICE


COMMON_SHARE = 0.9          # DG605: a label in more than this share of training cases


def _where(ps, member: str) -> str:
    return f"{ps.source}::{member}" if ps.is_zip else f"{ps.source}/{member}"


def _kind(ps, found: list[Finding], what: str) -> list[Finding]:
    """Findings of one kind as they are while few; past MAX_SAID one finding on the archive (or
    folder) with their count, the first cases or members and the first one's words: an archive of
    100k stray members is one row, not 100k (the first finding's code, severity and fix)."""
    def many(fs: list[Finding]) -> Finding:
        names = [f.case or f.path.rsplit("::", 1)[-1].rsplit("/", 1)[-1] for f in fs[:5]]
        return replace(fs[0], path=ps.source, case=None,
                       message=f"{len(fs)} {what}: {few(names, len(fs))}; the first: {fs[0].message}")
    return bunched(found, lambda f: f, many)


def castable_cases(ps) -> set[str]:
    """The cases whose float label map `--fix-dtype` casts to uint8 (DG601 with a fix): every
    value within CAST_TOLERANCE of an integer."""
    return {case for case, pc in ps.cases.items()
            if pc.facts is not None and pc.max_dev is not None and pc.max_dev <= CAST_TOLERANCE}


def dtype(ps) -> list[Finding]:
    """DG601: a float (or scaled) label map, or non-integer values."""
    found: dict[bool, list[Finding]] = {True: [], False: []}
    cast = castable_cases(ps)
    for case, pc in sorted(ps.cases.items()):
        if pc.facts is None:
            continue
        kind = pc.facts["dtype"] + (" with scl_slope/scl_inter" if pc.facts.get("scaled") else "")
        if pc.max_dev is None:
            continue
        castable = case in cast
        detail = ("values are exact integers" if pc.max_dev == 0 else
                  f"values up to {pc.max_dev:.3g} from an integer (e.g. 1.00000002)")
        verdict = "castable: --fix-dtype writes uint8" if castable else "too far from integers to cast"
        found[castable].append(finding("DG601", _where(ps, pc.member), f"prediction stored as {kind}; {detail}; "
                                       f"{verdict}", case=case, fix=Fix.CAST if castable else None))
    return (_kind(ps, found[True], "predictions stored as floats, castable to uint8")
            + _kind(ps, found[False], "predictions stored as floats too far from integers to cast"))


IGNORE_HELP = ("the ignore label marks unannotated voxels of training labels (sparse annotation); nnU-Net "
               "never predicts it, so this map is not a model's output: re-run nnUNetv2_predict, or map the "
               "value to a class before submitting")


def _allowed(ps) -> set[int]:
    """The values a prediction may hold: the declared ones (regions flattened), plus, for a
    region model, 0 and the `regions_class_order` values nnU-Net writes; never the ignore label."""
    spec = ps.spec
    allowed = set(ps.labels)
    if spec is not None:
        if spec.has_regions and spec.regions_class_order:
            allowed |= {0, *spec.regions_class_order}
        allowed.discard(spec.ignore_label)
    return allowed


def _first(items: list[str], n: int = 20) -> str:
    """The first `n` items, comma-separated, and how many more: a dataset of 2M labels stays one line."""
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def values(ps) -> list[Finding]:
    """DG602: values that are not declared labels, and voxels with the ignore label."""
    if ps.labels is None:
        return []
    allowed = _allowed(ps)
    ig = ps.spec.ignore_label if ps.spec is not None else None
    if ps.spec is not None and ps.spec.has_regions:
        order = ps.spec.regions_class_order
        shown = (f"0 and the regions_class_order values {short(list(order))}" if order else
                 _first([str(v) for v in sorted(allowed)]))
    else:
        shown = _first([f"{k}={v}" for k, v in ps.labels.items() if k in allowed])
    undeclared, ignored = [], []
    for case, pc in sorted(ps.cases.items()):
        bad = [v for v in pc.counts if v not in allowed and v != ig]
        if bad:
            undeclared.append(finding("DG602", _where(ps, pc.member), f"values {bad[:10]} are not labels of the "
                                      f"dataset ({shown})", case=case))
        if ig is not None and pc.counts.get(ig):
            ignored.append(finding("DG602", _where(ps, pc.member), f"{pc.counts[ig]} voxels hold the ignore label "
                                   f"({ig}), which a prediction must never contain", case=case, help=IGNORE_HELP))
    return (_kind(ps, undeclared, "predictions hold values that are not labels of the dataset")
            + _kind(ps, ignored, "predictions hold the ignore label"))


def geometry(ps) -> list[Finding]:
    """DG603: shape, spacing, origin, direction against the case's `_0000` image (DG304 tolerances)."""
    out = []
    for case, pc in sorted(ps.cases.items()):
        src = ps.images.get(case)
        if pc.facts is None or src is None:
            continue
        for problem in _geometry_problems(src, pc.facts):
            out.append(finding("DG603", _where(ps, pc.member), f"{problem} (vs {case}_0000)", case=case))
    return _kind(ps, out, "geometry differences from the test images")


def case_set(ps) -> list[Finding]:
    """DG604: a test case without a prediction, a prediction without a test case."""
    if ps.archive_error:
        return []
    missing = sorted(set(ps.images) | set(ps.image_errors)) if not ps.cases else \
        sorted((set(ps.images) | set(ps.image_errors)) - set(ps.cases))
    out = bunched(
        missing,
        lambda case: finding("DG604", ps.source, f"test case '{case}' has no prediction {case}.nii.gz", case=case),
        lambda cases: finding("DG604", ps.source, f"{len(cases)} test cases have no prediction (case.nii.gz): "
                                                  f"{few(cases)}"))
    stray = sorted(set(ps.cases) - set(ps.images) - set(ps.image_errors))
    out += bunched(
        stray,
        lambda case: finding("DG604", _where(ps, ps.cases[case].member),
                             f"prediction '{case}' has no test image {case}_0000.nii.gz", case=case),
        lambda cases: finding("DG604", ps.source, f"{len(cases)} predictions have no test image "
                                                  f"(case_0000.nii.gz): {few(cases)}"))
    return out


def content(ps) -> list[Finding]:
    """DG605 (warning): an empty prediction, or one that lacks a class (label, or region) most
    training cases have. `ps.common` is keyed like `DatasetSpec.classes` (plain labels by value,
    regions by position; `folds.class_shares`); the ignore label is never a class."""
    spec = ps.spec
    regions = spec.classes if spec is not None and spec.has_regions else {}
    ig = spec.ignore_label if spec is not None else None
    out, empty = [], []
    for case, pc in sorted(ps.cases.items()):
        if pc.facts is None:
            continue
        fg = [v for v, n in pc.counts.items() if v != 0 and v != ig and n > 0]
        if not fg:
            empty.append(finding("DG605", _where(ps, pc.member), "empty prediction: every voxel is background",
                                 case=case, severity=Severity.WARNING))
            continue
        if regions:
            present = spec.present_classes(fg)
        else:
            present = set(fg)
        name = ps.labels or {}
        lacking = [lab for lab, share in sorted(ps.common.items())
                   if share > COMMON_SHARE and lab not in present and (lab in regions or not regions) and lab != ig]
        for lab in lacking:
            if regions:
                what = f"region {regions[lab][0]} (labels {', '.join(str(v) for v in regions[lab][1])})"
            else:
                what = f"{name.get(lab, f'label {lab}')} ({lab})"
            out.append(finding("DG605", _where(ps, pc.member), f"no {what}, which "
                               f"{ps.common[lab]:.0%} of training cases contain", case=case,
                               severity=Severity.WARNING))
    return _kind(ps, empty, "empty predictions") + _kind(ps, out, "predictions lack a common label")


def archive(ps) -> list[Finding]:
    """DG606: a submission archive that is empty, nested, has extra files, duplicates or bad members."""
    if ps.archive_error:
        return [finding("DG606", ps.source, ps.archive_error, fix=Fix.REBUILD_ARCHIVE)]
    out = []
    if ps.is_zip and not ps.members:
        out.append(finding("DG606", ps.source, "empty archive: no member at all", fix=Fix.REBUILD_ARCHIVE))
    links, folders, nested, extra = [], [], [], []
    for m in ps.members if ps.is_zip else ():       # a folder's other files are simply not packaged
        if m in ps.symlinks:
            case = m[: -len(".nii.gz")] if m.endswith(".nii.gz") and "/" not in m else None
            links.append(finding("DG606", _where(ps, m), f"symbolic link to {ps.symlinks[m]!r}: the archive "
                                 f"holds the link, not the file, so there is no prediction to read; zip the "
                                 f"file itself", case=case, fix=Fix.REBUILD_ARCHIVE))
        elif m.endswith("/"):
            folders.append(finding("DG606", _where(ps, m), "folder entry: members must sit at the archive's root",
                                   fix=Fix.REBUILD_ARCHIVE))
        elif "/" in m:
            nested.append(finding("DG606", _where(ps, m), "nested member: predictions must sit at the root",
                                  fix=Fix.REBUILD_ARCHIVE))
        elif not m.endswith(".nii.gz"):
            extra.append(finding("DG606", _where(ps, m), "extra file: only case.nii.gz members belong here",
                                 fix=Fix.REBUILD_ARCHIVE))
    out += _kind(ps, links, "members are symbolic links")
    out += _kind(ps, folders, "folder entries")
    out += _kind(ps, nested, "nested members")
    out += _kind(ps, extra, "extra files")
    dups = [finding("DG606", _where(ps, m), "duplicate member name", fix=Fix.REBUILD_ARCHIVE)
            for m in sorted(set(ps.duplicates))]
    out += _kind(ps, dups, "duplicate member names")
    bad = [finding("DG606", _where(ps, pc.member), f"unreadable: {pc.error}", case=case, fix=Fix.REBUILD_ARCHIVE)
           for case, pc in sorted(ps.cases.items()) if pc.error]
    out += _kind(ps, bad, "unreadable members")
    return out


def probability_files(pi) -> list[Finding]:
    """DG607: an ensemble member without probability files, or missing some cases."""
    out = []
    wanted = set(pi.expected) if pi.expected is not None else set().union(*[set(f) for f in pi.files.values()] or [set()])
    for name, folder in pi.folders.items():
        have = pi.files.get(name, {})
        if not have:
            out.append(finding("DG607", str(folder), f"model '{name}': no probability files (case.npz or "
                               f"case.nii.gz.npz) in {folder}; predict with --save_probabilities"))
            continue
        for case in sorted(wanted - set(have)):
            out.append(finding("DG607", str(folder), f"model '{name}': no probabilities for case '{case}' "
                               f"(looked for {case}.npz and {case}.nii.gz.npz)", case=case))
    return out


def evaluation_case_sets(ev) -> list[Finding]:
    """DG802: a "validation" folder must hold exactly its fold's validation cases."""
    out = []
    for s in ev.sources:
        expected, found = set(s.expected), set(s.found)
        where = str(s.folder)
        for c in sorted(found - expected):
            why = ("a training case of this fold: its Dice is inflated" if c in s.train else
                   f"validated by fold {s.other_val[c]}, not fold {s.fold}" if c in s.other_val else
                   "not a case of this dataset's split")
            out.append(finding("DG802", where, f"{s.model} fold {s.fold}: '{c}' is {why}", case=c))
        for c in sorted(expected - found):
            out.append(finding("DG802", where, f"{s.model} fold {s.fold}: validation case '{c}' has no prediction "
                               f"here", case=c))
    return out


def weights_on_useless_models(wc) -> list[Finding]:
    """DG803 (warning): a weight > 0 for a model whose out-of-fold Dice for that label is ~0."""
    out = []
    for lab, per_model in sorted(wc.weights.items()):
        total = sum(per_model.values()) or 1.0
        for model, w in per_model.items():
            dice = wc.oof.get(model, {}).get(lab)
            if w > 0 and near_zero(dice):
                out.append(finding("DG803", wc.source, f"label {wc.names.get(lab, lab)} gives {w / total:.0%} of its "
                                   f"weight to {model}, whose out-of-fold Dice for it is {dice:.3f} "
                                   f"(<= {NEAR_ZERO_DICE}); `dataguard ensemble suggest` finds better weights",
                                   severity=Severity.WARNING))
    return out
