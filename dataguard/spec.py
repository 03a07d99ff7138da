"""The one model of an nnU-Net `dataset.json`: parsed once, read the same way everywhere.

nnU-Net's own reading lives in `LabelManager` (labels, regions, the ignore label) and in
its dataset loaders (channels, `file_ending`, `numTraining`). `DatasetSpec` follows the
same rules without importing nnU-Net or numpy, and never raises: what a file gets wrong is
listed in `problems` (one sentence each), so the checks turn it into findings and every
other module can still use what is right.

- `labels`: name -> value, or a tuple of values for a region (`"whole": [1, 2, 3]`).
- `foreground`: the integer label values nnU-Net trains on, background and ignore left out
  (`LabelManager.foreground_labels`); for region datasets, the values the regions are made of.
- `regions`: the regions in order (`LabelManager.foreground_regions`), None without regions.
- `ignore_label`: the value of `"ignore"`, which nnU-Net masks out of the loss and of Dice.
- `version`: 2, or 1 for an nnU-Net v1 file (`modality`, labels keyed by value, `training`).
- `label_problems`: the part of `problems` about how `labels` are written (DG301 words the
  other keys its own way); `region_problems`: what is wrong with the region and ignore-label
  definitions (`regions_class_order`, the ignore label's value: DG312); `loose_labels`:
  labels not written as JSON integers.
- `ending` / `file_ending_of(doc)`: the file ending the walk matches names with (.nii.gz
  unless dataset.json gives a usable one).

A dataset.json may hold millions of labels: `parse_spec` remembers the specs of the last few
documents it parsed (by identity: the checks of one scan share one parsed `meta`), the derived
views (`all_labels`, `classes`, ...) are computed once per spec, and the problems of many labels
are summed up in one sentence with a count (`MAX_SAID`), so every reader stays linear in the
file's size. A label value no integer label map can hold (1e308, 2**70) is a problem, not a value.
"""
from __future__ import annotations

import itertools
import reprlib
import threading
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from .fsio import read_json

Value = int | tuple[int, ...]
DEFAULT_FILE_ENDING = ".nii.gz"     # nnU-Net's usual ending, used where dataset.json gives none
V1_PROBLEM = ("this is an nnU-Net v1 dataset.json ('modality', 'training'): convert it with "
              "nnUNetv2_convert_old_nnUNet_dataset")

# label values a label map can hold (int64, the widest integer voxel type numpy and nnU-Net's
# readers give); anything beyond is a problem of the file, never a value (1e308 -> OverflowError)
LABEL_MIN, LABEL_MAX = -(1 << 63), (1 << 63) - 1
MAX_SAID = 10           # problems of labels said one by one; the rest are one sentence with a count

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 40, 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6


def short(value) -> str:
    """A bounded repr for problem sentences and finding messages: a deep or huge JSON value stays
    one short line, and it never raises."""
    try:
        return _repr.repr(value)
    except Exception:  # noqa: BLE001 - a problem sentence must never be what fails
        return f"<{type(value).__name__}>"


def _usable_ending(fe) -> str:
    """`fe` when it can end a file name (".nii.gz", ".png"), else DEFAULT_FILE_ENDING."""
    return fe if isinstance(fe, str) and fe.startswith(".") and len(fe) > 1 else DEFAULT_FILE_ENDING


def file_ending_of(doc) -> str:
    """The file ending of a parsed dataset.json (any value): its `file_ending` when usable,
    else .nii.gz, so a broken file still lets the walk find the cases (DG301 reports it)."""
    return _usable_ending(doc.get("file_ending") if isinstance(doc, dict) else None)


def _json_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _json_label(v) -> bool:
    """A label value as nnU-Net needs it written: a JSON integer, or a non-empty list of them."""
    return _json_int(v) or (isinstance(v, (list, tuple)) and bool(v) and all(_json_int(x) for x in v))


def _integer(v) -> int | None:
    """The integer `v` names (an int, a float or string holding one, as hand-written files do),
    whatever its size; None for anything else. A digit string too long for any label map is
    LABEL_MAX + 1 (never parsed: int() of 5,000 digits raises)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else None
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        if len(v.strip()) > 40:
            return LABEL_MAX + 1
        try:
            return int(v)
        except ValueError:          # "--1", "²": isdigit() says yes, int() says no
            return None
    return None


def _int(v) -> int | None:
    """An integer label value within what a label map can hold (LABEL_MIN..LABEL_MAX): 2.0 and
    "2" are 2; 1e308 is None, as "abc" is."""
    out = _integer(v)
    return out if out is not None and LABEL_MIN <= out <= LABEL_MAX else None


def _out_of_range(v) -> bool:
    """`v` names an integer no label map can hold (1e308, 2**70, "9" * 30)."""
    out = _integer(v)
    return out is not None and not LABEL_MIN <= out <= LABEL_MAX


@dataclass(frozen=True)
class DatasetSpec:
    """The parsed dataset.json; its derived views are computed once (cached_property) and shared:
    callers treat what they return as read-only."""
    labels: dict[str, Value] = field(default_factory=dict)
    channels: dict[int, str] = field(default_factory=dict)
    file_ending: str | None = None
    num_training: int | None = None
    regions_class_order: tuple[int, ...] | None = None
    version: int = 2
    problems: tuple[str, ...] = ()
    label_problems: tuple[str, ...] = ()
    region_problems: tuple[str, ...] = ()
    loose_labels: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def ignore_label(self) -> int | None:
        v = self.labels.get("ignore")
        return v if isinstance(v, int) else None

    @cached_property
    def has_regions(self) -> bool:
        return any(isinstance(v, tuple) and len(v) > 1 for v in self.labels.values())

    @cached_property
    def all_labels(self) -> list[int]:
        """Every value named by a label or region, ignore left out (LabelManager.all_labels)."""
        out = set()
        for k, v in self.labels.items():
            if k != "ignore":
                out |= set(v) if isinstance(v, tuple) else {v}
        return sorted(out)

    @cached_property
    def foreground(self) -> list[int]:
        return [v for v in self.all_labels if v != 0]

    @cached_property
    def regions(self) -> list[Value] | None:
        """Foreground regions in file order (LabelManager.foreground_regions); None without regions."""
        if not self.has_regions:
            return None
        return [v for _, v in self._region_items()]

    def _region_items(self) -> list[tuple[str, Value]]:
        return [(k, v) for k, v in self.labels.items()
                if k != "ignore" and set(v if isinstance(v, tuple) else (v,)) != {0}]

    @cached_property
    def label_values(self) -> tuple[int, ...] | None:
        """Every value a label file may hold (regions flattened, ignore included). None when
        the labels are missing or any is not written as JSON integers: DG301/DG211 report
        that, and the value checks then accept any value rather than judge by a guess."""
        if self.version != 2 or self.loose_labels or not self.labels:
            return None
        vals: set[int] = set()
        for v in self.labels.values():
            vals |= set(v) if isinstance(v, tuple) else {v}
        return tuple(sorted(vals))

    @property
    def ending(self) -> str:
        """`file_ending` when usable, else .nii.gz (see file_ending_of)."""
        return _usable_ending(self.file_ending)

    @cached_property
    def dice_names(self) -> list[str]:
        """Foreground label or region names in the order nnU-Net reports Dice (its pseudo Dice
        in the training log): regions in file order, plain labels by value."""
        if self.has_regions:
            return [k for k, _ in self._region_items()]
        plain = ((v[0] if isinstance(v, tuple) else v, k) for k, v in self.labels.items() if k != "ignore")
        return [k for v, k in sorted(plain) if v > 0]

    @cached_property
    def names(self) -> dict[int, str]:
        """value -> name of each plain (non-region) label, background and ignore included."""
        return {v: k for k, v in self.labels.items() if isinstance(v, int)}

    @cached_property
    def foreground_names(self) -> dict[int, str]:
        """value -> name of each foreground label nnU-Net scores (no background, no ignore)."""
        ig = self.ignore_label
        return {v: k for v, k in sorted(self.names.items()) if v != 0 and v != ig}

    @cached_property
    def classes(self) -> dict[int, tuple[str, tuple[int, ...]]]:
        """What nnU-Net scores, in its order: key -> (name, label values). Plain labels are keyed
        by their value; regions by their 1-based position (LabelManager.foreground_regions), each
        holding the values a label map marks it with. Background and ignore are never classes."""
        if self.has_regions:
            return {i + 1: (k, v if isinstance(v, tuple) else (v,)) for i, (k, v) in enumerate(self._region_items())}
        return {v: (k, (v,)) for v, k in self.foreground_names.items()}

    @cached_property
    def class_names(self) -> dict[int, str]:
        """key -> name of every class (see `classes`): label names, or region names."""
        return {k: name for k, (name, _) in self.classes.items()}

    def present_classes(self, values) -> set[int]:
        """The class keys a label map holding `values` contains: a region when any of its
        values is there (nnU-Net's region_or_label_to_mask), a label when it is there."""
        vals = set(values)
        return {k for k, (_, vs) in self.classes.items() if vals.intersection(vs)}

    @property
    def n_channels(self) -> int:
        return len(self.channels)


_PARSED: list[tuple[object, DatasetSpec]] = []     # (doc, its spec), newest first
_PARSED_LOCK = threading.Lock()
REMEMBERED = 4          # documents whose spec parse_spec keeps


def parse_spec(doc) -> DatasetSpec:
    """A DatasetSpec from a parsed dataset.json (any JSON value in, never an exception).

    Parsed once per document: the spec of each of the last REMEMBERED documents is kept with the
    document itself (so its id cannot be reused), and a second call with the same object returns
    the same spec. Callers treat `doc` as read-only once parsed (a scan never changes `meta`)."""
    with _PARSED_LOCK:
        for known, spec in _PARSED:
            if known is doc:
                return spec
    spec = _parse(doc)
    if isinstance(doc, dict) and doc:
        with _PARSED_LOCK:
            _PARSED.insert(0, (doc, spec))
            del _PARSED[REMEMBERED:]
    return spec


def _parse(doc) -> DatasetSpec:
    if not isinstance(doc, dict):
        return DatasetSpec(problems=(f"dataset.json must be an object, not {type(doc).__name__}",))
    problems: list[str] = []            # all but those of labels and regions_class_order
    label_problems: list[str] = []
    version = 1 if ("modality" in doc or "training" in doc) and "channel_names" not in doc else 2
    labels, loose = _labels(doc.get("labels"), version, label_problems)
    channels = _channels(doc.get("channel_names", doc.get("modality")), problems)
    ending = doc.get("file_ending")
    if version == 2 and not isinstance(ending, str):
        problems.append("'file_ending' must be a string such as \".nii.gz\"")
        ending = None
    n = doc.get("numTraining")
    if n is not None and _int(n) is None:
        problems.append(f"'numTraining' must be an integer, not {short(n)}")
    order = doc.get("regions_class_order")
    order_t = _order(order)
    spec = DatasetSpec(labels=labels, channels=channels, file_ending=ending if isinstance(ending, str) else None,
                       num_training=_int(n) if n is not None else None, regions_class_order=order_t,
                       version=version, loose_labels=loose, raw=doc)
    region_problems = _region_problems(spec, order) if version == 2 else []
    label_problems += _numbering_problems(spec) if version == 2 else []
    head = [V1_PROBLEM] if version == 1 else []
    return replace(spec, problems=tuple(head + label_problems + region_problems + problems),
                   label_problems=tuple(label_problems), region_problems=tuple(region_problems))


def _order(order) -> tuple[int, ...] | None:
    """regions_class_order as integers; None when missing or not a list of them."""
    order_t = tuple(_int(x) for x in order) if isinstance(order, list) else None
    return None if order_t is None or None in order_t else order_t


def _labels(raw, version: int, problems: list[str]) -> tuple[dict[str, Value], tuple[str, ...]]:
    """(labels, names of the labels not written as JSON integers), problems appended."""
    if not isinstance(raw, dict) or not raw:
        problems.append("'labels' must be a non-empty mapping name -> value")
        return {}, ()
    loose = tuple(str(k) for k, v in raw.items() if not (type(v) is int or _json_label(v)))
    if version == 1:                            # v1: {"0": "background", "1": "LV"}
        flipped = {}
        for k, v in raw.items():
            if _int(k) is not None and isinstance(v, str):
                flipped[v] = _int(k)
        return flipped, loose
    # while every label is a plain name -> JSON integer (the usual file), `raw` itself is the
    # result: no copy of a 2M-label mapping, and no call per label
    out: dict[str, Value] | None = None
    said: list[str] = []
    unsaid: list[str] = []                      # labels with a problem beyond the first MAX_SAID
    for i, (name, v) in enumerate(raw.items()):
        if type(v) is int and type(name) is str and LABEL_MIN <= v <= LABEL_MAX:
            if out is not None:
                out[name] = v
            continue
        if out is None:
            out = dict(itertools.islice(raw.items(), i))
        mine: list[str] = []
        value = _label_value(str(name), v, mine)
        if mine:
            if len(said) < MAX_SAID:
                said += mine
            else:
                unsaid.append(str(name))
        if value is not None:
            out[str(name)] = value
    out = raw if out is None else out
    problems += said
    if unsaid:
        problems.append(f"{len(unsaid)} more labels have such problems: {few(unsaid)}")
    if "background" not in out:
        problems.append("'labels' has no 'background' (it must be 0)")
    elif out["background"] != 0:
        problems.append(f"'background' must be 0, not {short(out['background'])}")
    return out, loose


def clip(text: str, n: int = 80) -> str:
    """`text` cut to `n` characters ("..." where cut): a name in a sentence stays short."""
    return text if len(text) <= n else text[: n - 3] + "..."


def few(names, total: int | None = None, n: int = 5) -> str:
    """The first `n` of a list of names, quoted and clipped, and how many more there are of
    `total` (default: len(names)): "'a', 'b', 'c' and 99 more"."""
    total = len(names) if total is None else total
    shown = ", ".join(f"'{clip(str(x))}'" for x in names[:n])
    return shown + (f" and {total - min(n, len(names))} more" if total > n else "")


def bunched(items: list, one, many) -> list:
    """Findings of one kind: `one(item)` for each while there are at most MAX_SAID items, else
    the single finding `many(items)` (a count and the first names, see `few`): a file naming 2M
    cases or an archive of 100k members gives one finding, not 2M rows and a 1 GB manifest."""
    if len(items) <= MAX_SAID:
        return [one(x) for x in items]
    return [many(items)]


def _label_value(name: str, v, problems: list[str]) -> Value | None:
    """One label's value, read leniently ("2", 2.0 -> 2, as nnU-Net's int() does) but with a
    problem for anything not written as JSON integers; None when it names no integer at all,
    or one no label map can hold (1e308)."""
    if isinstance(v, (list, tuple)):
        if any(_out_of_range(x) for x in v):
            problems.append(f"label '{clip(name)}': region {short(v)} holds a value beyond what a label map "
                            f"can hold (64-bit integers)")
            return None
        vals = tuple(_int(x) for x in v)
        if not vals or None in vals:
            problems.append(f"label '{clip(name)}': a region must list integer values, got {short(v)}")
            return None
        value: Value = vals          # [3] stays a one-value region, as in nnU-Net
    elif _out_of_range(v):
        problems.append(f"label '{clip(name)}': value {short(v)} is beyond what a label map can hold "
                        f"(64-bit integers): not a label value")
        return None
    elif _int(v) is not None:
        value = _int(v)
    else:
        problems.append(f"label '{clip(name)}': value {short(v)} is not an integer")
        return None
    if not _json_label(v):
        fixed = list(value) if isinstance(value, tuple) else value
        problems.append(f"label '{clip(name)}': write {short(v)} as JSON integers, {short(fixed)}")
    return value


def _channels(raw, problems: list[str]) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        problems.append("'channel_names' must be a non-empty mapping index -> name")
        return {}
    out, bad = {}, []
    for k, v in raw.items():
        if _int(k) is None or _int(k) < 0:
            bad.append(k)
            continue
        out[_int(k)] = v if isinstance(v, str) else short(v)
    problems += [f"channel index {short(k)} is not a non-negative integer" for k in bad[:MAX_SAID]]
    if len(bad) > MAX_SAID:
        problems.append(f"{len(bad) - MAX_SAID} more channel indices are not non-negative integers")
    if out and sorted(out) != list(range(len(out))):
        problems.append(f"channel indices must be 0..{len(out) - 1}, got {short(sorted(out))}")
    return dict(sorted(out.items()))


def _region_problems(spec: DatasetSpec, order) -> list[str]:
    """What nnU-Net's LabelManager and dataset check would assert on, said before they do."""
    out = []
    if "ignore" in spec.labels:
        ig = spec.labels["ignore"]
        if not isinstance(ig, int):
            out.append("the ignore label must be one integer, not a region")
        elif spec.all_labels and ig != max(spec.all_labels) + 1:
            out.append(f"the ignore label must be the highest value ({max(spec.all_labels) + 1}), not {ig}")
    if spec.has_regions:
        if order is None:
            out.append("labels are regions but 'regions_class_order' is missing")
        elif spec.regions_class_order is None:
            out.append(f"'regions_class_order' must list integers, not {short(order)}")
        elif len(spec.regions_class_order) != len(spec.regions or []):
            out.append(f"'regions_class_order' has {len(spec.regions_class_order)} entries for "
                       f"{len(spec.regions or [])} regions")
        else:
            named = set(spec.all_labels) - {0}
            stray = [v for v in spec.regions_class_order if v not in named]
            if stray:
                out.append(f"'regions_class_order' writes {short(stray)}, which no region contains "
                           f"(the regions hold {short(sorted(named))})")
        ig = spec.ignore_label
        if ig is not None and any(ig in (v if isinstance(v, tuple) else (v,))
                                  for k, v in spec.labels.items() if k != "ignore"):
            out.append(f"the ignore label {ig} is also part of a region")
    return out


def _numbering_problems(spec: DatasetSpec) -> list[str]:
    """Plain labels must be 0..n-1 (how labels are written: DG301, not a region problem)."""
    if spec.has_regions or not spec.foreground:
        return []
    plain = sorted(v[0] if isinstance(v, tuple) else v for k, v in spec.labels.items() if k != "ignore")
    if plain != list(range(len(plain))):
        return [f"label values must be consecutive from 0, got {short(plain)}"]
    return []


def load_spec(path: Path | str) -> DatasetSpec:
    """The DatasetSpec of a dataset.json file; an unreadable file is one problem, not an error."""
    try:
        return parse_spec(read_json(path))
    except (OSError, ValueError) as e:
        return DatasetSpec(problems=(f"{Path(path).name} unreadable: {e}",))
