"""The figures of one case's annotation, per label, that the data-alone audit compares across
cases. Pure functions of (image, label, spacing): each is tested on hand-made volumes.

All arrays are in nnU-Net's order (z, y, x), possibly on a strided grid (`spacing` is then
the strided voxel's size). Per label L present in the case:

- `volume`: mm^3 (from the full-resolution voxel count when the caller has it);
- `components`, `stray`: connected components (26-neighbourhood) and the share of L's
  voxels outside its largest one; `stray_mm`: how far the largest stray piece lies from
  the largest component (closest voxels, mm);
- `offset`: L's centre of mass minus the centre of all labelled voxels, mm per axis;
- `inside`: median of the image inside L minus the body's median, over the body's p1-p99
  range (the body: voxels above p1 + 10% of p99 - p1);
- `contrast`: median of the image on L's inner boundary ring minus on its outer ring, over
  the same range (a shifted, eroded or bloated outline loses it);
- `edge`: mean gradient magnitude on L's boundary over the body's mean around the labels
  (their joint box; an outline on the image's edges is well above 1);
- `gaps`, `gap_at`: empty z slices between L's first and last slice, and the first one.
"""
from __future__ import annotations

import math

from .resample import components, values

MARGIN = 2        # voxels around a label's box for its rings


def body_range(image, percentiles=None) -> tuple[float, float, float]:
    """(median, p1, p99) of the body: voxels above p1 + 10% of (p99 - p1). `percentiles`:
    the image's (p1, p50, p99) as the scan recorded them; else sampled here."""
    import numpy as np

    vals = image[np.isfinite(image)] if image.dtype.kind == "f" else image.ravel()
    if vals.size == 0:
        return 0.0, 0.0, 1.0
    sample = vals[:: max(1, vals.size // 50_000)].astype(np.float64)
    if percentiles is not None and all(isinstance(x, (int, float)) and math.isfinite(x) for x in percentiles):
        p1, p99 = float(percentiles[0]), float(percentiles[2])
    else:
        p1, p99 = (float(x) for x in np.percentile(sample, [1, 99]))
    body = sample[sample > p1 + 0.1 * (p99 - p1)]
    med = float(np.median(body)) if body.size else float(np.median(sample))
    return med, p1, p99


def _boxes(label, values):
    """{value: box (tuple of slices) widened by MARGIN} for the values present."""
    from scipy import ndimage

    out = {}
    lab = label if label.dtype.kind == "u" or (label.size and label.min() >= 0) else label.clip(0, None)
    objs = ndimage.find_objects(lab, max_label=max(values))
    for v in values:
        if v - 1 < len(objs) and objs[v - 1] is not None:
            out[v] = tuple(slice(max(0, s.start - MARGIN), min(n, s.stop + MARGIN))
                           for s, n in zip(objs[v - 1], label.shape))
    return out


def _stray_distance(lab, n: int, sizes, spacing) -> float:
    """mm from the largest component to the largest other one (closest voxels)."""
    import numpy as np
    from scipy import ndimage

    if n < 2:
        return 0.0
    order = np.argsort(sizes)[::-1]
    main, other = int(order[0]) + 1, int(order[1]) + 1
    dist = ndimage.distance_transform_edt(lab != main, sampling=spacing)
    return float(dist[lab == other].min())


def label_figures(image, label, spacing, labels: list[int] | None = None,
                  voxels: dict[int, int] | None = None, full_spacing=None, percentiles=None) -> dict[int, dict]:
    """{label value: figures} for the foreground labels present (see the module's list).
    `voxels`: full-resolution counts per label (the scan's), with `full_spacing` the
    full-resolution voxel size; else counted here on the grid given."""
    import numpy as np
    from scipy import ndimage

    spacing = [float(s) for s in spacing]
    if labels is None:
        labels = [int(v) for v in values(label)]
    present = labels
    present = [v for v in present if v > 0]
    if not present:
        return {}
    med, p1, p99 = body_range(image, percentiles)
    rng = max(p99 - p1, 1e-6)
    img = image
    fg = label > 0
    centre_all = _centre(fg, spacing)
    boxes = _boxes(label, present)
    # the image's gradient only around the labels (their joint box): the edges that matter
    union = tuple(slice(min(b[i].start for b in boxes.values()), max(b[i].stop for b in boxes.values()))
                  for i in range(label.ndim)) if boxes else None
    grad, grad_body = None, 0.0
    if union is not None and img.ndim == 3 and min(b.stop - b.start for b in union) > 1:
        region = img[union].astype(np.float32)
        grad = np.sqrt(sum(g * g for g in np.gradient(region, *spacing)))
        body = region > p1 + 0.1 * (p99 - p1)
        grad_body = float(grad[body].mean()) if body.any() else 0.0
    out = {}
    for v in present:
        box = boxes.get(v)
        if box is None:
            continue
        m = label[box] == v
        n_vox = int(np.count_nonzero(m))
        if n_vox == 0:
            continue
        f: dict = {}
        vol = voxels.get(v) * math.prod(full_spacing) if voxels and v in voxels and full_spacing else \
            n_vox * math.prod(spacing)
        f["volume"] = float(vol)
        lab, n = components(m)
        sizes = np.bincount(lab.ravel())[1:] if n else np.zeros(0, int)
        f["components"] = int(n)
        f["stray"] = float(1 - sizes.max() / n_vox) if n else 0.0
        f["stray_mm"] = _stray_distance(lab, n, sizes, spacing)
        c = _centre(m, spacing, [s.start for s in box])
        f["offset"] = [float(a - b) for a, b in zip(c, centre_all)]
        sub = img[box].astype(np.float64)
        f["inside"] = float((_median(sub[m]) - med) / rng)
        inner = m & ~ndimage.binary_erosion(m, border_value=1)
        outer = ndimage.binary_dilation(m) & ~m
        if inner.any() and outer.any():
            f["contrast"] = float((_median(sub[inner]) - _median(sub[outer])) / rng)
        else:
            f["contrast"] = 0.0
        if grad is not None and grad_body > 0:
            ring = inner | outer
            local = tuple(slice(b.start - u.start, b.stop - u.start) for b, u in zip(box, union))
            f["edge"] = float(grad[local][ring].mean() / grad_body)
        occupied = np.flatnonzero(np.any(m, axis=(1, 2)))
        z0 = box[0].start
        span = occupied[-1] - occupied[0] + 1
        gaps = np.setdiff1d(np.arange(occupied[0], occupied[-1] + 1), occupied)
        f["gaps"] = int(span - len(occupied))
        f["gap_at"] = int(gaps[0] + z0) if len(gaps) else None
        f["slice"] = int(z0 + occupied[len(occupied) // 2])
        out[v] = f
    return out


def _median(v) -> float:
    """The median of at most ~100,000 evenly spread values (a large label's exact median
    moves by less than its noise)."""
    import numpy as np

    return float(np.median(v[:: max(1, v.size // 100_000)]))


def _centre(mask, spacing, start=None) -> list[float]:
    """Centre of mass of a mask in mm (index x spacing), `start` the mask's offset."""
    import numpy as np

    start = start or [0] * mask.ndim
    out = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        prof = mask.sum(axis=other, dtype=np.int64)
        tot = prof.sum()
        pos = (prof * np.arange(len(prof))).sum() / tot if tot else (len(prof) - 1) / 2
        out.append(float((pos + start[ax]) * spacing[ax]))
    return out
