"""Calibrate dataguard's resource model (dataguard/doctor/resources.py) against real nnunetv2.

    .venv/bin/python benchmarks/calibrate_resources.py [--sizes 96x96x24,152x152x38,192x192x48]
                                                       [--work DIR] [--skip-predict]

What it measures, on the CPU, with real nnU-Net v2 (a few minutes on 2 cores):

1. `nnUNetv2_preprocess -c 3d_fullres -np 1` of one synthetic cardiac dataset per volume size
   (two cases, two spacings, so both are resampled to the median): peak RSS of the one
   preprocessing worker (VmHWM of that process, polled from /proc) and of the whole command
   (`os.wait4`'s ru_maxrss: its largest process).
2. A tiny 3d_fullres model (features / 8, 2 epochs of 2 iterations, fold `all`) trained with
   `dataguard train`, then `nnUNetv2_predict -npp 1 -nps 1 --save_probabilities --disable_tta
   -device cpu` of one test image per size at a finer spacing than the training one: the
   export worker resamples the probabilities of all classes back to the original spacing.
   Peak RSS of the main process (sliding window), the preprocessing worker and the export
   worker, each by VmHWM.

Each measurement is set beside dataguard's estimate for the same case (what `dataguard doctor`
would say), with the ratio estimate / measured. The table goes to docs/resources.md by hand.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataguard.doctor import resources

BIN = Path(sys.executable).parent
MB = 1 << 20


# --- measuring a process tree ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _start(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except OSError:
        return 0


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


SITECUSTOMIZE = """
import os, sys, threading, time
_d = os.environ.get("DG_HWM_DIR")
if _d:
    def _watch():
        last = None
        path = os.path.join(_d, str(os.getpid()))
        with open("/proc/self/cmdline", "rb") as f:
            cmd = f.read().replace(b"\\0", b" ").decode(errors="replace")
        start = time.monotonic_ns()
        while True:
            try:
                with open("/proc/self/status") as f:
                    hwm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
            except Exception:
                return
            if hwm != last:
                with open(path + ".tmp", "w") as f:
                    f.write(f"{hwm}\\t{start}\\t{cmd}")
                os.replace(path + ".tmp", path)
                last = hwm
            time.sleep(0.005)
    threading.Thread(target=_watch, daemon=True).start()
"""


def measure(argv: list[str], env: dict, log: Path) -> dict:
    """Run argv; every Python process of its tree reports its own VmHWM (peak RSS) from a thread
    started by a sitecustomize module, so a worker that peaks just before it exits is seen too.
    {"procs": [(start, pid, cmdline, peak)], "ru_maxrss": largest process (wait4), "main": peak}."""
    hook = Path(tempfile.mkdtemp(prefix="dg-hwm-"))
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (hook / "out").mkdir()
    env = {**env, "DG_HWM_DIR": str(hook / "out"),
           "PYTHONPATH": os.pathsep.join([str(hook), *filter(None, [env.get("PYTHONPATH")])])}
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{argv[0]} failed ({rc}):\n" + log.read_text(errors="replace")[-3000:])
    procs = []
    for p in (hook / "out").iterdir():
        if p.suffix == ".tmp":
            continue
        hwm, t, cmd = p.read_text().split("\t", 2)
        procs.append((int(t), int(p.name), cmd, int(hwm)))
    procs.sort()
    shutil.rmtree(hook, ignore_errors=True)
    main = next((h for _, pid, _, h in procs if pid == proc.pid), 0)
    return {"procs": procs, "ru_maxrss": ru.ru_maxrss * 1024, "main": main}


def workers(m: dict) -> list[int]:
    """Peaks of the spawned worker processes, in the order they started (no resource tracker)."""
    return [h for _, _, c, h in m["procs"] if "spawn_main" in c]


# --- data -----------------------------------------------------------------------------------
def write_dataset(raw: Path, did: int, name: str, shape, spacings, n_cases=2, seed=0) -> Path:
    import nibabel as nib
    import numpy as np

    from dataguard.demo.synthetic import LABELS, make_case

    rng = np.random.default_rng(seed)
    ds = raw / f"Dataset{did:03d}_{name}"
    for sub in ("imagesTr", "labelsTr"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        img, lab = make_case(rng, shape, True)
        aff = np.diag([*spacings[i % len(spacings)], 1.0])
        nib.save(nib.Nifti1Image(img, aff), ds / "imagesTr" / f"c{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, aff), ds / "labelsTr" / f"c{i:03d}.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": LABELS,
                                                 "numTraining": n_cases, "file_ending": ".nii.gz"}))
    return ds


def env_for(root: Path) -> dict:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "nnUNet_raw"), nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
               nnUNet_results=str(root / "nnUNet_results"), nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("nnUNet_extTrainer", None)
    return env


def run(argv, env, what):
    p = subprocess.run(argv, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{what} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def plan(env, did):
    env = {**env, "nnUNet_n_proc_DA": "1"}          # the planner sets torch's threads to it
    run([str(BIN / "nnUNetv2_extract_fingerprint"), "-d", str(did), "-np", "1"], env, "fingerprint")
    run([str(BIN / "nnUNetv2_plan_experiment"), "-d", str(did)], env, "plan")


def shrink_network(plans_file: Path) -> None:
    """features per stage / 8 and batch size 2: the network is not what is measured."""
    plans = json.loads(plans_file.read_text())
    c = plans["configurations"]["3d_fullres"]
    kw = c["architecture"]["arch_kwargs"]
    kw["features_per_stage"] = [max(4, f // 8) for f in kw["features_per_stage"]]
    c["batch_size"] = 2
    plans_file.write_text(json.dumps(plans, indent=2))


def fmt(n):
    return f"{n / MB:,.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="96x96x24,152x152x38,192x192x48",
                    help="x,y,z voxel shapes (nibabel order), comma-separated")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--skip-predict", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the datasets and the trained model of an earlier run in --work (measure again)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="dg-calib-"))
    root = work / "project"
    model = root / "nnUNet_results" / "Dataset950_Calib0" / "nnUNetTrainer_dataguard__nnUNetPlans__3d_fullres"
    reuse = args.reuse and (model / "fold_all" / "checkpoint_final.pth").is_file()
    if not reuse:
        shutil.rmtree(root, ignore_errors=True)
        (root / "nnUNet_raw").mkdir(parents=True)
    env = env_for(root)
    rows = []
    spacings = [(1.0, 1.0, 2.5), (1.4, 1.4, 3.5)]

    # 1. preprocessing, one dataset per size
    for i, shape in enumerate(sizes):
        did = 950 + i
        if not reuse:
            write_dataset(root / "nnUNet_raw", did, f"Calib{i}", shape, spacings)
            plan(env, did)
        pre = root / "nnUNet_preprocessed" / f"Dataset{did:03d}_Calib{i}"
        t0 = time.monotonic()
        m = measure([str(BIN / "nnUNetv2_preprocess"), "-d", str(did), "-c", "3d_fullres", "-np", "1"], env,
                    work / f"pre{i}.log")
        secs = time.monotonic() - t0
        est = resources.preprocess_estimate(pre, "3d_fullres")
        worker = max(workers(m) or [m["main"]])
        rows.append({"step": "preprocess worker", "shape": "x".join(map(str, shape)),
                     "voxels": shape[0] * shape[1] * shape[2], "estimate": est.peak_bytes_per_worker,
                     "measured": worker, "whole_command": m["ru_maxrss"], "main": m["main"],
                     "workers": workers(m), "seconds": round(secs, 1)})
        print(json.dumps(rows[-1]), flush=True)

    if not args.skip_predict:
        # 2. a tiny model on the smallest dataset, then one test image per size
        did = 950
        name = "Dataset950_Calib0"
    if not args.skip_predict and not reuse:
        shrink_network(root / "nnUNet_preprocessed" / name / "nnUNetPlans.json")
        # more cases to train from: reuse the dataset with 6 cases of the smallest size
        shutil.rmtree(root / "nnUNet_raw" / name)
        shutil.rmtree(root / "nnUNet_preprocessed" / name)
        write_dataset(root / "nnUNet_raw", did, "Calib0", sizes[0], spacings, n_cases=6)
        plan(env, did)
        shrink_network(root / "nnUNet_preprocessed" / name / "nnUNetPlans.json")
        run([str(BIN / "nnUNetv2_preprocess"), "-d", str(did), "-c", "3d_fullres", "-np", "1"], env, "preprocess")
        run([sys.executable, "-m", "dataguard", "train", str(did), "3d_fullres", "all", "--device", "cpu",
             "--epochs", "2", "--iterations-per-epoch", "2", "--val-iterations", "1", "--no-val-mirroring",
             "--allow", "DG5", "--manifest-dir", str(work / "manifests")], env, "dataguard train")
    if not args.skip_predict:
        import nibabel as nib
        import numpy as np

        from dataguard.demo.synthetic import make_case

        rng = np.random.default_rng(1)
        fine = (0.8, 0.8, 2.0)                     # finer than the training spacing: export grows
        for i, shape in enumerate(sizes):
            imgs, out = work / f"test{i}", work / f"pred{i}"
            shutil.rmtree(imgs, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            imgs.mkdir()
            img, _ = make_case(rng, shape, True)
            nib.save(nib.Nifti1Image(img, np.diag([*fine, 1.0])), imgs / "t000_0000.nii.gz")
            t0 = time.monotonic()
            m = measure([str(BIN / "nnUNetv2_predict"), "-i", str(imgs), "-o", str(out), "-d", str(did), "-c",
                         "3d_fullres", "-f", "all", "-tr", "nnUNetTrainer_dataguard", "-chk",
                         "checkpoint_final.pth", "--save_probabilities", "--disable_tta", "-device", "cpu",
                         "-npp", "1", "-nps", "1"], env, work / f"pred{i}.log")
            secs = time.monotonic() - t0
            est = resources.predict_estimate(model / "plans.json", model / "dataset.json", "3d_fullres",
                                             resources.image_infos(imgs, ".nii.gz"))
            w = workers(m)                         # started in order: preprocessing, then export
            export = w[-1] if len(w) >= 2 else 0
            shape_s = "x".join(map(str, shape))
            vox = shape[0] * shape[1] * shape[2]
            rows.append({"step": "predict export worker", "shape": shape_s, "voxels": vox,
                         "estimate": est.export_bytes, "measured": export, "seconds": round(secs, 1)})
            rows.append({"step": "predict main (sliding window)", "shape": shape_s, "voxels": vox,
                         "estimate": est.main_bytes, "measured": m["main"], "seconds": round(secs, 1)})
            rows.append({"step": "predict, all processes", "shape": shape_s, "voxels": vox,
                         "estimate": est.peak_bytes_per_case,
                         "measured": m["main"] + sum(w), "seconds": round(secs, 1)})
            for r in rows[-3:]:
                print(json.dumps(r), flush=True)

    print("\n| step | volume (voxels) | estimate MB | measured MB | ratio | s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['step']} | {r['shape']} ({r['voxels'] / 1e6:.2f} M) | {fmt(r['estimate'])} | "
              f"{fmt(r['measured'])} | {r['estimate'] / max(r['measured'], 1):.2f} | {r['seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
