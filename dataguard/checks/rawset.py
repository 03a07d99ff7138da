"""Dataset-level raw checks: dataset.json (DG301, DG311 v1 files, DG312 regions and the ignore
label), case completeness and naming (DG303), geometry across a case's files (DG304),
numTraining (DG305), unused labels (DG404).

All run on the per-file facts (shape, spacing, origin, direction, label values) the
per-file checks recorded, so they read no file except dataset.json. Conversion mistakes
(a v1 file, a label named like a channel, `case.0000.nii.gz`, a `file_ending` unlike the
files) are reported as root findings that `cascades.fold` folds their consequences into.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

from ..findings import Finding, Fix, finding
from ..fsio import read_json
from ..spec import MAX_SAID, DatasetSpec, clip, few, parse_spec
from . import cascades
from .cases import DatasetView, case_labels
from .metadata import is_int, short

SPACING_RTOL = 1e-3      # relative, per axis
ORIGIN_ATOL_MM = 1e-2    # plus SPACING_RTOL x spacing
DIRECTION_ATOL = 1e-3
# the file endings nnU-Net's readers take (NibabelIO, SimpleITKIO, NaturalImage2DIO, Tiff3DIO)
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".gipl", ".png", ".bmp", ".tif", ".tiff")
_DOT_CHANNEL = re.compile(r"^(.+)\.(\d{4})$")         # case.0000: a dot for the underscore
_CHANNEL_SUFFIX = re.compile(r"^(.+)_(\d{4})$")        # case_0000: a channel suffix


def view_spec(view: DatasetView) -> DatasetSpec:
    """The DatasetSpec of the view's dataset.json, parsed once per view (callers: read-only)."""
    memo = getattr(view, "_memo", None)
    if memo is None:
        return parse_spec(view.meta)
    spec = memo.get("spec")
    if spec is None:
        spec = memo["spec"] = parse_spec(view.meta)
    return spec


def dataset_json(view: DatasetView) -> list[Finding]:
    """DG301: the raw dataset.json nnU-Net needs to even start; DG311 for an nnU-Net v1 file
    (its DG301s follow it, for cascades.fold to count), DG312 for regions and the ignore label."""
    task = next((t for t in view.tasks if t.rel == "raw/dataset.json"), None)
    if not view.has_raw:
        return []
    if task is None:
        return [finding("DG301", "raw/dataset.json", "dataset.json is missing")]
    if view.meta and view.preprocessed_root is None:
        # the walk read raw/dataset.json (no preprocessed copy it could have come from): that
        # object, not a second read and parse of what may be a 40 MB file
        return _dataset_json(view, task, view.meta, view_spec(view))
    try:
        meta = read_json(task.path)
    except OSError as e:
        return [finding("DG301", task.rel, f"dataset.json cannot be read: {e.strerror or e}")]
    except UnicodeDecodeError as e:
        return [finding("DG301", task.rel, f"dataset.json is not UTF-8 text: {e.reason} at byte {e.start}")]
    except ValueError as e:
        return [finding("DG301", task.rel, f"dataset.json is not valid JSON: {e}")]
    if not isinstance(meta, dict):
        return [finding("DG301", task.rel, f"dataset.json must hold a JSON object, got {short(meta)}")]
    if meta == view.meta:           # the walk read this same file: parse it once (view_spec)
        return _dataset_json(view, task, view.meta, view_spec(view))
    return _dataset_json(view, task, meta, parse_spec(meta))


def _dataset_json(view: DatasetView, task, meta: dict, spec: DatasetSpec) -> list[Finding]:
    problems = [f"'{k}' is missing" for k in ("channel_names", "labels", "numTraining", "file_ending")
                 if k not in meta]
    if "channel_names" in meta and (not isinstance(meta["channel_names"], dict) or not meta["channel_names"]):
        problems.append("'channel_names' must map channel index -> name, e.g. {\"0\": \"CT\"}")
    elif isinstance(meta.get("channel_names"), dict):
        keys = sorted(meta["channel_names"], key=lambda k: (0, len(k), k) if k.isascii() and k.isdigit() else (1, 0, k))
        if keys != [str(i) for i in range(len(keys))]:
            problems.append(f"channel_names keys must be 0..{len(keys) - 1}, got {short(list(meta['channel_names']))}")
    if "numTraining" in meta and not (is_int(meta["numTraining"]) and meta["numTraining"] >= 0):
        problems.append(f"'numTraining' must be a non-negative integer, got {short(meta['numTraining'])}")
    if "file_ending" in meta and spec.ending != meta["file_ending"]:     # what the walk cannot match by
        problems.append(f"'file_ending' must be a string like '.nii.gz', got {short(meta['file_ending'])}")
    regions: list[Finding] = []
    if "labels" in meta:
        problems += spec.label_problems
        regions += [finding("DG312", task.rel, f"dataset.json: {p}", help=_region_help(p, spec))
                    for p in spec.region_problems]
    if "dataset" in meta and not isinstance(meta["dataset"], dict):
        problems.append("'dataset' (explicit file list) must map case -> {images, label}")
    elif isinstance(meta.get("dataset"), dict):
        bad = [case for case, entry in meta["dataset"].items() if _entry_files(entry) is None]
        problems += [f"'dataset' entry '{clip(case)}' must be {{\"images\": [paths], \"label\": path}}, got "
                     f"{short(meta['dataset'][case])}" for case in bad[:MAX_SAID]]
        if len(bad) > MAX_SAID:
            problems.append(f"{len(bad) - MAX_SAID} more 'dataset' entries are malformed the same way: "
                            f"{few(bad[MAX_SAID:])}")
    out = [finding("DG301", task.rel, f"dataset.json: {p}") for p in problems] + regions
    if spec.version == 1:
        return [cascades.v1_dataset_json(task.rel)] + out
    mismatch = _ending_mismatch(view, meta)
    return out + ([cascades.ending_mismatch(task.rel, meta["file_ending"], *mismatch)] if mismatch else [])


def _region_help(problem: str, spec: DatasetSpec) -> str | None:
    """The help line of a DG312: what to write in dataset.json."""
    if problem.startswith("the ignore label"):
        top = max(spec.all_labels) + 1 if spec.all_labels else 1
        return f'give "ignore" one integer value, the highest: "ignore": {top}'
    if "regions_class_order" in problem:
        n = len(spec.regions or [])
        return (f'add "regions_class_order": one label value per region ({n}), in the order the regions '
                f'are listed (the value written where that region wins)')
    return None


def _ending_mismatch(view: DatasetView, meta: dict) -> tuple[str, int] | None:
    """(the ending the raw images and labels have, how many) when dataset.json's file_ending
    matches none of them (".nii" next to ".nii.gz" files, or the reverse); else None."""
    declared = meta.get("file_ending")
    if not isinstance(declared, str) or view_spec(view).ending != declared:
        return None
    endings: dict[str, int] = defaultdict(int)
    for t in view.tasks:
        if t.where != "raw" or t.rel.count("/") != 2 or t.rel.split("/")[1] not in ("imagesTr", "labelsTr"):
            continue
        if t.kind in ("image", "label"):
            return None                 # some files match: not a wrong file_ending
        if t.kind == "unexpected":
            e = next((e for e in IMAGE_ENDINGS if t.rel.endswith(e)), None)
            if e is not None and e != declared:
                endings[e] += 1
    if not endings:
        return None
    actual = max(endings, key=lambda e: (endings[e], e))
    return actual, endings[actual]


def _n_channels(meta: dict) -> int | None:
    ch = meta.get("channel_names")
    return len(ch) if isinstance(ch, dict) and ch else None


def _raw_files(view: DatasetView):
    """(images, labels, naming findings) of the raw dataset: images[folder][case][channel] -> rel,
    labels[case] -> rel (labelsTr). Computed once per view: case_files and complete_cases
    must see the same cases. Callers treat the result as read-only."""
    memo = getattr(view, "_memo", None)
    if memo is not None and "raw_files" in memo:
        return memo["raw_files"]
    ending = view_spec(view).ending
    images: dict[str, dict[str, dict[str, str]]] = {"imagesTr": defaultdict(dict), "imagesTs": defaultdict(dict)}
    labels: dict[str, str] = {}
    naming: list[Finding] = []
    for t in view.tasks:
        if t.where != "raw" or t.kind not in ("image", "label"):
            continue
        folder, name = t.rel.split("/")[1], t.rel.rsplit("/", 1)[-1]
        if t.kind == "label":
            if folder == "labelsTr":
                labels[t.case] = t.rel
            continue
        stem = name[: -len(ending)]
        if t.case == stem:      # no _XXXX channel suffix
            dot = _DOT_CHANNEL.match(stem)
            if dot:             # case.0000.nii.gz (nnU-Net #2187)
                naming.append(cascades.image_with_dot_channel(t.rel, dot[1], dot[2], ending))
                continue
            naming.append(finding("DG303", t.rel, f"image name must be {{case}}_{{XXXX}}{ending} "
                                  f"(channel index), e.g. {stem}_0000{ending}", case=t.case))
            continue
        images[folder][t.case][stem[-4:]] = t.rel
    out = (images, labels, naming)
    if memo is not None:
        memo["raw_files"] = out
    return out


def _channels(meta: dict) -> list[str]:
    """The channel suffixes dataset.json declares ("0000", "0001", ...); [] when it declares none."""
    n_ch = _n_channels(meta)
    return [f"{i:04d}" for i in range(n_ch)] if n_ch else []


def complete_cases(view: DatasetView) -> set[str]:
    """The raw training cases nnU-Net can train on: every declared channel image and a label
    (with an explicit `dataset` list: its entries whose files all exist).

    The one definition of a raw training case: splits, the split checks (DG5xx) and
    `dataguard splits` count only these, case_files reports every other one as DG303.
    """
    memo = getattr(view, "_memo", None)
    if memo is not None and "complete_cases" in memo:
        return memo["complete_cases"]
    explicit = view.meta.get("dataset") if isinstance(view.meta.get("dataset"), dict) else None
    if not view.has_raw:
        out: set[str] = set()
    elif explicit:
        present = {t.path for t in view.tasks}
        out = {case for case, entry in explicit.items() if _entry_files(entry) is not None
               and all(p in present or _exists(view, p) for p in _entry_files(entry))}
    else:
        images, labels, _ = _raw_files(view)
        want = _channels(view.meta)
        out = {case for case, chans in images["imagesTr"].items()
               if case in labels and all(c in chans for c in want)}
    if memo is not None:
        memo["complete_cases"] = out
    return out


def raw_coverage(view: DatasetView) -> list[Finding]:
    """DG207 raw case missing from a configuration; DG208 preprocessed case without raw."""
    if not view.has_raw:
        return []
    raw = view.raw_cases()
    if not raw:
        return []
    trainable = complete_cases(view)        # a label without image is DG303, not a missing case
    out = []
    for cfg, cases in view.config_cases().items():
        for case in sorted((set(raw) & trainable) - set(cases)):
            out.append(finding("DG207", f"preprocessed/{cfg}/{case}",
                               f"training case '{case}' has no preprocessed files in {cfg}",
                               case=case, fix=Fix.REPREPROCESS))
        for case in sorted(set(cases) - set(raw)):
            out.append(finding("DG208", f"preprocessed/{cfg}/{case}",
                               f"preprocessed case '{case}' has no raw counterpart", case=case,
                               fix=Fix.QUARANTINE))
    return out


def case_files(view: DatasetView) -> list[Finding]:
    """DG303 (incomplete cases, names) and DG305 (numTraining) for imagesTr/labelsTr/imagesTs."""
    if not view.has_raw:
        return []
    meta = view.meta
    n_ch = _n_channels(meta)
    ending = view_spec(view).ending
    images, labels, naming = _raw_files(view)
    out, want = list(naming), _channels(meta)
    explicit = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else None
    for folder, cases in images.items():
        for case, chans in sorted(cases.items()):
            missing = [c for c in want if c not in chans]
            extra = [c for c in chans if want and c not in want]
            if missing:
                out.append(finding("DG303", f"raw/{folder}/{case}",
                                   f"missing channel file(s) {', '.join(f'{case}_{c}{ending}' for c in missing)} "
                                   f"(dataset.json declares {n_ch} channel(s))", case=case))
            if extra:
                out.append(finding("DG303", f"raw/{folder}/{case}",
                                   f"channel file(s) {', '.join(extra)} beyond the {n_ch} declared in dataset.json",
                                   case=case))
            if folder == "imagesTr" and case not in labels and not explicit:
                out.append(finding("DG303", f"raw/{folder}/{case}", cascades.NO_LABEL, case=case))
    if not explicit:
        for case, rel in sorted(labels.items()):
            if case not in images["imagesTr"]:
                owner = _CHANNEL_SUFFIX.match(case)
                if owner and owner[1] in images["imagesTr"] and owner[1] not in labels:
                    out.append(cascades.label_with_channel_suffix(rel, owner[1], ending))
                else:
                    out.append(_label_without_image(case, rel, meta, ending))
    else:
        present = {t.path for t in view.tasks}
        for case, entry in sorted(explicit.items()):
            for p in _entry_files(entry) or []:
                if p not in present and not _exists(view, p):
                    out.append(finding("DG303", "raw/dataset.json", f"'dataset' lists {p}, which does not exist",
                                       case=case))
    # nnU-Net counts training cases by their images: a label without image is DG303 only
    n_train = len(explicit) if explicit else len(images["imagesTr"])
    declared = meta.get("numTraining")
    if is_int(declared) and declared != n_train:
        out.append(_num_training(view, declared, n_train, images["imagesTr"], ending) if not explicit else
                   finding("DG305", "raw/dataset.json",
                           f"numTraining is {declared} but the dataset holds {n_train} training cases"))
    return out


def _num_training(view: DatasetView, declared: int, n_train: int, cases, ending: str) -> Finding:
    """DG305, with its cause where the difference is exactly the images misnamed with a dot
    (folded into their DG303) or exactly the stray files in imagesTr (numTraining counted files)."""
    said = f"numTraining is {declared} but the dataset holds {n_train} training cases"
    stray = [t.rel.rsplit("/", 1)[-1] for t in view.tasks
             if t.where == "raw" and t.rel.startswith("raw/imagesTr/") and t.rel.count("/") == 2
             and not (t.kind == "image" and t.case in cases)]
    dots = {m[1] for n in stray if n.endswith(ending) and (m := _DOT_CHANNEL.match(n[: -len(ending)]))} - set(cases)
    if dots and declared == n_train + len(dots):
        return finding("DG305", "raw/dataset.json", f"{said}: the {len(dots)} {cascades.DUE_TO_DOTS} "
                                                    f"are not counted")
    if stray and declared == n_train + len(stray):
        shown = ", ".join(stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
        return finding("DG305", "raw/dataset.json",
                       f"{said}: {declared} also counts the {len(stray)} stray file{'s' if len(stray) != 1 else ''} "
                       f"in imagesTr ({shown})",
                       help=f'set "numTraining": {n_train} in dataset.json; the stray files are findings of their own')
    return finding("DG305", "raw/dataset.json", said)


def _label_without_image(case: str, rel: str, meta: dict, ending: str) -> Finding:
    """DG303 for a labelsTr file whose case has no image: name the image(s) nnU-Net would need."""
    need = [f"imagesTr/{case}_{c}{ending}" for c in _channels(meta) or ["0000"]]
    verb = "is" if len(need) == 1 else "are"
    return finding("DG303", rel, f"label has no image: {', '.join(need)} {verb} missing; nnU-Net cannot "
                                 f"train on this case, so splits leave it out", case=case)


def _entry_files(entry) -> list[str] | None:
    """The image and label paths of one explicit `dataset` entry; None when malformed."""
    if not isinstance(entry, dict):
        return None
    images, label = entry.get("images", []), entry.get("label")
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        return None
    if label is not None and not isinstance(label, str):
        return None
    return images + ([label] if label else [])


def _exists(view: DatasetView, p: str) -> bool:
    import os

    root = view.raw_root
    return os.path.exists(p if os.path.isabs(p) or root is None else os.path.join(root, p))


def _diff(a: list[float], b: list[float], rtol: float, atol: float):
    return max((abs(x - y) - (atol + rtol * max(abs(x), abs(y))) for x, y in zip(a, b)), default=0.0) > 0


def geometry(view: DatasetView) -> list[Finding]:
    """DG304: each case's channels and label share shape, spacing, origin and direction."""
    if not view.has_raw:
        return []
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for t in view.tasks:
        r = view.results.get(t.rel)
        if t.where != "raw" or t.kind not in ("image", "label") or r is None or "shape" not in r.facts:
            continue
        split = "Tr" if t.rel.split("/")[1].endswith("Tr") else "Ts"
        groups[(split, t.case)].append((t, r.facts))
    out = []
    for (_split, case), members in sorted(groups.items()):
        members.sort(key=lambda m: (m[0].kind != "image", m[0].rel))
        ref_t, ref = members[0]
        for t, f in members[1:]:
            problems = _geometry_problems(ref, f)
            for p in problems:
                out.append(finding("DG304", t.rel, f"{p} (vs {ref_t.rel.rsplit('/', 1)[-1]})", case=case))
    return out


def _geometry_problems(a: dict, b: dict) -> list[str]:
    out = []
    sa, sb = a["shape"], b["shape"]
    if sa[:3] != sb[:3] or len(sa) != len(sb):
        hint = ""
        for s in (sa, sb):
            if len(s) >= 4 and s[3] > 1:
                hint = f"; a {len(s)}D series ({s[3]} volumes) given as one channel?"
        out.append(f"shape {tuple(sb)} differs from {tuple(sa)}{hint}")
    spa, spb = a.get("spacing", []), b.get("spacing", [])
    if _diff(spa, spb, SPACING_RTOL, 0.0):
        out.append(f"spacing {_fmt(spb)} differs from {_fmt(spa)} (max {_maxdiff(spa, spb):.3g} mm)")
    tol = ORIGIN_ATOL_MM + SPACING_RTOL * max(spa or [1.0])
    oa, ob = a.get("origin", []), b.get("origin", [])
    if _diff(oa, ob, 0.0, tol):
        out.append(f"origin {_fmt(ob)} differs from {_fmt(oa)} (by {_maxdiff(oa, ob):.3g} mm)")
    da, db = a.get("direction", []), b.get("direction", [])
    if da and db and _diff(da, db, 0.0, DIRECTION_ATOL):
        out.append(f"direction differs (max element difference {_maxdiff(da, db):.3g})")
    return out


def _fmt(v: list[float]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"


def _maxdiff(a, b) -> float:
    return max((abs(x - y) for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))), default=0.0)


def unused_labels(view: DatasetView) -> list[Finding]:
    """DG404: a declared foreground label occurs in no training case."""
    labels = view_spec(view).labels        # an unusable value is left out: DG301 reports it
    if not labels:
        return []
    present = case_labels(view)
    if not present:
        return []
    seen = set().union(*present.values())
    unused = []
    for name, v in labels.items():
        if name in ("background", "ignore"):
            continue
        vals = set(v) if isinstance(v, tuple) else {v}
        if not (vals & seen):
            unused.append(name)
    where = "raw/dataset.json" if view.has_raw else "preprocessed/dataset.json"
    if len(unused) > MAX_SAID:          # a dataset.json of 2M labels: one finding, not 2M
        return [finding("DG404", where, f"{len(unused)} of the {len(labels)} labels declared are in none of the "
                                        f"{len(present)} training cases: {few(unused)}")]
    out = []
    for name in unused:
        v = labels[name]
        shown = short(list(v) if isinstance(v, tuple) else v)
        out.append(finding("DG404", where, f"label '{clip(name)}' ({shown}) is declared but occurs in none of "
                                           f"the {len(present)} training cases"))
    return out
