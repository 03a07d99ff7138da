#!/usr/bin/env python
"""Benchmark the label audit with models (DG805) against the data-alone audit (DG406).

Builds bench_audit's synthetic cardiac dataset (annotations corrupted seven ways at recorded
places), plans and preprocesses it with the real nnunetv2 (2d), writes a 2-fold split, trains
both folds with `dataguard train` on the CPU (--npz: every case gets out-of-fold
probabilities from the fold that did not train on it), then ranks the cases:

  models     `ws.dataset(ID).audit(models=["2d"])`: the models' disagreement (DG805)
  both       the two joined as evidence (suspects.combined: what `dataguard audit --model`
             ranks first)
  data       the data-alone audit (DG406) of the same dataset
  baseline   1 - Dice of the out-of-fold prediction (mean over the labels), the issue's one

and prints AUPRC and recall@k overall and per kind, and the with-models audit's time against
reading the out-of-fold files once (decompressing every .npz).

usage:
  python benchmarks/bench_audit_models.py                 # 28 cases, 1 per kind, ~10 min on 2 cores
  python benchmarks/bench_audit_models.py --epochs 20 --iterations 20
  python benchmarks/bench_audit_models.py --source real    # crops of a real CT (4 organs)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_audit import KINDS, average_precision, build, recall_at_k  # noqa: E402

DS_ID = "994"


def env_for(root: Path) -> dict:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "nnUNet_raw"), nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
               nnUNet_results=str(root / "nnUNet_results"), nnUNet_n_proc_DA="0", PYTHONUNBUFFERED="1")
    env.pop("nnUNet_extTrainer", None)
    return env


def run(cmd: list[str], env: dict, cwd: Path) -> None:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(" ".join(cmd) + "\n" + p.stdout[-3000:] + p.stderr[-3000:])
    print(f"  {' '.join(cmd[:4])} ... {time.perf_counter() - t0:.0f} s", flush=True)


def oof_dice_baseline(root: Path, ds: str) -> dict[str, float]:
    """1 - mean Dice over the labels of each case's out-of-fold prediction."""
    import nibabel as nib
    import numpy as np

    out = {}
    gt = root / "nnUNet_raw" / ds / "labelsTr"
    for p in (root / "nnUNet_results" / ds).glob("*/fold_*/validation/*.nii.gz"):
        ref = np.asarray(nib.load(gt / p.name).dataobj)
        pred = np.asarray(nib.load(p).dataobj)
        d = []
        for lab in (1, 2, 3):
            a, b = ref == lab, pred == lab
            s = a.sum() + b.sum()
            d.append(1.0 if s == 0 else 2 * (a & b).sum() / s)
        out[p.name[:-7]] = 1 - float(np.mean(d))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=28)
    ap.add_argument("--per-kind", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "audit_models")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse --work's trained models (from an earlier run with the same options)")
    ap.add_argument("--repeat", type=int, default=3, help="timings: best of this many")
    ap.add_argument("--source", choices=("synthetic", "real"), default="synthetic",
                    help="synthetic cardiac CT, or crops of TotalSegmentator's example CT (tests/data)")
    a = ap.parse_args()
    env = env_for(a.work)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    if a.reuse and (a.work / "corruptions.json").is_file() and any((a.work / "nnUNet_results").rglob("*.npz")):
        plan = json.loads((a.work / "corruptions.json").read_text())
        raw = next((a.work / "nnUNet_raw").iterdir())
        cases = sorted(p.name[:-7] for p in (raw / "labelsTr").glob("*.nii.gz"))
        print(f"reusing {a.work}", flush=True)
    else:
        raw, plan, cases = prepare(a)
    ds = raw.name
    measure(a, raw, ds, plan, cases)
    return 0


def prepare(a):
    """Build the corrupted dataset, plan, preprocess and train both folds (--npz)."""
    import dataguard

    shutil.rmtree(a.work, ignore_errors=True)
    raw, plan = build(a.work, a.cases, a.per_kind, source=a.source, base=(64, 64, 12))
    ds = raw.name
    env = env_for(a.work)
    (a.work / "nnUNet_results").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    print("plan and preprocess (2d) ...", flush=True)
    dataguard.Workspace(datasets=[]).train.plan_and_preprocess(
        (a.work / "nnUNet_raw").resolve(), (a.work / "nnUNet_preprocessed").resolve(), int(DS_ID), ("2d",))
    cases = sorted(p.name[:-7] for p in (raw / "labelsTr").glob("*.nii.gz"))
    folds = [cases[0::2], cases[1::2]]
    splits = [{"train": [c for c in cases if c not in f], "val": f} for f in folds]
    (a.work / "nnUNet_preprocessed" / ds / "splits_final.json").write_text(json.dumps(splits))
    print(f"train 2d folds 0-1 ({a.epochs} epochs x {a.iterations} iterations, CPU) ...", flush=True)
    run([str(Path(sys.executable).with_name("dataguard")), "train", DS_ID, "2d", "0-1", "--device", "cpu",
         "--epochs", str(a.epochs), "--iterations-per-epoch", str(a.iterations), "--val-iterations", "2",
         "--npz", "--no-val-mirroring", "--allow", "DG4,DG5"], env, a.work)
    print(f"prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    return raw, plan, cases


def floor_read(work: Path, ds: str) -> float:
    """Every byte the with-models audit must decode, read once: each out-of-fold .npz (numpy)
    and each reference in gt_segmentations (SimpleITK, as nnU-Net's reader)."""
    import numpy as np
    import SimpleITK as sitk

    t1 = time.perf_counter()
    for p in (work / "nnUNet_results" / ds).glob("*/fold_*/validation/*.npz"):
        with np.load(p) as z:
            for k in z.files:
                z[k]
    for p in (work / "nnUNet_preprocessed" / ds / "gt_segmentations").glob("*.nii.gz"):
        sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
    return time.perf_counter() - t1


def measure(a, raw: Path, ds: str, plan: dict, cases: list[str]) -> None:
    import dataguard
    from dataguard.audit.models import audit_models
    from dataguard.checks.label_audit import audit_view
    from dataguard.suspects import combined, per_case

    with tempfile.TemporaryDirectory() as tmp:
        ws = dataguard.Workspace([str(raw)], manifest_dir=Path(tmp) / "m", jobs=2)
        res = ws.scan(full=True)
        data_suspects = audit_view(res.views[ds])
        data = per_case(data_suspects)
        h = ws.dataset(ds)
        _, with_models, _ = h.audit(models=["2d"])
        times, floors = [], []
        for _ in range(a.repeat):            # best of: the machine may be shared
            t1 = time.perf_counter()
            audit_models(h.evaluate, ["2d"])
            times.append(time.perf_counter() - t1)
            floors.append(floor_read(a.work, ds))
        t_models, t_read = min(times), min(floors)
    models = per_case(with_models)
    both = per_case(combined(data_suspects, with_models))
    base = oof_dice_baseline(a.work, ds)
    positive = set(plan)
    clean = set(cases) - positive
    print(f"{len(cases)} cases, {len(positive)} corrupted; with-models audit {t_models:.3f} s, reading the "
          f".npz and the references once {t_read:.3f} s: {t_models / t_read:.2f}x (target 1.2), best of {a.repeat}")
    print(f"{'kind':<11} {'models':>12} {'both':>12} {'data':>12} {'1-Dice':>12}   (AUPRC  R@k)")
    rows = [("all", positive, set(cases))] + [(k, {c for c, v in plan.items() if v == k},
                                                {c for c, v in plan.items() if v == k} | clean) for k in KINDS]
    for kind, pos, pool in rows:
        cells = []
        for sc in (models, both, data, base):
            s = {c: sc.get(c, 0.0) for c in pool}
            cells.append(f"{average_precision(s, pos):5.2f} {recall_at_k(s, pos):5.2f}")
        print(f"{kind:<11} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12} {cells[3]:>12}")


if __name__ == "__main__":
    os.environ.setdefault("DATAGUARD_STATE_DIR", tempfile.mkdtemp(prefix="dg-bench-state-"))
    sys.exit(main())
