"""DG211: the preprocessed dataset's own metadata, which nnU-Net reads when training starts.

`nnUNetPlans*.json` (configurations and their types), the preprocessed copy of
`dataset.json` (the trainer reads this one, not the raw one) and
`dataset_fingerprint.json`. nnU-Net indexes these with bare `dict[...]` and trusts the
types, so a wrong type crashes training hours after the data was "ready"; here every
problem is one finding that names the key path, what was expected and what was found.

The validators take any JSON value and never raise.
"""
from __future__ import annotations

import json
import math
import numbers

from ..findings import Finding, finding
from ..spec import LABEL_MAX, LABEL_MIN, MAX_SAID, clip, few, short  # short: the one bounded repr, used by every check
from .base import FileTask

DATASET_JSON, FINGERPRINT, SPLITS = "dataset.json", "dataset_fingerprint.json", "splits_final.json"
NOT_PLANS = (DATASET_JSON, FINGERPRINT, SPLITS)
# nnU-Net's metadata JSON (plans, the preprocessed dataset.json, the fingerprint) is KBs to a few
# MB; beyond this a file is not read (parsing JSON takes several times its size in memory)
METADATA_LIMIT = 32 << 20
# a voxel size in mm nnU-Net can compute with: from a nanometre to thousands of kilometres;
# outside it only a broken header or file, and products with shapes stay far from overflow
SPACING_RANGE = (1e-10, 1e10)


def role(rel: str) -> str | None:
    """"plans", "dataset", "fingerprint" for a JSON file directly in the preprocessed dataset folder."""
    parts = rel.split("/")
    if len(parts) != 2 or parts[0] != "preprocessed" or not parts[1].endswith(".json"):
        return None
    name = parts[1]
    if name == DATASET_JSON:
        return "dataset"
    if name == FINGERPRINT:
        return "fingerprint"
    if name == SPLITS:
        return None
    return "plans"


# --- type predicates: any JSON value in, bool out ------------------------------------------------
def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_float(v) -> float | None:
    """A real number (not a bool) as the finite float64 nnU-Net computes with; None for anything
    else: NaN, inf, and an int too large for a float (2**33554432; json reads 10**400) included."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    try:
        f = float(v)
    except (OverflowError, ValueError, TypeError):
        return None
    return f if math.isfinite(f) else None


def is_num(v) -> bool:
    """A finite JSON number (json accepts NaN, Infinity and ints beyond any float; nnU-Net would
    compute with them, or fail to)."""
    return (is_int(v) or isinstance(v, float)) and as_float(v) is not None


def is_spacing(v) -> bool:
    """A voxel size nnU-Net can use: a finite float64 within SPACING_RANGE (so positive)."""
    f = as_float(v)
    return f is not None and SPACING_RANGE[0] <= f <= SPACING_RANGE[1]


def _list_of(pred, *, nonempty: bool = True):
    def check(v) -> bool:
        return isinstance(v, list) and (bool(v) or not nonempty) and all(pred(x) for x in v)
    return check


pos_int = lambda v: is_int(v) and v > 0            # noqa: E731
nonneg_int = lambda v: is_int(v) and v >= 0        # noqa: E731
json_spacing = lambda v: is_num(v) and is_spacing(v)  # noqa: E731
nonempty_str = lambda v: isinstance(v, str) and bool(v)  # noqa: E731


def is_permutation(v) -> bool:
    return (isinstance(v, list) and bool(v) and all(is_int(x) for x in v)
            and sorted(v) == list(range(len(v))))


def is_label_value(v) -> bool:
    """An int label, or a region: a non-empty list of ints."""
    return is_int(v) or (isinstance(v, list) and bool(v) and all(is_int(x) for x in v))


def _dict_of_dicts(v) -> bool:
    return isinstance(v, dict) and all(isinstance(x, dict) for x in v.values())


# (key, predicate, what it must be) -----------------------------------------------------------
CONFIG_REQUIRED = ("data_identifier", "patch_size", "spacing", "batch_size")
CONFIG_FIELDS = (
    ("data_identifier", nonempty_str, "a non-empty string (the folder of the preprocessed cases)"),
    ("patch_size", _list_of(pos_int), "a list of positive integers"),
    ("spacing", _list_of(json_spacing), "a list of positive numbers"),
    ("batch_size", pos_int, "a positive integer"),
    ("normalization_schemes", _list_of(lambda x: isinstance(x, str)), "a list of strings"),
    ("use_mask_for_norm", _list_of(lambda x: isinstance(x, bool)), "a list of booleans"),
    ("preprocessor_name", nonempty_str, "a non-empty string"),
    ("median_image_size_in_voxels", _list_of(is_num), "a list of numbers"),
    ("batch_dice", lambda v: isinstance(v, bool), "a boolean"),
    ("resampling_fn_data", nonempty_str, "a non-empty string"),
    ("resampling_fn_seg", nonempty_str, "a non-empty string"),
    ("resampling_fn_probabilities", nonempty_str, "a non-empty string"),
    ("resampling_fn_data_kwargs", lambda v: isinstance(v, dict), "an object"),
    ("resampling_fn_seg_kwargs", lambda v: isinstance(v, dict), "an object"),
    ("resampling_fn_probabilities_kwargs", lambda v: isinstance(v, dict), "an object"),
    ("architecture", lambda v: isinstance(v, dict) and isinstance(v.get("network_class_name"), str)
     and isinstance(v.get("arch_kwargs"), dict),
     "an object with 'network_class_name' (string) and 'arch_kwargs' (object)"),
    ("previous_stage", nonempty_str, "a configuration name"),
    ("next_stage", lambda v: nonempty_str(v) or _list_of(nonempty_str)(v),
     "a configuration name or a list of them"),
)
PLANS_REQUIRED = ("plans_name", "configurations")
PLANS_FIELDS = (
    ("plans_name", nonempty_str, "a non-empty string"),
    ("dataset_name", nonempty_str, "a non-empty string"),
    ("configurations", lambda v: isinstance(v, dict) and bool(v), "a non-empty object of configurations"),
    ("transpose_forward", is_permutation, "a permutation of 0..n-1, e.g. [0, 1, 2]"),
    ("transpose_backward", is_permutation, "a permutation of 0..n-1, e.g. [0, 1, 2]"),
    ("original_median_spacing_after_transp", _list_of(is_num), "a list of numbers"),
    ("original_median_shape_after_transp", _list_of(is_num), "a list of numbers"),
    ("image_reader_writer", nonempty_str, "a non-empty string"),
    ("experiment_planner_used", nonempty_str, "a non-empty string"),
    ("label_manager", nonempty_str, "a non-empty string"),
    ("foreground_intensity_properties_per_channel", _dict_of_dicts,
     "an object mapping channel -> intensity statistics (objects)"),
)
DATASET_REQUIRED = ("labels", "file_ending", "numTraining")     # + channel_names or modality
DATASET_FIELDS = (
    ("labels", lambda v: isinstance(v, dict) and bool(v),
     "a non-empty object mapping label name -> integer (or list of integers for a region)"),
    ("channel_names", lambda v: isinstance(v, dict) and bool(v), "a non-empty object mapping channel index -> name"),
    ("modality", lambda v: isinstance(v, dict) and bool(v), "a non-empty object mapping channel index -> name"),
    ("file_ending", lambda v: isinstance(v, str) and v.startswith(".") and len(v) > 1,
     "a file ending string such as '.nii.gz'"),
    ("numTraining", nonneg_int, "a non-negative integer"),
    ("regions_class_order", _list_of(is_int), "a list of integers"),
)
FINGERPRINT_FIELDS = (
    ("spacings", _list_of(_list_of(json_spacing), nonempty=False), "a list of lists of positive numbers"),
    ("shapes_after_crop", _list_of(_list_of(nonneg_int), nonempty=False), "a list of lists of integers"),
    ("foreground_intensity_properties_per_channel", _dict_of_dicts,
     "an object mapping channel -> intensity statistics (objects)"),
    ("median_relative_size_after_cropping", is_num, "a number"),
)


def _fields(obj: dict, spec, required, prefix: str) -> list[str]:
    out = []
    for key, pred, what in spec:
        if key in obj:
            if not pred(obj[key]):
                out.append(f"{prefix}{key} must be {what}, got {short(obj[key])}")
        elif key in required:
            out.append(f"{prefix}{key} is missing (must be {what})")
    return out


# --- per role ---------------------------------------------------------------------------------
def plans_problems(plans) -> list[str]:
    """Why nnU-Net's PlansManager / trainer would fail on this plans JSON value."""
    if not isinstance(plans, dict):
        return [f"must hold a JSON object, got {_json_type(plans)}"]
    out = _fields(plans, PLANS_FIELDS, PLANS_REQUIRED, "")
    fwd, bwd = plans.get("transpose_forward"), plans.get("transpose_backward")
    if is_permutation(fwd) and is_permutation(bwd):
        inverse = sorted(range(len(fwd)), key=fwd.__getitem__)
        if bwd != inverse:
            out.append(f"transpose_backward must undo transpose_forward ({fwd}), i.e. be {inverse}, got {bwd}")
    configs = plans.get("configurations")
    if isinstance(configs, dict):
        for name, conf in configs.items():
            out += _config_problems(name, conf, configs)
        out += _inheritance_cycles(configs)
    return out


def _config_problems(name: str, conf, configs: dict) -> list[str]:
    prefix = f"configurations.{name}."
    if not isinstance(conf, dict):
        return [f"configurations.{name} must be an object, got {short(conf)}"]
    out = []
    if "inherits_from" in conf:
        parent = conf["inherits_from"]
        if not isinstance(parent, str) or parent not in configs or parent == name:
            others = sorted(k for k in configs if k != name)
            out.append(f"{prefix}inherits_from must name another configuration "
                       f"(one of {short(others)}), got {short(parent)}")
        required: tuple[str, ...] = ()
    else:
        required = CONFIG_REQUIRED
    out += _fields(conf, CONFIG_FIELDS, required, prefix)
    patch, spacing = conf.get("patch_size"), conf.get("spacing")
    if _list_of(pos_int)(patch) and _list_of(json_spacing)(spacing) and len(patch) != len(spacing):
        out.append(f"{prefix}patch_size has {len(patch)} axes but {prefix}spacing has {len(spacing)}")
    norm, mask = conf.get("normalization_schemes"), conf.get("use_mask_for_norm")
    if isinstance(norm, list) and isinstance(mask, list) and len(norm) != len(mask):
        out.append(f"{prefix}normalization_schemes ({len(norm)} channels) and use_mask_for_norm "
                   f"({len(mask)} channels) differ in length")
    return out


def _inheritance_cycles(configs: dict) -> list[str]:
    out, seen = [], set()
    for start in configs:
        chain, cur = [], start
        while isinstance(configs.get(cur), dict) and isinstance(configs[cur].get("inherits_from"), str):
            if cur in chain:
                cycle = chain[chain.index(cur):]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    out.append("configurations: circular inherits_from "
                               + " -> ".join(cycle + [cur]))
                break
            chain.append(cur)
            cur = configs[cur]["inherits_from"]
    return out


def _label_problem(v) -> str | None:
    """What is wrong with one label value of the preprocessed dataset.json, or None."""
    if not is_label_value(v):
        return f"must be an integer (or a list of integers for a region), got {short(v)}"
    if not all(LABEL_MIN <= x <= LABEL_MAX for x in (v if isinstance(v, list) else (v,))):
        return f"is {short(v)}, beyond what a label map can hold (64-bit integers)"
    return None


def dataset_problems(meta) -> list[str]:
    """Why the trainer would fail on this preprocessed dataset.json value (types only)."""
    if not isinstance(meta, dict):
        return [f"must hold a JSON object, got {_json_type(meta)}"]
    out = _fields(meta, DATASET_FIELDS, DATASET_REQUIRED, "")
    if isinstance(meta.get("labels"), dict):
        # DatasetSpec's reading of each label, without a whole spec; a file of 2M labels: one sentence
        bad = [(k, why) for k, v in meta["labels"].items() if (why := _label_problem(v))]
        out += [f"labels.{clip(str(k))} {why}" for k, why in bad[:MAX_SAID]]
        if len(bad) > MAX_SAID:
            out.append(f"{len(bad) - MAX_SAID} more labels are not usable integers either: "
                       f"{few([k for k, _ in bad[MAX_SAID:]])}")
    if "channel_names" not in meta and "modality" not in meta:
        out.append("channel_names is missing (must be a non-empty object mapping channel index -> name)")
    return out


def fingerprint_problems(fp) -> list[str]:
    if not isinstance(fp, dict):
        return [f"must hold a JSON object, got {_json_type(fp)}"]
    return _fields(fp, FINGERPRINT_FIELDS, (), "")


_BY_ROLE = {"plans": plans_problems, "dataset": dataset_problems, "fingerprint": fingerprint_problems}


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def parse_json(data: bytes):
    """(value, None) or (None, why it is not JSON nnU-Net can load)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text ({e.reason} at byte {e.start})"
    if not text.strip():
        return None, "empty file, not JSON"
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "JSON nested too deeply to load"
    except ValueError as e:
        return None, f"invalid JSON: {e}"


def check_metadata_file(task: FileTask, data: bytes | None, unread: str | None = None) -> tuple[list[Finding], dict]:
    """DG211 for a JSON file directly in the preprocessed dataset folder; nothing for others.
    `data` None: the file was not read, `unread` says why (larger than METADATA_LIMIT)."""
    kind = role(task.rel) if task.where == "dataset" else None
    if kind is None:
        return [], {}
    name = task.rel.rsplit("/", 1)[-1]
    if data is None:
        return [finding("DG211", task.rel, f"{name}: {unread or 'not read'} (nnU-Net writes KBs to a few MB)")], {}
    value, err = parse_json(data)
    problems = [err] if err else _BY_ROLE[kind](value)
    return [finding("DG211", task.rel, f"{name}: {p}") for p in problems], {}


def metadata_presence(view) -> list[Finding]:
    """DG211: the preprocessed folder has no dataset.json or no plans file, or one of its
    metadata files could not be read at all (a FIFO, a folder, permissions: the per-file
    result then holds only the scanner's "cannot read" finding)."""
    if view.preprocessed_root is None:
        return []
    out = []
    kinds = set()
    for t in view.tasks:
        kind = role(t.rel) if t.where == "dataset" else None
        if kind is None:
            continue
        kinds.add(kind)
        r = view.results.get(t.rel)
        unread = (r.by_check.get("read") or []) if r is not None else []
        if unread and not any(f.code == "DG211" for f in r.findings):
            why = unread[0].message
            out.append(finding("DG211", t.rel, f"{t.rel.rsplit('/', 1)[-1]}: {why}; nnU-Net cannot load it"))
    if "dataset" not in kinds:
        out.append(finding("DG211", f"preprocessed/{DATASET_JSON}",
                           "dataset.json is missing from the preprocessed folder: nnU-Net's trainer reads "
                           "this copy (nnUNetv2_plan_and_preprocess writes it)"))
    if "plans" not in kinds:
        out.append(finding("DG211", "preprocessed/nnUNetPlans.json",
                           "no plans file (nnUNetPlans.json or another *Plans*.json) in the preprocessed "
                           "folder: nnU-Net cannot train without one"))
    return out
