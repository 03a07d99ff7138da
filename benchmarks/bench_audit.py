#!/usr/bin/env python
"""Benchmark the label audit from the data alone (DG406) on annotations corrupted at known places.

Builds a raw cardiac-CT-like dataset (bench_raw's generator: int16 HU images at 0.7 x 0.7 x
2.5 mm, labels myocardium / LV / RV), then corrupts the labels of some cases, `--per-kind`
cases per kind, recording which outside the dataset (corruptions.json beside it):

  swap        LV and RV swapped
  shift       the whole label map moved 4 voxels in-plane
  other_case  another case's annotation saved with this image
  unlabelled  RV left unlabelled
  eroded      LV's outline eroded by 2 voxels
  bloated     the myocardium dilated by 2 voxels
  stray       a blob of LV far from the heart

Scans it (a real `dataguard scan`, in-process), runs the audit and prints, overall and per
kind (that kind's cases against the clean ones), the ranking's average precision (AUPRC)
and recall in the top k (k = the number of corrupted cases), beside the baseline the issue
names: the largest |z-score| of a label's volume and mean intensity. Also times a scan with
the audit (its figures computed while the scan streams each case) against a bare raw scan of
the same files (DG314, DG405 and DG406 left out), both on all cores.

usage:
  python benchmarks/bench_audit.py                 # 40 cases, 2 per kind
  python benchmarks/bench_audit.py --cases 24 --per-kind 1
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_raw import SPACING, make_raw_case  # noqa: E402
from bench_scan import case_shape  # noqa: E402

DS = "Dataset994_AuditBench"
BASE = (96, 96, 20)
KINDS = ("swap", "shift", "other_case", "unlabelled", "eroded", "bloated", "stray")


SYNTHETIC_LABELS = {"swap": (2, 3), "unlabelled": 3, "eroded": 2, "bloated": 1, "stray": 2}
REAL_LABELS = {"swap": (1, 2), "unlabelled": 3, "eroded": 4, "bloated": 1, "stray": 3}


def corrupt(kind: str, lab, other, rng, which=SYNTHETIC_LABELS):
    """`lab` with one annotation error of `kind`; `which` names the labels each kind touches."""
    import numpy as np
    from scipy import ndimage

    out = lab.copy()
    if kind == "swap":
        a, b = which["swap"]
        out[lab == a], out[lab == b] = b, a
    elif kind == "shift":
        out = np.roll(lab, (4, 4), axis=(0, 1))
    elif kind == "other_case":
        out = other
    elif kind == "unlabelled":
        out[lab == which["unlabelled"]] = 0
    elif kind == "eroded":
        m = lab == which["eroded"]
        out[m & ~ndimage.binary_erosion(m, iterations=2)] = 0
    elif kind == "bloated":
        grown = ndimage.binary_dilation(lab == which["bloated"], iterations=2) & (lab == 0)
        out[grown] = which["bloated"]
    elif kind == "stray":
        X, Y, Z = lab.shape
        x, y, z = np.ogrid[:X, :Y, :Z]
        cx, cy = int(X * 0.2), int(Y * 0.75)
        out[((x - cx) ** 2 + (y - cy) ** 2 < 16) & (z >= Z // 3) & (z < Z // 3 + 4)] = which["stray"]
    return out


def real_cases(n: int, seed: int):
    """n cases cut from TotalSegmentator's example CT (tests/data, Apache-2.0: real anatomy,
    one patient): each a different crop (up to 3 slices and 8 rows/columns off), its HU
    scaled by 0.95-1.05 with 10 HU of noise. Yields (image, label, spacing), nibabel order."""
    import nibabel as nib
    import numpy as np

    data = REPO / "tests" / "data"
    ct = nib.load(data / "kidney_ct_0000.nii.gz")
    img = np.asarray(ct.dataobj).astype(np.float32)
    lab = np.asarray(nib.load(data / "kidney_ct_seg.nii.gz").dataobj).astype(np.uint8)
    spacing = tuple(float(z) for z in ct.header.get_zooms()[:3])
    X, Y, Z = img.shape
    rng = np.random.default_rng(seed)
    for _ in range(n):
        dx, dy, dz = (int(v) for v in rng.integers(0, 9, 2).tolist() + [int(rng.integers(0, 3))])
        box = (slice(dx, X - 8 + dx), slice(dy, Y - 8 + dy), slice(dz, Z - 2 + dz))
        im = img[box] * rng.uniform(0.95, 1.05) + rng.normal(0, 10, img[box].shape)
        yield np.rint(im).astype(np.int16), lab[box].copy(), spacing


def build(work: Path, cases: int, per_kind: int, seed: int = 7, source: str = "synthetic",
          base: tuple[int, int, int] = BASE) -> tuple[Path, dict]:
    import nibabel as nib
    import numpy as np

    from dataguard.demo.synthetic import LABELS

    raw = work / "nnUNet_raw" / DS
    shutil.rmtree(raw, ignore_errors=True)
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    labels = LABELS if source == "synthetic" else {"background": 0, "kidney_right": 1, "kidney_left": 2,
                                                   "spleen": 3, "liver": 4}
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": cases, "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(seed)
    targets = rng.permutation(cases)[: per_kind * len(KINDS)]
    plan = {f"case_{int(i):03d}": KINDS[j // per_kind] for j, i in enumerate(targets)}
    if source == "synthetic":
        made = []
        for i in range(cases):
            shape = case_shape(i, tuple(base))
            img, lab = make_raw_case(seed * 1000 + i, shape, with_rv=True)
            made.append((img, lab, SPACING, lambda i=i, shape=shape: make_raw_case(seed * 1000 + 500 + i, shape,
                                                                                   with_rv=True)[1]))
        which = SYNTHETIC_LABELS
    else:
        real = list(real_cases(cases, seed))
        made = [(img, lab, sp, lambda i=i: real[(i + 1) % cases][1]) for i, (img, lab, sp) in enumerate(real)]
        which = REAL_LABELS
    for i, (img, lab, spacing, other) in enumerate(made):
        name = f"case_{i:03d}"
        if name in plan:
            lab = corrupt(plan[name], lab, other(), rng, which)
        aff = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(img, aff), raw / "imagesTr" / f"{name}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab.astype(np.uint8), aff), raw / "labelsTr" / f"{name}.nii.gz")
    (work / "corruptions.json").write_text(json.dumps(plan, indent=1))     # outside the dataset
    return raw, plan


def average_precision(scores: dict[str, float], positive: set[str]) -> float:
    order = sorted(scores, key=lambda c: -scores[c])
    hits, total = 0, 0.0
    for rank, c in enumerate(order, 1):
        if c in positive:
            hits += 1
            total += hits / rank
    return total / len(positive) if positive else float("nan")


def recall_at_k(scores: dict[str, float], positive: set[str]) -> float:
    k = len(positive)
    top = sorted(scores, key=lambda c: -scores[c])[:k]
    return len(set(top) & positive) / k if k else float("nan")


def baseline(figs: dict) -> dict[str, float]:
    """Largest |z| (mean and standard deviation) of a label's log volume and mean intensity."""
    import math

    import numpy as np

    out = {c: 0.0 for c in figs}
    labels = {lab for f in figs.values() for lab in f}
    for lab in labels:
        for key in ("volume", "mean"):
            vals = {c: (math.log(f[lab][key]) if key == "volume" else f[lab][key])
                    for c, f in figs.items() if lab in f}
            v = np.asarray(list(vals.values()))
            sd = v.std() or 1.0
            for c, x in vals.items():
                out[c] = max(out[c], abs(x - v.mean()) / sd)
    return out


def simple_figures(raw: Path) -> dict:
    import nibabel as nib
    import numpy as np

    out = {}
    for p in sorted((raw / "labelsTr").glob("*.nii.gz")):
        case = p.name[:-7]
        lab = np.asarray(nib.load(p).dataobj)
        img = np.asarray(nib.load(raw / "imagesTr" / f"{case}_0000.nii.gz").dataobj)
        out[case] = {int(v): {"volume": float((lab == v).sum()), "mean": float(img[lab == v].mean())}
                     for v in np.unique(lab) if v > 0}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--per-kind", type=int, default=2)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "audit")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--base", type=int, nargs=3, default=list(BASE), metavar=("X", "Y", "Z"),
                    help=f"synthetic case shape before per-case variation (default {BASE})")
    ap.add_argument("--source", choices=("synthetic", "real"), default="synthetic",
                    help="synthetic cardiac CT, or crops of TotalSegmentator's example CT (tests/data)")
    a = ap.parse_args()
    import dataguard
    from dataguard.checks.label_audit import audit_view
    from dataguard.suspects import per_case

    raw, plan = build(a.work, a.cases, a.per_kind, source=a.source, base=tuple(a.base))
    scans, audits = [], []
    for r in range(a.repeat):                # best of --repeat: the machine may be shared
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()      # a bare raw scan: without the checks that read voxels again
            dataguard.Workspace([str(raw)], manifest_dir=Path(tmp) / "a").scan(
                full=True, ignore=["DG314", "DG405", "DG406"])
            scans.append(time.perf_counter() - t0)
            t0 = time.perf_counter()      # the same scan with the audit (DG406) ...
            res = dataguard.Workspace([str(raw)], manifest_dir=Path(tmp) / "b").scan(
                full=True, ignore=["DG314", "DG405"])
            view = res.views[DS]
            found = audit_view(view)      # ... and its whole ranking, from the facts it recorded
            audits.append(time.perf_counter() - t0)
    t_scan, t_audit = min(scans), min(audits)
    scores = per_case(found)
    scores.update({c: scores.get(c, 0.0) for c in (p.name[:-7] for p in (raw / "labelsTr").glob("*.nii.gz"))})
    base = baseline(simple_figures(raw))
    positive = set(plan)
    rows = [("all", positive, set(scores))]
    clean = set(scores) - positive
    for kind in KINDS:
        pos = {c for c, k in plan.items() if k == kind}
        rows.append((kind, pos, pos | clean))
    added = (t_audit - t_scan) / t_scan
    print(f"{a.source}: {a.cases} cases, {len(positive)} corrupted ({a.per_kind} per kind); scan with the audit "
          f"{t_audit:.2f} s, bare raw scan {t_scan:.2f} s, best of {a.repeat}: the audit costs {added:.2f}x a raw "
          f"scan (target 1.2: {'met' if added <= 1.2 else 'NOT met'})")
    print(f"{'kind':<11} {'AUPRC':>6} {'R@k':>5}   {'baseline AUPRC':>14} {'R@k':>5}")
    report = {}
    for kind, pos, pool in rows:
        s = {c: scores[c] for c in pool}
        b = {c: base.get(c, 0.0) for c in pool}
        ap_, rk = average_precision(s, pos), recall_at_k(s, pos)
        bap, brk = average_precision(b, pos), recall_at_k(b, pos)
        report[kind] = {"auprc": ap_, "recall_at_k": rk, "baseline_auprc": bap, "baseline_recall_at_k": brk}
        print(f"{kind:<11} {ap_:6.2f} {rk:5.2f}   {bap:14.2f} {brk:5.2f}")
    print("top suspects:")
    for s in found[:12]:
        mark = f"[{plan[s.case]}]" if s.case in plan else "[clean]"
        print(f"  {s.score:5.1f} {s.case} {s.name:<16} {mark:<13} {'; '.join(s.reasons)[:90]}")
    if a.json:
        a.json.write_text(json.dumps({"cases": a.cases, "corrupted": len(positive), "with_audit_s": t_audit,
                                      "scan_s": t_scan, "audit_cost": added, "kinds": report}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DATAGUARD_STATE_DIR", tempfile.mkdtemp(prefix="dg-bench-state-"))
    sys.exit(main())
