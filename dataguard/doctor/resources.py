"""The resource model: peak resident memory of nnU-Net's steps, from shapes alone.

Every estimate is arithmetic on array sizes, following what nnU-Net's code holds at its
peak (read below, per step), plus a base per process (the interpreter with torch and
nnunetv2 imported), calibrated against measurements of real `nnUNetv2_preprocess` and
`nnUNetv2_predict` runs on the CPU (`benchmarks/calibrate_resources.py`,
`docs/resources.md`). Nothing here imports numpy, torch or nnunetv2: the shapes come from
the fingerprint, the plans and the NIfTI headers of the test images.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..checks.metadata import METADATA_LIMIT
from ..fsio import read_json
from ..spec import parse_spec

MB = 1 << 20

# --- calibration (docs/resources.md; benchmarks/calibrate_resources.py measures them) -----------
# Base RSS per process, measured (torch 2.14.1 CUDA build, nnunetv2 2.8.1, CPU): a spawned worker of
# nnUNetv2_preprocess imports torch and nnunetv2 (715 MB before it reads a case); its main process;
# nnUNetv2_predict's main process with the network loaded; its preprocessing and export workers.
# A CPU-only torch build has smaller bases (its libraries are smaller): the estimate errs high there.
BASE_PRE_WORKER = 715 * MB
BASE_PRE_MAIN = 695 * MB
BASE_PREDICT_MAIN = 1110 * MB
BASE_PREDICT_WORKER = 845 * MB
BASE_DA_WORKER = 300 * MB       # forked from the trainer (pages shared): not measured, see docs/resources.md
# Bytes per voxel and channel, from the arrays nnU-Net's code holds at each step's peak (see the
# functions), scaled by the slope fitted to the measurements (preprocess x0.85, export x0.59, main
# x3.7: the sliding window also holds the padded input, the gaussian and the queue's copy).
PRE_IN = 20          # float32 image + its float64 copy for resampling + the spline-prefiltered copy
PRE_OUT = 10         # float64 result of one channel's resize + the float32 result array
PRE_SEG_IN = 11      # the float32 segmentation read + (seg == label) as float64, uint8 masks
PRE_SEG_OUT = 15     # float64 resize of one label mask + the result + class_locations' argwhere
EXP_NET = 6          # the float16 logits received + their float64 copy for resampling
EXP_ORIG = 8         # float16 resampled + float32 copy + float32 softmax + float32 uncropped
EXP_SEG = 5          # argmax (int64) + the uint8 segmentation
MAIN_NET_IN = 15     # the preprocessed float32 image, padded, and the copy it arrived in
MAIN_NET_CLS = 15    # float16 logits accumulator + the prediction handed to the export worker
MAIN_NET = 7         # float16 n_predictions, the gaussian importance map
HEADROOM = 0.9       # of available RAM a plan may use: page cache, the desktop, the unexpected


@dataclass
class CaseShape:
    case: str
    shape: tuple            # array axes as nnU-Net reads them (z, y, x for SimpleITK)
    spacing: tuple          # same axis order
    channels: int = 1

    @property
    def voxels(self) -> int:
        return math.prod(int(s) for s in self.shape)


def target_shape(shape, spacing, plans: dict, configuration: str) -> tuple:
    """The shape nnU-Net resamples to: `compute_new_shape` with the configuration's spacing
    (2d: the first transposed axis keeps its spacing)."""
    tf = plans.get("transpose_forward") or list(range(len(shape)))
    sp_t = [float(spacing[i]) for i in tf]
    sh_t = [int(shape[i]) for i in tf]
    target = [float(x) for x in config_of(plans, configuration).get("spacing") or sp_t]
    if len(target) < len(sh_t):
        target = [sp_t[0], *target]
    return tuple(int(round(s * o / t)) for s, o, t in zip(sh_t, sp_t, target))


def config_of(plans: dict, configuration: str) -> dict:
    confs = plans.get("configurations", {})
    if configuration not in confs:
        raise KeyError(f"plans have no configuration {configuration!r} (have: {', '.join(confs) or 'none'})")
    c, seen = dict(confs[configuration]), {configuration}
    while c.get("inherits_from") in confs and c["inherits_from"] not in seen:
        seen.add(c["inherits_from"])
        c = {**confs[c["inherits_from"]], **{k: v for k, v in c.items() if k != "inherits_from"}}
    return c


def num_classes(dataset_json: dict) -> int:
    """Channels of the probabilities nnU-Net exports (LabelManager.num_segmentation_heads):
    every label with background, or one per region for a region model; never the ignore
    label. Read through the one dataset model, DatasetSpec."""
    spec = parse_spec(dataset_json)
    if spec.has_regions:
        return max(1, len(spec.regions or []))
    return max(2, len(spec.all_labels))


# --- preprocessing ---------------------------------------------------------------------------
def preprocess_case_bytes(n_in: int, n_out: int, channels: int, with_seg: bool = True) -> int:
    """Peak of one case in a preprocessing worker, above the worker's base.

    DefaultPreprocessor.run_case_npy: the image as float32 (a copy), transposed and cropped,
    normalised, then `resample_data_or_seg`: `data.astype(float)` (float64) and, per channel,
    skimage's resize (order 3: a spline-filtered float64 copy of the input, a float64 result)
    into the float32 result; then the segmentation: per label `(seg == label).astype(float)`
    resized with order 1; then `np.argwhere(seg == label)` for class_locations. When the shape
    does not change, nothing is resampled."""
    same = n_in == n_out
    img = channels * (n_in * (4 if same else PRE_IN) + (0 if same else n_out * PRE_OUT))
    seg = (n_in * PRE_SEG_IN + n_out * PRE_SEG_OUT) if with_seg and not same else (6 * n_in if with_seg else 0)
    return img + seg


@dataclass
class PreprocessEstimate:
    configuration: str
    peak_bytes_per_worker: int
    main_bytes: int
    largest_case: str | None
    largest_shape: tuple = ()
    target_shape: tuple = ()
    cases: int = 0
    recommended_np: int | None = None
    available_bytes: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["largest_shape"], d["target_shape"] = list(self.largest_shape), list(self.target_shape)
        return d


def fingerprint_cases(preprocessed: Path) -> list[CaseShape]:
    """Training cases' shapes after cropping and spacings, from dataset_fingerprint.json."""
    fp = read_json(Path(preprocessed) / "dataset_fingerprint.json", METADATA_LIMIT)
    shapes, spacings = fp.get("shapes_after_crop") or [], fp.get("spacings") or []
    channels = len(fp.get("foreground_intensity_properties_per_channel") or {"0": None})
    return [CaseShape(f"case {i}", tuple(s), tuple(sp), channels) for i, (s, sp) in enumerate(zip(shapes, spacings))]


def preprocess_estimate(preprocessed: Path, configuration: str, plans_name: str = "nnUNetPlans",
                        cases: list[CaseShape] | None = None, available: int | None = None,
                        cpus: int | None = None) -> PreprocessEstimate:
    """Peak RSS of one `nnUNetv2_preprocess` worker (its largest case) and the largest `-np`
    whose workers, with the main process, fit in `available` bytes."""
    plans = read_json(Path(preprocessed) / f"{plans_name}.json", METADATA_LIMIT)
    cases = fingerprint_cases(preprocessed) if cases is None else cases
    best = (0, None, (), ())
    for c in cases:
        out = target_shape(c.shape, c.spacing, plans, configuration)
        n_in = math.prod(int(x) for x in c.shape)
        b = preprocess_case_bytes(n_in, math.prod(out), c.channels)
        if b > best[0]:
            best = (b, c.case, tuple(c.shape), out)
    est = PreprocessEstimate(configuration, BASE_PRE_WORKER + best[0], BASE_PRE_MAIN, best[1], best[2], best[3],
                             len(cases))
    if available is not None:
        est.available_bytes = available
        est.recommended_np = fitting_workers(available, est.main_bytes, est.peak_bytes_per_worker,
                                             cpus or os.cpu_count() or 1, at_most=max(1, len(cases)))
    return est


def fitting_workers(available: int, main: int, per_worker: int, cpus: int, at_most: int | None = None) -> int:
    """The most workers (at least 0) whose peaks, with the main process, fit in HEADROOM of `available`."""
    room = available * HEADROOM - main
    n = int(room // per_worker) if per_worker > 0 else cpus
    n = min(n, cpus, at_most or cpus)
    return max(n, 0)


# --- prediction ------------------------------------------------------------------------------
@dataclass
class PredictEstimate:
    configuration: str
    classes: int
    main_bytes: int                # nnUNetv2_predict's own process: network + sliding window
    preprocess_bytes: int          # one -npp worker
    export_bytes: int              # one -nps worker: probabilities resampled to the original spacing
    largest_case: str | None = None
    growth: list = field(default_factory=list)   # (case, factor): resampling makes the array grow
    recommended_npp: int | None = None
    recommended_nps: int | None = None
    available_bytes: int | None = None

    @property
    def peak_bytes_per_case(self) -> int:
        """One case in flight: the main process, one preprocessing and one export worker."""
        return self.main_bytes + self.preprocess_bytes + self.export_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["peak_bytes_per_case"] = self.peak_bytes_per_case
        d["growth"] = [{"case": c, "factor": round(f, 2)} for c, f in self.growth]
        return d


def export_bytes(n_net: int, n_orig: int, classes: int) -> int:
    """Peak of exporting one case, above the worker's base.

    export_prediction_from_logits -> convert_predicted_logits_to_segmentation_with_correct_shape:
    the float16 logits (C, net shape) are resampled by `resample_data_or_seg` (a float64 copy,
    per channel a float64 resize, into a float16 result at the original shape), then `.float()`
    and softmax (two float32 arrays), the argmax, and the probabilities put back into the uncropped
    image (another float32 array of all classes)."""
    return classes * (n_net * EXP_NET + n_orig * EXP_ORIG) + n_orig * EXP_SEG


def predict_case_bytes(n_net: int, channels: int, classes: int) -> int:
    return n_net * (MAIN_NET_IN * channels + MAIN_NET_CLS * classes + MAIN_NET)


def predict_estimate(plans_file: Path, dataset_json_file: Path, configuration: str, images: list[CaseShape],
                     available: int | None = None, cpus: int | None = None) -> PredictEstimate:
    plans = read_json(plans_file, METADATA_LIMIT)
    dj = read_json(dataset_json_file, METADATA_LIMIT)
    classes = num_classes(dj)
    main = pre = exp = 0
    largest, growth = None, []
    for c in images:
        net = target_shape(c.shape, c.spacing, plans, configuration)
        n_net, n_orig = math.prod(net), c.voxels
        m = predict_case_bytes(n_net, c.channels, classes)
        p = preprocess_case_bytes(n_orig, n_net, c.channels, with_seg=False) + n_net * 4 * c.channels
        e = export_bytes(n_net, n_orig, classes)
        if e > exp:
            largest = c.case
        main, pre, exp = max(main, m), max(pre, p), max(exp, e)
        if n_orig and n_net / n_orig > GROWTH_FACTOR:
            growth.append((c.case, n_net / n_orig))
    est = PredictEstimate(configuration, classes, BASE_PREDICT_MAIN + main, BASE_PREDICT_WORKER + pre,
                          BASE_PREDICT_WORKER + exp, largest, growth)
    if available is not None:
        est.available_bytes = available
        est.recommended_npp, est.recommended_nps = fitting_npp_nps(est, available, cpus or os.cpu_count() or 1,
                                                                   len(images))
    return est


GROWTH_FACTOR = 1.5          # resampling to the training spacing grows a test image by more: named
NNUNET_DEFAULT_NPP = NNUNET_DEFAULT_NPS = 3


def fitting_npp_nps(est: PredictEstimate, available: int, cpus: int, cases: int) -> tuple[int, int]:
    """nnU-Net's defaults (3 and 3), lowered, the larger worker first, until the main process
    and the workers fit; (0, 0) when not even one of each does."""
    npp = nps = max(1, min(NNUNET_DEFAULT_NPP, cpus, max(cases, 1)))
    room = available * HEADROOM - est.main_bytes
    while npp * est.preprocess_bytes + nps * est.export_bytes > room:
        if npp == 1 and nps == 1:
            return 0, 0
        if nps > 1 and (est.export_bytes >= est.preprocess_bytes or npp == 1):
            nps -= 1
        else:
            npp -= 1
    return npp, nps


# --- training's data augmentation --------------------------------------------------------------
@dataclass
class ValidationEstimate:
    """nnU-Net's final validation (and its scoring): `nnUNet_def_n_proc` spawned workers (8 when
    unset), each importing torch and exporting one case's probabilities at the original spacing."""
    workers: int                   # what nnU-Net will start now
    worker_bytes: int
    recommended: int               # one per core, at most 8, as many as fit in RAM
    set_by_env: bool = False

    @property
    def workers_bytes(self) -> int:
        return self.workers * self.worker_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "workers_bytes": self.workers_bytes}


def validation_estimate(export_bytes: int, cpus: int, available: int, env_value: int | None) -> ValidationEstimate:
    per = BASE_PREDICT_WORKER + export_bytes
    fit = fitting_workers(available, BASE_PREDICT_MAIN, per, max(1, min(8, cpus))) if available else min(8, cpus)
    return ValidationEstimate(env_value if env_value else 8, per, max(1, fit), env_value is not None)


@dataclass
class TrainingEstimate:
    configuration: str
    n_proc_da: int
    batch_bytes: int
    worker_bytes: int
    shm_bytes: int

    @property
    def workers_bytes(self) -> int:
        return self.n_proc_da * self.worker_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "workers_bytes": self.workers_bytes}


def training_estimate(plans: dict, configuration: str, channels: int, n_proc_da: int) -> TrainingEstimate:
    """nnU-Net's NonDetMultiThreadedAugmenter: `n_proc_da` workers, `max(6, n // 2)` batches cached,
    each a float32 batch of patches plus its deep-supervision targets, passed through shared
    memory. Per worker: its base plus a batch being augmented (spatial transforms copy it a
    few times). Not calibrated by measurement (see docs/resources.md)."""
    c = config_of(plans, configuration)
    patch = math.prod(int(x) for x in c.get("patch_size") or [128, 128, 128])
    bs = int(c.get("batch_size") or 2)
    batch = bs * patch * (4 * channels + 4 + 1)         # data, float targets (all scales ~ 1.15x), seg
    cached = max(6, n_proc_da // 2) + n_proc_da if n_proc_da else 0
    return TrainingEstimate(configuration, n_proc_da, batch, BASE_DA_WORKER + 6 * batch, cached * batch)


# --- test images' shapes without reading their voxels ------------------------------------------
def nifti_shape(path: Path) -> tuple[tuple, tuple] | None:
    """(shape, spacing) in nnU-Net's array order (z, y, x), from a NIfTI-1/2 header; None when
    the file is not NIfTI (or is unreadable)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
    except (OSError, EOFError):
        return None
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", head[40:56])
            pix = struct.unpack(endian + "8f", head[76:108])
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            dim = struct.unpack(endian + "8q", head[16:80])
            pix = struct.unpack(endian + "8d", head[104:168])
            break
    else:
        return None
    n = max(1, min(int(dim[0]), 3))
    shape = tuple(int(x) for x in dim[1:1 + n])
    spacing = tuple(abs(float(x)) or 1.0 for x in pix[1:1 + n])
    return shape[::-1], spacing[::-1]


def image_infos(images_dir: Path, file_ending: str = ".nii.gz") -> list[CaseShape]:
    """One CaseShape per test case (`case_0000.nii.gz`, `case_0001.nii.gz` -> `case`, 2 channels)."""
    cases: dict[str, CaseShape] = {}
    for p in sorted(Path(images_dir).iterdir()):
        if not p.name.endswith(file_ending) or p.name.startswith("."):
            continue
        stem = p.name[: -len(file_ending)]
        case = stem[:-5] if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() else stem
        if case in cases:
            cases[case].channels += 1
            continue
        got = nifti_shape(p)
        if got is None:
            continue
        cases[case] = CaseShape(case, got[0], got[1], 1)
    return list(cases.values())
