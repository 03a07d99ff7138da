"""Small, realistic nnU-Net raw datasets made from scratch (demo, tests, benchmarks).

Cardiac-like short-axis volumes: myocardium (1) ringing the left ventricle (2), a
right ventricle (3) beside it. Label 3 is left out of some cases on purpose: the
rarest label is what breaks folds and Dice in real projects.
"""
from __future__ import annotations

import json
from pathlib import Path

LABELS = {"background": 0, "myocardium": 1, "left_ventricle": 2, "right_ventricle": 3}


def make_case(rng, shape=(48, 48, 12), with_rv: bool = True):
    """Return (image float32, label uint8) arrays in nibabel (x, y, z) order."""
    import numpy as np

    x, y, z = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    cx, cy = shape[0] / 2 + rng.uniform(-3, 3), shape[1] / 2 + rng.uniform(-3, 3)
    r_lv = shape[0] * rng.uniform(0.12, 0.18)
    wall = shape[0] * rng.uniform(0.05, 0.08)
    # the heart narrows towards the apex (higher z)
    taper = 1.0 - 0.5 * (z / max(shape[2] - 1, 1))
    d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    lab = np.zeros(shape, np.uint8)
    lab[d < (r_lv + wall) * taper] = 1
    lab[d < r_lv * taper] = 2
    if with_rv:
        rx = cx - (r_lv + wall) * 1.6
        d_rv = np.sqrt(((x - rx) / 1.4) ** 2 + (y - cy) ** 2)
        lab[(d_rv < r_lv * 1.1 * taper) & (lab == 0)] = 3
    img = rng.normal(40.0, 15.0, shape).astype(np.float32)
    for value, mean in ((1, 110.0), (2, 320.0), (3, 260.0)):
        img[lab == value] += mean
    return img, lab


def write_raw_dataset(raw_root: Path, dataset_id: int = 901, name: str = "DemoCardiac",
                      n_cases: int = 10, shape=(48, 48, 12), seed: int = 0,
                      rv_missing_every: int = 4, spacing=(1.25, 1.25, 8.0)) -> Path:
    """Write `Dataset{id}_{name}` (imagesTr, labelsTr, dataset.json) under raw_root."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    ds = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    for i in range(n_cases):
        case = f"heart_{i:03d}"
        with_rv = not (rv_missing_every and i % rv_missing_every == rv_missing_every - 1)
        img, lab = make_case(rng, shape, with_rv)
        nib.save(nib.Nifti1Image(img, affine), ds / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), ds / "labelsTr" / f"{case}.nii.gz")
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": LABELS,
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "name": name,
    }
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    return ds
