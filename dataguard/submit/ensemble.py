"""Per-label weighted ensembling of nnU-Net probability files, and post-processing.

What `nnUNetv2_ensemble` does (average the probabilities, argmax, write with nnU-Net's own
image writer and the case's properties), plus a weight per model and label.

Weights file (models named by their `--model` spec, or by input folder name):

    {"labels": {"3": {"2d": 1.0, "3d_lowres": 0.0}}, "default": {"2d": 0.5, "3d_lowres": 0.5}}

For every class c, background (0) included, the combined probability is
    P_c = sum_m w_mc * p_mc / sum_m w_mc
with w_mc from `labels[c]`, else from `default`, else equal weights (nnUNetv2_ensemble's
average). Weights are relative within a class: only their ratios matter. Background is a
class like any other: give it weights under "0" or it takes the default. The label map is
argmax_c P_c (ties go to the lower label, as numpy's and nnU-Net's argmax do). A class
whose weights are all zero is refused: it could never be predicted.

Region-based datasets (`"whole": [1, 2, 3]` with `regions_class_order`): nnU-Net writes one
sigmoid probability per region, no background. Keys of `labels` are then region positions
(1 = the first region in dataset.json); each region's probability is combined the same way,
and the label map is made as `LabelManager.convert_probabilities_to_segmentation` makes it:
for each region in order, voxels whose combined probability exceeds 0.5 take that region's
`regions_class_order` value (later regions overwrite earlier ones).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import PKL_LIMIT
from ..checks.base import expected_nbytes, parse_npy_header
from ..checks.metadata import METADATA_LIMIT
from ..checks.npz import member_bytes
from ..checks.safe_pickle import Refused, loads_numpy
from ..errors import MemberError, UnsafeInput, UsageError
from ..fsio import open_nonblocking, read_json
from ..spec import parse_spec
from .predictions import find_probabilities

POSTPROCESS = ("none", "lcc", "lcc+fill")


@dataclass
class Weights:
    per_label: dict[int, dict[str, float]] = field(default_factory=dict)
    default: dict[str, float] | None = None
    checkpoint: str | None = None       # the checkpoint whose out-of-fold probabilities tuned them (None: final)

    @property
    def tuned_on(self) -> str:
        """checkpoint_<this>.pth made the probabilities these weights were tuned on."""
        return self.checkpoint or "final"

    @classmethod
    def load(cls, path: Path | None, models: list[str]) -> "Weights":
        if path is None:
            return cls()
        try:
            raw = json.loads(Path(path).read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read the weights file {path}: {e}") from None
        return cls.parse(raw, models, str(path))

    @classmethod
    def parse(cls, raw, models: list[str], where: str = "weights") -> "Weights":
        if not isinstance(raw, dict) or not set(raw) <= {"labels", "default", "checkpoint"}:
            raise UsageError(f"{where}: expected {{\"labels\": {{label: {{model: weight}}}}, \"default\": "
                             f"{{model: weight}}, \"checkpoint\": \"final\"}}")
        checkpoint = raw.get("checkpoint")
        if checkpoint is not None and checkpoint not in ("final", "best"):
            raise UsageError(f"{where}: \"checkpoint\" is \"final\" or \"best\", not {checkpoint!r}")

        def entry(d, what):
            if not isinstance(d, dict):
                raise UsageError(f"{where}: {what} must map model names to numbers")
            unknown = sorted(set(d) - set(models))
            if unknown:
                raise UsageError(f"{where}: {what} names unknown model(s) {', '.join(unknown)} "
                                 f"(the models are: {', '.join(models)})")
            missing = sorted(set(models) - set(d))
            if missing:
                raise UsageError(f"{where}: {what} gives no weight to {', '.join(missing)}; name every model "
                                 f"(0 to leave one out)")
            out = {}
            for m, w in d.items():
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not (w >= 0) or w == float("inf"):
                    raise UsageError(f"{where}: {what}: weight of {m} must be a number >= 0, not {w!r}")
                out[m] = float(w)
            if sum(out.values()) <= 0:
                raise UsageError(f"{where}: {what}: all weights are 0, so that class could never be predicted")
            return out

        per = {}
        for k, d in (raw.get("labels") or {}).items():
            try:
                lab = int(k)
            except ValueError:
                raise UsageError(f"{where}: label keys are label values (\"3\"), not {k!r}") from None
            per[lab] = entry(d, f"label {lab}")
        default = entry(raw["default"], "default") if raw.get("default") is not None else None
        return cls(per, default, checkpoint)

    def matrix(self, models: list[str], n_classes: int, regions: bool = False):
        """weights[m, c] as a numpy array (models x probability channels). With regions,
        channel c is region c + 1 (there is no background channel)."""
        import numpy as np

        w = np.ones((len(models), n_classes), dtype=np.float64)
        for c in range(n_classes):
            d = self.per_label.get(c + 1 if regions else c, self.default)
            if d is not None:
                w[:, c] = [d[m] for m in models]
        return w

    def to_dict(self) -> dict:
        return {"labels": {str(k): v for k, v in sorted(self.per_label.items())}, "default": self.default,
                "checkpoint": self.checkpoint}


def combine(probabilities: list, weights, region_order: tuple[int, ...] | None = None):
    """The label map of the per-class weighted mean of (C, ...) probability arrays: argmax over
    classes, or with `region_order` (regions_class_order) nnU-Net's region rule (see above).

    `weights`: array (models x classes). Returns (segmentation int, combined probabilities).
    """
    import numpy as np

    if not probabilities:
        raise ValueError("nothing to combine")
    shape = probabilities[0].shape
    for p in probabilities[1:]:
        if p.shape != shape:
            raise ValueError(f"probability arrays differ in shape: {p.shape} vs {shape}")
    w = np.asarray(weights, dtype=np.float64)
    acc = np.zeros(shape, dtype=np.float32)
    for m, p in enumerate(probabilities):
        acc += p.astype(np.float32, copy=False) * w[m].astype(np.float32).reshape((-1,) + (1,) * (p.ndim - 1))
    acc /= w.sum(axis=0).astype(np.float32).reshape((-1,) + (1,) * (acc.ndim - 1))
    if region_order is not None:
        return regions_to_segmentation(acc, region_order), acc
    return acc.argmax(0), acc


def regions_to_segmentation(probabilities, region_order: tuple[int, ...]):
    """LabelManager.convert_probabilities_to_segmentation for regions: uint16, later regions win."""
    import numpy as np

    if len(region_order) != probabilities.shape[0]:
        raise UsageError(f"regions_class_order has {len(region_order)} entries, the probabilities "
                         f"{probabilities.shape[0]} regions")
    seg = np.zeros(probabilities.shape[1:], dtype=np.uint16)
    for i, c in enumerate(region_order):
        seg[probabilities[i] > 0.5] = c
    return seg


def postprocess(seg, mode="none"):
    """`lcc`: keep each label's largest connected component (face connectivity); `lcc+fill`:
    then fill background enclosed by a label, in 3D and in each slice along the first array
    axis (nnU-Net's z). A hole holding another label stays as it is. A decision
    (evaluate.postprocess.Decision): exactly its operations, as nnU-Net applies them."""
    import numpy as np

    if hasattr(mode, "apply"):
        return mode.apply(seg)
    if mode == "none":
        return seg
    if mode not in POSTPROCESS:
        raise UsageError(f"unknown post-processing {mode!r} (use {', '.join(POSTPROCESS)})")
    from scipy import ndimage

    out = np.array(seg, copy=True)
    for lab in [int(v) for v in np.unique(out) if v != 0]:
        cc, n = ndimage.label(out == lab)
        if n > 1:
            sizes = np.bincount(cc.ravel())
            sizes[0] = 0
            out[(cc != 0) & (cc != sizes.argmax())] = 0
    if mode == "lcc+fill":
        for lab in [int(v) for v in np.unique(out) if v != 0]:
            mask = out == lab
            filled = ndimage.binary_fill_holes(mask)
            if mask.ndim == 3:                      # and slice by slice: a hole open only through the
                for k in range(mask.shape[0]):     # volume's first/last slice is still a hole in-plane
                    filled[k] |= ndimage.binary_fill_holes(mask[k])
            out[filled & (out == 0)] = lab
    return out


def as_label_dtype(seg):
    import numpy as np

    top = int(seg.max()) if seg.size else 0
    return seg.astype(np.uint8 if top < 256 else np.uint16)


# --- files ----------------------------------------------------------------------------------
def read_probabilities(path: Path):
    """A probability file's (C, ...) array. nnU-Net's `case.npz` is read by ISA-L in one call and
    its .npy header parsed without numpy's pickle path; an object array is refused by name."""
    import numpy as np

    try:
        data = member_bytes(path, "probabilities.npy")
    except MemberError as e:
        if "unsupported compression" in str(e):
            return _read_probabilities_numpy(path)        # not how numpy writes: its own reader, no pickle
        raise MemberError(f"{path}: {e}") from None       # damaged (CRC, zlib, truncated) or no such member
    try:
        dtype, shape, fortran, hlen = parse_npy_header(data[:4096])
    except ValueError:
        return _read_probabilities_numpy(path)
    if dtype.hasobject:
        raise UnsafeInput(f"{path}: 'probabilities' is an object array (loading it would unpickle code); "
                          f"refused, nothing of it ran")
    if len(data) - hlen != expected_nbytes(dtype, shape):
        raise UsageError(f"{path}: 'probabilities' holds {len(data) - hlen} bytes, its header says "
                         f"{expected_nbytes(dtype, shape)}")
    return np.frombuffer(data, dtype=dtype, offset=hlen).reshape(shape, order="F" if fortran else "C")


def _read_probabilities_numpy(path: Path):
    import numpy as np

    try:
        with np.load(str(path), allow_pickle=False) as z:     # an object array raises, it is never unpickled
            return z["probabilities"]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UnsafeInput(f"{path}: 'probabilities' is an object array (loading it would unpickle code); "
                              f"refused, nothing of it ran") from None
        raise


def read_properties(path: Path) -> dict:
    """A case's `.pkl` (nnU-Net's properties) through the safe unpickler: no code runs."""
    with open_nonblocking(path, follow_links=True) as f:     # never a FIFO; bounded like the scan's read
        data = f.read(PKL_LIMIT + 1)
    if len(data) > PKL_LIMIT:
        raise UsageError(f"{path}: larger than {PKL_LIMIT >> 20} MB: not nnU-Net's properties; not read")
    try:
        props = loads_numpy(data)
    except Refused as e:
        raise UnsafeInput(f"{path}: {e}") from None
    if not isinstance(props, dict):
        raise UsageError(f"{path}: nnU-Net properties must be a dict, this pickle holds a {type(props).__name__}")
    return props


def nnunet_meta(folder: Path) -> tuple[dict, dict]:
    """dataset.json and plans.json nnU-Net writes beside predictions (or beside the folds)."""
    for d in (folder, folder.parent, folder.parent.parent):
        dj, pj = d / "dataset.json", d / "plans.json"
        if dj.is_file() and pj.is_file():
            try:
                return read_json(dj, METADATA_LIMIT), read_json(pj, METADATA_LIMIT)
            except (OSError, ValueError) as e:
                raise UsageError(f"cannot read {dj.name} / {pj.name} in {d}: {e}") from None
    raise UsageError(f"no dataset.json + plans.json in or above {folder}: nnU-Net writes them beside its "
                     f"predictions; they say how to write the label maps")


def writer_for(plans: dict, dataset_json: dict):
    """nnU-Net's own reader/writer for this dataset (the one nnUNetv2_ensemble uses), found the
    way PlansManager.image_reader_writer_class finds it, without importing torch (2 s)."""
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

    return recursive_find_reader_writer_by_name(plans["image_reader_writer"])


def region_order_of(dataset_json: dict) -> tuple[int, ...] | None:
    """regions_class_order for a region-based dataset (None: plain labels); a malformed region
    definition is refused with what is wrong (DG312 says the same in a scan)."""
    spec = parse_spec(dataset_json)
    if not spec.has_regions:
        return None
    if spec.region_problems or spec.regions_class_order is None:
        raise UsageError("dataset.json's regions cannot be ensembled: " + "; ".join(spec.region_problems))
    return spec.regions_class_order


@dataclass
class EnsembleReport:
    written: list[Path] = field(default_factory=list)
    weights: dict = field(default_factory=dict)
    postprocess: str = "none"


def _properties_file(files: dict[str, dict], models: list[str], case: str) -> Path:
    pkl = next((files[m][case].pkl for m in models if files[m][case].pkl is not None), None)
    if pkl is None:
        raise UsageError(f"case {case}: no properties file (.pkl) beside any model's probabilities; nnU-Net "
                         f"needs it to put the label map back into the image's geometry")
    return pkl


def ensemble_folders(inputs: dict[str, Path], out_dir: Path, weights: Weights, mode: str = "none",
                     files: dict[str, dict] | None = None, on_case=None) -> EnsembleReport:
    """Combine probability folders case by case and write `case<file_ending>` label maps.

    `files`: {model: {case: ProbabilityFile}} as `predictions.find_probabilities` found them."""
    models = list(inputs)
    files = files or {m: find_probabilities(p) for m, p in inputs.items()}
    dataset_json, plans = nnunet_meta(Path(inputs[models[0]]))
    writer = writer_for(plans, dataset_json)()
    order = region_order_of(dataset_json)
    ending = dataset_json.get("file_ending", ".nii.gz")
    cases = sorted(set.intersection(*[set(files[m]) for m in models]))
    props = {case: read_properties(_properties_file(files, models, case)) for case in cases}  # all, before any write
    if hasattr(mode, "labels"):                     # a decision: its labels must be this dataset's
        declared = {v: k for k, v in (dataset_json.get("labels") or {}).items() if isinstance(v, int)}
        wrong = [f"{n} ({k})" for k, n in mode.labels.items() if declared.get(k) != n]
        if wrong:
            raise UsageError(f"the post-processing decision names labels this dataset.json does not: "
                             f"{', '.join(wrong)}")
    report = EnsembleReport(weights=weights.to_dict(), postprocess=mode if isinstance(mode, str) else mode.describe())
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in cases:
        probs = [read_probabilities(files[m][case].npz) for m in models]
        seg, _ = combine(probs, weights.matrix(models, probs[0].shape[0], regions=order is not None), order)
        seg = as_label_dtype(postprocess(seg, mode))
        target = out_dir / f"{case}{ending}"
        writer.write_seg(seg, str(target), props[case])
        report.written.append(target)
        if on_case:
            on_case(case)
    return report
