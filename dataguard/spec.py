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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .fsio import read_json

Value = int | tuple[int, ...]


def _int(v) -> int | None:
    """An integer label value (also a float or string holding one, as hand-written files do)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return None


@dataclass(frozen=True)
class DatasetSpec:
    labels: dict[str, Value] = field(default_factory=dict)
    channels: dict[int, str] = field(default_factory=dict)
    file_ending: str | None = None
    num_training: int | None = None
    regions_class_order: tuple[int, ...] | None = None
    version: int = 2
    problems: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def ignore_label(self) -> int | None:
        v = self.labels.get("ignore")
        return v if isinstance(v, int) else None

    @property
    def has_regions(self) -> bool:
        return any(isinstance(v, tuple) and len(v) > 1 for v in self.labels.values())

    @property
    def all_labels(self) -> list[int]:
        """Every value named by a label or region, ignore left out (LabelManager.all_labels)."""
        out = set()
        for k, v in self.labels.items():
            if k != "ignore":
                out |= set(v) if isinstance(v, tuple) else {v}
        return sorted(out)

    @property
    def foreground(self) -> list[int]:
        return [v for v in self.all_labels if v != 0]

    @property
    def regions(self) -> list[Value] | None:
        """Foreground regions in file order (LabelManager.foreground_regions); None without regions."""
        if not self.has_regions:
            return None
        return [v for k, v in self.labels.items() if k != "ignore" and v != 0 and set(v if isinstance(v, tuple) else (v,)) != {0}]

    @property
    def names(self) -> dict[int, str]:
        """value -> name of each plain (non-region) label, background and ignore included."""
        return {v: k for k, v in self.labels.items() if isinstance(v, int)}

    @property
    def foreground_names(self) -> dict[int, str]:
        """value -> name of each foreground label nnU-Net scores (no background, no ignore)."""
        ig = self.ignore_label
        return {v: k for v, k in sorted(self.names.items()) if v != 0 and v != ig}

    @property
    def n_channels(self) -> int:
        return len(self.channels)


def parse_spec(doc) -> DatasetSpec:
    """A DatasetSpec from a parsed dataset.json (any JSON value in, never an exception)."""
    if not isinstance(doc, dict):
        return DatasetSpec(problems=(f"dataset.json must be an object, not {type(doc).__name__}",))
    problems: list[str] = []
    version = 1 if ("modality" in doc or "training" in doc) and "channel_names" not in doc else 2
    if version == 1:
        problems.append("this is an nnU-Net v1 dataset.json ('modality', 'training'): convert it with "
                        "nnUNetv2_convert_old_nnUNet_dataset")
    labels = _labels(doc.get("labels"), version, problems)
    channels = _channels(doc.get("channel_names", doc.get("modality")), problems)
    ending = doc.get("file_ending")
    if version == 2 and not isinstance(ending, str):
        problems.append("'file_ending' must be a string such as \".nii.gz\"")
        ending = None
    n = doc.get("numTraining")
    if n is not None and _int(n) is None:
        problems.append(f"'numTraining' must be an integer, not {n!r:.40}")
    order = doc.get("regions_class_order")
    order_t = tuple(_int(x) for x in order) if isinstance(order, list) else None
    if order_t is not None and None in order_t:
        problems.append("'regions_class_order' must list integers")
        order_t = None
    spec = DatasetSpec(labels=labels, channels=channels, file_ending=ending if isinstance(ending, str) else None,
                       num_training=_int(n) if n is not None else None, regions_class_order=order_t,
                       version=version, raw=doc)
    problems += _region_problems(spec, order is not None)
    return DatasetSpec(**{**spec.__dict__, "problems": tuple(problems)})


def _labels(raw, version: int, problems: list[str]) -> dict[str, Value]:
    if not isinstance(raw, dict) or not raw:
        problems.append("'labels' must be a non-empty mapping name -> value")
        return {}
    if version == 1:                            # v1: {"0": "background", "1": "LV"}
        flipped = {}
        for k, v in raw.items():
            if _int(k) is not None and isinstance(v, str):
                flipped[v] = _int(k)
        return flipped
    out: dict[str, Value] = {}
    for name, v in raw.items():
        if isinstance(v, (list, tuple)):
            vals = tuple(_int(x) for x in v)
            if not vals or None in vals:
                problems.append(f"label '{name}': a region must list integer values, got {v!r:.60}")
                continue
            out[str(name)] = vals          # [3] stays a one-value region, as in nnU-Net
        elif _int(v) is not None:
            out[str(name)] = _int(v)
        else:
            problems.append(f"label '{name}': value {v!r:.60} is not an integer")
    if "background" not in out:
        problems.append("'labels' has no 'background' (it must be 0)")
    elif out["background"] != 0:
        problems.append(f"'background' must be 0, not {out['background']!r}")
    return out


def _channels(raw, problems: list[str]) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        problems.append("'channel_names' must be a non-empty mapping index -> name")
        return {}
    out = {}
    for k, v in raw.items():
        if _int(k) is None or _int(k) < 0:
            problems.append(f"channel index {k!r:.20} is not a non-negative integer")
            continue
        out[_int(k)] = str(v)
    if out and sorted(out) != list(range(len(out))):
        problems.append(f"channel indices must be 0..{len(out) - 1}, got {sorted(out)}")
    return dict(sorted(out.items()))


def _region_problems(spec: DatasetSpec, order_given: bool) -> list[str]:
    """What nnU-Net's LabelManager would assert on (DG312), said before it does."""
    out = []
    if "ignore" in spec.labels:
        ig = spec.labels["ignore"]
        if not isinstance(ig, int):
            out.append("the 'ignore' label must be one integer, not a region")
        elif spec.all_labels and ig != max(spec.all_labels) + 1:
            out.append(f"the 'ignore' label must be the highest value ({max(spec.all_labels) + 1}), not {ig}")
    if spec.has_regions:
        if spec.regions_class_order is None:
            out.append("labels are regions but 'regions_class_order' is missing")
        elif len(spec.regions_class_order) != len(spec.regions or []):
            out.append(f"'regions_class_order' has {len(spec.regions_class_order)} entries for "
                       f"{len(spec.regions or [])} regions")
    elif order_given and spec.regions_class_order is not None and not spec.has_regions:
        pass                                   # harmless: nnU-Net ignores it without regions
    if not spec.has_regions and spec.foreground:
        plain = sorted(v for k, v in spec.labels.items() if k != "ignore" and isinstance(v, int))
        if plain != list(range(len(plain))):
            out.append(f"label values must be consecutive from 0, got {plain}")
    return out


def load_spec(path: Path | str) -> DatasetSpec:
    """The DatasetSpec of a dataset.json file; an unreadable file is one problem, not an error."""
    try:
        return parse_spec(read_json(path))
    except (OSError, ValueError) as e:
        return DatasetSpec(problems=(f"{Path(path).name} unreadable: {e}",))
