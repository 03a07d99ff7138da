#!/usr/bin/env python
"""`dataguard ensemble suggest`: time and peak memory as the number of cases grows.

Two models (2d, 3d_fullres), 5 folds, cases of 40x192x192 voxels with 4 classes, out-of-fold
probabilities as float16 `.npz` (what `nnUNetv2_train --npz` writes), references as NIfTI in
`gt_segmentations`. The models are made to disagree near the organ boundaries, as real ones do.

For each case count, three fresh processes:
  floor     np.load every out-of-fold .npz once (decompress, nothing else): the least any
            search must do
  suggest   Workspace.out_of_fold + Workspace.suggest_weights, as `ensemble suggest` runs
  before    (with --before REV) the same with the code of git revision REV, skipped past
            --before-max-cases (it held every probability map in memory)
Printed: seconds, peak RSS (ru_maxrss of the child) and the ratios time/floor.

usage:
  python benchmarks/bench_suggest.py                      # 10, 40, 160 cases (~6 min to generate once)
  python benchmarks/bench_suggest.py --cases 10 40 --before HEAD~3
  python benchmarks/bench_suggest.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "suggest"
NAME = "Dataset950_Suggest"
SHAPE = (40, 192, 192)
CLASSES = 4
FOLDS = 5
MODELS = ("2d", "3d_fullres")
VERSION = 2                      # bump when the generator changes
TARGET_TIME = 2.0                # suggest <= 2x the read floor


def _reference(rng, np):
    """Three nested blobs (a cardiac-like myocardium ring, LV inside, RV beside)."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    cz, cy, cx = SHAPE[0] / 2 + rng.normal(0, 2), 96 + rng.normal(0, 8), 86 + rng.normal(0, 8)
    d = ((z - cz) / 14) ** 2 + ((y - cy) / 40) ** 2 + ((x - cx) / 40) ** 2
    ref = np.zeros(SHAPE, np.uint8)
    ref[d < 1] = 1
    ref[d < 0.45] = 2
    d2 = ((z - cz) / 12) ** 2 + ((y - cy) / 30) ** 2 + ((x - cx - 55) / 22) ** 2
    ref[(d2 < 1) & (ref == 0)] = 3
    return ref


def _model_probs(ref, rng, np, blur: int, weak: int):
    """Softmax of a softened one-hot (unsure within a few voxels of an edge) plus smooth noise;
    the model is weaker on class `weak`. About 0.6% of voxels end up contested."""
    from scipy.ndimage import uniform_filter

    onehot = np.eye(CLASSES, dtype=np.float32)[ref].transpose(3, 0, 1, 2)
    logits = np.stack([uniform_filter(onehot[c], size=(3, 7, 7)) for c in range(CLASSES)]) * 10.0
    logits[weak] -= 1.5 * onehot[weak]
    lo = rng.normal(0, 1.5, size=(CLASSES, SHAPE[0] // 4 + 1, SHAPE[1] // blur + 1, SHAPE[2] // blur + 1))
    logits += lo.astype(np.float32).repeat(4, 1).repeat(blur, 2).repeat(blur, 3)[:, : SHAPE[0], : SHAPE[1], : SHAPE[2]]
    logits += rng.normal(0, 0.3, size=logits.shape).astype(np.float32)
    logits -= logits.max(0, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(0, keepdims=True)).astype(np.float16)


def generate(root: Path, n_cases: int) -> None:
    import numpy as np
    import SimpleITK as sitk

    marker = root / "ready.json"
    if marker.exists() and json.loads(marker.read_text()) == {"cases": n_cases, "version": VERSION}:
        return
    rng = np.random.default_rng(n_cases)
    pre, res = root / "nnUNet_preprocessed" / NAME, root / "nnUNet_results" / NAME
    (root / "nnUNet_raw").mkdir(parents=True, exist_ok=True)
    (pre / "gt_segmentations").mkdir(parents=True, exist_ok=True)
    cases = [f"case_{i:03d}" for i in range(n_cases)]
    dj = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "myo": 1, "lv": 2, "rv": 3},
          "numTraining": n_cases, "file_ending": ".nii.gz"}
    plans = {"dataset_name": NAME, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
             "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
             "original_median_shape_after_transp": list(SHAPE),
             "configurations": {m: {"data_identifier": f"nnUNetPlans_{m}", "spacing": [1.0, 1.0, 1.0],
                                    "patch_size": [8, 8, 8], "batch_size": 2} for m in MODELS},
             "experiment_planner_used": "bench", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {}}
    (pre / "dataset.json").write_text(json.dumps(dj))
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    splits = [{"train": [c for j, c in enumerate(cases) if j % FOLDS != k],
               "val": [c for j, c in enumerate(cases) if j % FOLDS == k]} for k in range(FOLDS)]
    (pre / "splits_final.json").write_text(json.dumps(splits))
    for m in MODELS:
        folder = res / f"nnUNetTrainer__nnUNetPlans__{m}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dataset.json").write_text(json.dumps(dj))
        (folder / "plans.json").write_text(json.dumps(plans))
        for k in range(FOLDS):
            (folder / f"fold_{k}" / "validation").mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        ref = _reference(rng, np)
        img = sitk.GetImageFromArray(ref)
        sitk.WriteImage(img, str(pre / "gt_segmentations" / f"{case}.nii.gz"), True)
        for m, blur, weak in zip(MODELS, (8, 12), (3, 1)):
            probs = _model_probs(ref, rng, np, blur, weak)
            out = res / f"nnUNetTrainer__nnUNetPlans__{m}" / f"fold_{i % FOLDS}" / "validation" / f"{case}.npz"
            np.savez_compressed(out, probabilities=probs)
        print(f"\rgenerating {root.name}: {i + 1}/{n_cases}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    marker.write_text(json.dumps({"cases": n_cases, "version": VERSION}))


FLOOR = r"""
import resource, sys, time
from pathlib import Path
import numpy as np
t = time.perf_counter()
for p in sorted(Path(sys.argv[1]).rglob("validation/*.npz")):
    with np.load(p) as z:
        z["probabilities"]
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

SUGGEST = r"""
import os, resource, sys, time
sys.path.insert(0, sys.argv[2])
os.environ["nnUNet_results"] = sys.argv[1] + "/nnUNet_results"
os.environ["nnUNet_preprocessed"] = sys.argv[1] + "/nnUNet_preprocessed"
os.environ["nnUNet_raw"] = sys.argv[1] + "/nnUNet_raw"
import dataguard
t = time.perf_counter()
ws = dataguard.Workspace([sys.argv[1] + "/nnUNet_preprocessed/%s"], manifest_dir=sys.argv[1] + "/manifests")
models, oof = ws.out_of_fold(["2d", "3d_fullres"])
sug, _ = ws.suggest_weights(oof)
mean = lambda d: sum(v for v in d.values() if v is not None) / len(d)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      mean(sug.chosen), getattr(sug, "contested", -1), getattr(sug, "voxels", -1))
""" % NAME


def _child(code: str, *args: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    return [float(x) for x in out.stdout.split()]


def _worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="dataguard-before-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True,
                   capture_output=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, nargs="+", default=[10, 40, 160])
    ap.add_argument("--before", metavar="REV", help="also run the code of this git revision")
    ap.add_argument("--before-max-cases", type=int, default=40)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--generate-only", action="store_true", help="make the data sets and stop")
    args = ap.parse_args()
    if args.generate_only:
        for n in args.cases:
            generate(args.work / f"c{n}", n)
        return 0
    before = _worktree(args.before) if args.before else None
    rows = []
    try:
        for n in args.cases:
            root = args.work / f"c{n}"
            generate(root, n)
            floor = _child(FLOOR, str(root))
            now = _child(SUGGEST, str(root), str(REPO))
            old = _child(SUGGEST, str(root), str(before)) if before and n <= args.before_max_cases else []
            rows.append({"cases": n, "floor_s": floor[0], "suggest_s": now[0], "suggest_rss": now[1],
                         "mean_dice": now[2], "contested": now[3], "voxels": now[4],
                         "before_s": old[0] if old else None, "before_rss": old[1] if old else None})
    finally:
        if before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    gb = 1 << 30
    print(f"{'cases':>5} {'floor s':>8} {'suggest s':>10} {'ratio':>6} {'peak RSS':>9} {'contested':>10}"
          f" {'before s':>9} {'before RSS':>11}")
    ok = True
    for r in rows:
        ratio = r["suggest_s"] / r["floor_s"]
        ok &= ratio <= TARGET_TIME
        b = f"{r['before_s']:9.1f} {r['before_rss'] / gb:9.2f} GB" if r["before_s"] else f"{'-':>9} {'-':>11}"
        print(f"{r['cases']:5d} {r['floor_s']:8.1f} {r['suggest_s']:10.1f} {ratio:5.2f}x {r['suggest_rss'] / gb:6.2f} GB"
              f" {r['contested'] / r['voxels']:9.2%} {b}")
    print(f"target: suggest <= {TARGET_TIME}x the read floor, peak RSS flat in the number of cases: "
          f"{'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
