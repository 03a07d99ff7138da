"""DG314: two labels that are mirror images of each other, which nnU-Net's mirroring confuses.

nnU-Net's default trainer mirrors every patch along every axis in augmentation and again at
test time. For a pair such as kidney_left / kidney_right that shows the network a left kidney
that looks exactly like a right one, labelled left: it learns to confuse them (TotalSegmentator
trains without mirroring for this reason). This check finds such pairs from the data, never
from the names.

Per training case (channel 0 and the label, read again here: the per-file facts hold no
voxels), on every axis of nnU-Net's array order (z, y, x) = (0, 1, 2), for every pair of
labels (a, b) each with at least MIN_VOXELS voxels on the grid analysed:

- overlap: Dice of a mirrored about the body's midplane with b >= OVERLAP_MIN. The body is
  the image's foreground (voxels above p1 + 10% of p99 - p1); its midplane on the axis runs
  through the body's centre of mass (a table or an arm moves a bounding box more);
- shape: Dice of a mirrored and moved onto b's centre of mass with b >= SHAPE_MIN, and the
  smaller volume at least VOLUME_MIN of the larger;
- intensity: the mean distance of the quartiles (p25, p50, p75) of channel 0 inside a and
  inside b, in units of the larger interquartile range (at least 1% of the image's p1-p99
  range), <= INTENSITY_MAX.

A case agrees when all hold; the pair is reported for an axis when at least half of the
cases that hold both labels agree (AGREE_SHARE), with the median figures. Cardiac left and
right ventricles are not reported: mirrored they are different shapes, and where a dataset
draws them alike their intensities still differ (blood pool vs the thinner right side).

Cost, bounded by the input: at most MAX_CASES cases (spread over the sorted list), each read
on a strided grid of at most MAX_VOXELS voxels (nibabel reads the strided slabs only); pairs
whose volumes already differ too much are never mirrored. The scanner reuses the findings
while no raw file changed (dataset-check signature), so a rescan reads nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..findings import Finding, finding
from ..fsio import open_nonblocking
from ..spec import parse_spec
from .cases import DatasetView, case_labels

OVERLAP_MIN = 0.4        # Dice of a mirrored about the body's midplane with b
SHAPE_MIN = 0.6          # Dice of a mirrored onto b's centre with b
VOLUME_MIN = 0.6         # smaller / larger voxel count
INTENSITY_MAX = 0.5      # quartile distance in interquartile ranges
MIN_VOXELS = 500         # per label and case on the analysed grid: fewer say nothing about shape
AGREE_SHARE = 0.5        # share of the cases holding both labels that must agree
MAX_CASES = 20
MAX_VOXELS = 1 << 21     # per case (image and label each): about 128^3
AXIS_NAMES = ("z", "y", "x")
WORLD = {"L": "left-right", "R": "left-right", "A": "front-back", "P": "front-back",
         "S": "head-feet", "I": "head-feet"}


@dataclass
class PairFigures:
    """One pair on one axis in one case."""
    overlap: float
    shape: float
    volume: float
    intensity: float

    @property
    def agrees(self) -> bool:
        return (self.overlap >= OVERLAP_MIN and self.shape >= SHAPE_MIN and self.volume >= VOLUME_MIN
                and self.intensity <= INTENSITY_MAX)


@dataclass
class Verdict:
    """One pair on one axis over the dataset."""
    a: int
    b: int
    axis: int
    cases: list[str] = field(default_factory=list)          # cases holding both labels, judged
    agreeing: list[str] = field(default_factory=list)
    figures: list[PairFigures] = field(default_factory=list)

    @property
    def confusable(self) -> bool:
        return bool(self.cases) and len(self.agreeing) >= AGREE_SHARE * len(self.cases)

    def median(self, attr: str) -> float:
        v = sorted(getattr(f, attr) for f in self.figures)
        n = len(v)
        return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


# --- reading --------------------------------------------------------------------------------
def _stride(shape) -> int:
    n = math.prod(shape)
    dims = sum(1 for s in shape if s > 1) or 1
    return max(1, math.ceil((n / MAX_VOXELS) ** (1 / dims)))


def read_zyx(path: str, stride: int | None = None):
    """(array in nnU-Net's order (z, y, x), the stride used). NIfTI through nibabel, reading
    only the strided voxels; anything else through SimpleITK. No link is followed."""
    import numpy as np

    name = path.rsplit("/", 1)[-1].lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        import gzip

        with open_nonblocking(path) as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            fh = nib.FileHolder(fileobj=f)
            img = nib.Nifti1Image.from_file_map({"header": fh, "image": fh})
            shape = tuple(int(s) for s in img.shape)
            spatial = shape[:3]
            s = stride or _stride(spatial)
            sl = tuple(slice(None, None, s) for _ in spatial) + (0,) * (len(shape) - len(spatial))
            arr = np.asarray(img.dataobj[sl])
        arr = arr.reshape(arr.shape + (1,) * (3 - arr.ndim)).transpose(2, 1, 0)
        return arr, s
    import SimpleITK as sitk

    img = sitk.ReadImage(path)
    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = arr[..., 0]
    arr = arr.reshape((1,) * (3 - arr.ndim) + arr.shape) if arr.ndim < 3 else arr[:3] if arr.ndim > 3 else arr
    s = stride or _stride(arr.shape)
    return np.ascontiguousarray(arr[::s, ::s, ::s]), s


# --- the figures of one case ----------------------------------------------------------------
def body_centre(image) -> list[float]:
    """Centre of mass of the image's foreground (p1 + 10% of p99 - p1), per axis."""
    import numpy as np

    img = image.astype(np.float32, copy=False)
    finite = np.isfinite(img)
    vals = img[finite]
    if vals.size == 0:
        return [(s - 1) / 2 for s in image.shape]
    p1, p99 = np.percentile(vals[:: max(1, vals.size // 100_000)], [1, 99])
    body = finite & (img > p1 + 0.1 * (p99 - p1))
    if not body.any():
        return [(s - 1) / 2 for s in image.shape]
    out = []
    for ax in range(3):
        other = tuple(i for i in range(3) if i != ax)
        prof = body.sum(axis=other, dtype=np.int64)
        out.append(float((prof * np.arange(len(prof))).sum() / prof.sum()))
    return out


def _dice_of(coords, label, b: int, na: int, nb: int) -> float:
    import numpy as np

    shape = label.shape
    inside = np.ones(coords.shape[1], bool)
    for ax in range(3):
        inside &= (coords[ax] >= 0) & (coords[ax] < shape[ax])
    c = coords[:, inside]
    hits = int(np.count_nonzero(label[c[0], c[1], c[2]] == b))
    return 2 * hits / (na + nb)


def _quartiles(values):
    import numpy as np

    return np.percentile(values, [25, 50, 75]) if values.size else None


def case_figures(image, label, labels: list[int] | None = None) -> dict[tuple[int, int, int], PairFigures]:
    """(a, b, axis) -> figures, for the pairs of labels (a < b) large enough to judge; both
    arrays in nnU-Net's order, the same shape."""
    import numpy as np

    if image.shape != label.shape:
        return {}
    lab = np.asarray(label)
    if lab.dtype.kind == "f":                   # DG401's business; NaN is background here
        lab = np.rint(np.nan_to_num(lab, nan=0.0, posinf=0.0, neginf=0.0)).astype(np.int64)
    present, counts = np.unique(lab, return_counts=True)
    wanted = set(labels) if labels is not None else None
    big = [int(v) for v, n in zip(present.tolist(), counts.tolist())
           if v > 0 and n >= MIN_VOXELS and (wanted is None or v in wanted)]
    if len(big) < 2:
        return {}
    centre = body_centre(image)
    img = image.astype(np.float32, copy=False)
    finite = img[np.isfinite(img)]
    p1, p99 = np.percentile(finite[:: max(1, finite.size // 100_000)], [1, 99]) if finite.size else (0.0, 0.0)
    floor = max(0.01 * float(p99 - p1), 1e-6)
    coords = {v: np.array(np.nonzero(lab == v)) for v in big}
    quart = {v: _quartiles(img[tuple(coords[v])][np.isfinite(img[tuple(coords[v])])]) for v in big}
    out = {}
    for i, a in enumerate(big):
        for b in big[i + 1:]:
            na, nb = coords[a].shape[1], coords[b].shape[1]
            volume = min(na, nb) / max(na, nb)
            if volume < VOLUME_MIN or quart[a] is None or quart[b] is None:
                continue
            qa, qb = quart[a], quart[b]
            spread = max(float(qa[2] - qa[0]), float(qb[2] - qb[0]), floor)
            intensity = float(np.abs(qa - qb).mean()) / spread
            cb = coords[b].mean(axis=1)
            for ax in range(3):
                if lab.shape[ax] < 2:
                    continue
                m = coords[a].copy()
                m[ax] = np.rint(2 * centre[ax] - m[ax]).astype(m.dtype)
                overlap = _dice_of(m, lab, b, na, nb)
                shift = np.rint(cb - m.mean(axis=1)).astype(m.dtype)
                shape = _dice_of(m + shift[:, None], lab, b, na, nb)
                out[(a, b, ax)] = PairFigures(round(overlap, 4), round(shape, 4), round(volume, 4),
                                              round(intensity, 4))
    return out


# --- the dataset check ----------------------------------------------------------------------
def _training_pairs(view: DatasetView, ending: str) -> list[tuple[str, str, str, str]]:
    """(case, image path, label path, image rel) for training cases whose channel 0 and label
    were read by the raw-image check (same shape), sorted by case."""
    out = []
    for case, tasks in sorted(view.raw_cases().items()):
        img = next((t for t in tasks if t.kind == "image" and t.rel.endswith(f"/{case}_0000{ending}")), None)
        lab = next((t for t in tasks if t.kind == "label"), None)
        if img is None or lab is None:
            continue
        ri, rl = view.results.get(img.rel), view.results.get(lab.rel)
        if ri is None or rl is None or "shape" not in ri.facts or "shape" not in rl.facts:
            continue
        if list(ri.facts["shape"])[:3] != list(rl.facts["shape"])[:3]:
            continue                                    # DG304 says so
        out.append((case, img.path, lab.path, img.rel))
    return out


def _spread(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def judge(cases: dict[str, dict[tuple[int, int, int], PairFigures]],
          present: dict[str, set[int]]) -> list[Verdict]:
    """Every (pair, axis) seen in some case, over the cases holding both labels large enough."""
    verdicts: dict[tuple[int, int, int], Verdict] = {}
    for case, figs in cases.items():
        for (a, b, ax), f in figs.items():
            v = verdicts.setdefault((a, b, ax), Verdict(a, b, ax))
            v.cases.append(case)
            v.figures.append(f)
            if f.agrees:
                v.agreeing.append(case)
    for (a, b, ax), v in verdicts.items():
        # cases holding both labels but too small or unlike in volume count as not agreeing
        for case, labs in present.items():
            if a in labs and b in labs and case not in v.cases:
                v.cases.append(case)
    return sorted(verdicts.values(), key=lambda v: (v.a, v.b, v.axis))


def axis_words(axis: int, axcodes: str | None) -> str:
    """"axis 2 (x, left-right)": nnU-Net's array axis, its letter, and its world direction
    when the image's orientation says it (axcodes are per file axis i, j, k = x, y, z)."""
    letter = AXIS_NAMES[axis]
    world = WORLD.get((axcodes or "")[2 - axis:3 - axis] or "?")
    return f"axis {axis} ({letter}{', ' + world if world else ''})"


def check_mirroring(view: DatasetView) -> list[Finding]:
    """DG314 over a raw dataset's training cases."""
    if not view.has_raw or not view.raw_root:
        return []
    spec = parse_spec(view.meta or {})
    names = {v: k for k, v in spec.labels.items() if isinstance(v, int)}
    present = case_labels(view)
    pairs = _training_pairs(view, spec.ending)
    cand = [p for p in pairs if len(present.get(p[0], set())) >= 2]
    chosen = _spread(cand, MAX_CASES)
    figures: dict[str, dict] = {}
    axcodes: str | None = None
    for case, img_path, lab_path, img_rel in chosen:
        try:
            label, s = read_zyx(lab_path)
            image, _ = read_zyx(img_path, s)
        except Exception:  # noqa: BLE001 - unreadable files are the raw-image check's findings
            continue
        figs = case_figures(image, label)
        figures[case] = {k: f for k, f in figs.items() if spec.ignore_label not in k[:2]}
        axcodes = axcodes or view.results[img_rel].facts.get("axcodes")
    judged = {c: present.get(c, set()) for c in figures}
    out = []
    by_pair: dict[tuple[int, int], list[Verdict]] = {}
    for v in judge(figures, judged):
        if v.confusable:
            by_pair.setdefault((v.a, v.b), []).append(v)
    for (a, b), vs in sorted(by_pair.items()):
        v = max(vs, key=lambda v: (len(v.agreeing) / len(v.cases), v.median("overlap")))
        na, nb = names.get(a, str(a)), names.get(b, str(b))
        axes = ",".join(str(x.axis) for x in sorted(vs, key=lambda x: x.axis))
        out.append(finding(
            "DG314", "raw/labelsTr",
            f"labels '{na}' ({a}) and '{nb}' ({b}) are mirror images along {axis_words(v.axis, axcodes)} "
            f"in {len(v.agreeing)} of {len(v.cases)} cases: mirrored about the body, '{na}' overlaps "
            f"'{nb}' (Dice {v.median('overlap'):.2f}), same shape (Dice {v.median('shape'):.2f} when "
            f"centred, volume ratio {v.median('volume'):.2f}) and intensities (quartiles "
            f"{v.median('intensity'):.2f} IQR apart); nnU-Net mirrors along every axis in augmentation "
            f"and at test time, so the network learns to confuse them",
            help=f"train without mirroring on that axis: dataguard train {view.name} CONFIG FOLDS "
                 f"--no-mirroring {axes}, or nnUNetv2_train ... -tr nnUNetTrainerNoMirroring"))
    return out
