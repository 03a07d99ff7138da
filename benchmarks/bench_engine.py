#!/usr/bin/env python
"""The scan engine's targets, measured as whole processes, in one run.

The full/select datasets are real nnU-Net v2 output: 200 synthetic cardiac cases
(24 x 160 x 160, int16 MRI-like) planned and preprocessed once by nnunetv2 itself (2d), so
every `.pkl` is what `nnUNetv2_preprocess` writes (class_locations: 10,000 sampled voxel
coordinates per class, ~0.96 MB). Two layouts of that one run: `.b2nd` (nnunetv2 >= 2.6, as
written) and legacy `.npz` (the same arrays through `np.savez_compressed`, as nnunetv2 < 2.6
wrote them, the same `.pkl` files).

  full      `dataguard scan --full` vs the combined floor: one pool of 2 (all cores) spawn
            processes doing the bare decode work no verifier can skip: inflate+CRC of every
            .npz member (ISA-L) or every .b2nd chunk decompressed (blosc2), the
            gt_segmentations .nii.gz through ISA-L igzip, and a plain `pickle.load` of every
            .pkl                                                  target <= 1.25x, each layout
  select    `dataguard scan --select DG5 --full` vs the full scan (same data)  <= 0.25x, each layout
  rescan    `dataguard scan` again, nothing changed, 5,000 cases / ~30,000 files  <= 0.6 s
  touched   the same after touching one file (new mtime, same bytes)            <= 0.6 s

Every number is the wall time of a fresh process (`.venv/bin/dataguard ...`, or a
`python` child for the floor) started from here, page cache warm, `--repeat` times
interleaved; PASS/FAIL use the best run (the least disturbed on a shared machine), the
median is printed beside it.

usage:
  python benchmarks/bench_engine.py                    # ~1.5 min on 2 cores (+~2 min once to generate)
  python benchmarks/bench_engine.py --cases 20 --many 500 --repeat 1    # smoke run
  python benchmarks/bench_engine.py --json out.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_scan  # noqa: E402  (the zip inflate+CRC floor)

DEFAULT_WORK = HERE / "_work" / "engine"
MANY_NAME = "Dataset993_Many"
MANY_VERSION = 2        # bump when the many-files generator changes (2: every image its own voxels)
LABELS = {"background": 0, "a": 1, "b": 2, "c": 3}
PLANS = {"plans_name": "nnUNetPlans", "dataset_name": MANY_NAME,
         "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
         "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres",
                                           "patch_size": [4, 8, 8], "spacing": [1.0, 1.0, 1.0],
                                           "batch_size": 2}}}
REAL_NAME = "Dataset994_RealPkl"
REAL_ID = 994
REAL_VERSION = 1        # bump when the real-output generator changes
REAL_SHAPE = (160, 160, 24)   # x, y, z as nibabel writes it: nnU-Net's 24 x 160 x 160
REAL_SPACING = (1.25, 1.25, 8.0)
LAYOUTS = ("npz", "b2nd")
TARGETS = {"full": 1.25, "select": 0.25, "rescan": 0.6, "touched": 0.6}


DATAGUARD_CMD: list[str] = []     # --dataguard: another build to compare (A/B), e.g. "python launch.py"


def dataguard_cmd() -> list[str]:
    if DATAGUARD_CMD:
        return DATAGUARD_CMD
    exe = Path(sys.executable).parent / "dataguard"
    if not exe.exists():
        exe = REPO / ".venv" / "bin" / "dataguard"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dataguard"]


# ----------------------------------------------------------------------------- datasets


def splits_for(cases: list[str], folds: int = 5) -> list[dict]:
    return [{"train": [c for j, c in enumerate(cases) if j % folds != k],
             "val": [c for j, c in enumerate(cases) if j % folds == k]} for k in range(folds)]


def _write_real_raw(raw: Path, cases: int) -> None:
    """dataguard.demo.synthetic's cardiac cases at 24 x 160 x 160, images stored as int16 (what
    scanners write: the z-scored float32 nnU-Net makes of them deflates ~4x, 0.76 MB per .npz)."""
    import nibabel as nib
    import numpy as np

    from dataguard.demo.synthetic import LABELS as CARDIAC
    from dataguard.demo.synthetic import make_case

    rng = np.random.default_rng(0)
    aff = np.diag([*REAL_SPACING, 1.0])
    for d in ("imagesTr", "labelsTr"):
        (raw / d).mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        img, lab = make_case(rng, REAL_SHAPE, with_rv=i % 4 != 3)     # no right ventricle in every 4th
        nib.save(nib.Nifti1Image(np.round(img).astype(np.int16), aff), raw / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, aff), raw / "labelsTr" / f"case_{i:03d}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": CARDIAC,
                                                  "numTraining": cases, "file_ending": ".nii.gz"}, indent=2))


def _to_legacy(args) -> None:
    """One case of nnunetv2 >= 2.6 output (.b2nd) as nnunetv2 < 2.6 wrote it: one .npz."""
    src, dst, case = Path(args[0]), Path(args[1]), args[2]
    import blosc2
    import numpy as np

    blosc2.set_nthreads(1)
    data = blosc2.open(str(src / f"{case}.b2nd"), mode="r")[:]
    seg = blosc2.open(str(src / f"{case}_seg.b2nd"), mode="r")[:]
    np.savez_compressed(dst / f"{case}.npz", data=data, seg=seg)
    shutil.copy2(src / f"{case}.pkl", dst / f"{case}.pkl")


def ensure_real(work: Path, cases: int, regen: bool) -> dict[str, Path]:
    """Real nnU-Net v2 output in both layouts: {"b2nd": dataset, "npz": dataset}.

    `nnUNetv2_plan_and_preprocess -c 2d -np 2` (nnunetv2 itself, through
    dataguard.nnunet.plan_and_preprocess) writes the .b2nd layout; the .npz layout is the same
    arrays re-saved as legacy .npz beside the same .pkl files. Both get a 5-fold splits_final.json.
    """
    from dataguard.nnunet import plan_and_preprocess

    root = work / f"real-{cases}"           # a smoke run's 20 cases do not replace the 200
    marker = work / f"real-{cases}_marker.json"
    params = {"version": REAL_VERSION, "cases": cases, "shape": list(REAL_SHAPE)}
    out = {k: root / k / REAL_NAME for k in LAYOUTS}
    if not regen and marker.is_file() and json.loads(marker.read_text()).get("params") == params:
        print(f"reusing {root} ({cases} real nnunetv2 cases, .npz and .b2nd)")
        return out
    if root.exists():
        shutil.rmtree(root)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    print(f"generating {cases} raw cases, then nnUNetv2_plan_and_preprocess -c 2d -np 2 ...", flush=True)
    raw = root / "source" / "nnUNet_raw"      # not beside the layouts: a scan must not pair it
    _write_real_raw(raw / REAL_NAME, cases)
    plan_and_preprocess(raw, root / "b2nd", REAL_ID, ("2d",), num_processes=2)
    t_pp = time.perf_counter() - t0
    src, dst = out["b2nd"], out["npz"]
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n.endswith((".b2nd", ".pkl"))])
    names = [f"case_{i:03d}" for i in range(cases)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_to_legacy, [(str(src / "nnUNetPlans_2d"), str(dst / "nnUNetPlans_2d"), c) for c in names]))
    for ds in out.values():
        (ds / "splits_final.json").write_text(json.dumps(splits_for(names)))
    marker.write_text(json.dumps({"params": params, "preprocess_s": round(t_pp, 1)}))
    print(f"generated in {time.perf_counter() - t0:.0f}s (nnunetv2 {t_pp:.0f}s)")
    return out


def _tiny_templates() -> dict[str, bytes]:
    """One tiny file of each kind; every case gets copies (content does not matter here)."""
    import io

    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    lab = (np.arange(8 * 8 * 4).reshape(8, 8, 4) % 4).astype(np.uint8)
    for key, arr in (("image", rng.normal(size=(8, 8, 4)).astype(np.float32)), ("label", lab)):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "x.nii.gz"
            nib.save(nib.Nifti1Image(arr, aff), p)
            out[key] = p.read_bytes()
    buf = io.BytesIO()
    np.savez_compressed(buf, data=rng.normal(size=(1, 4, 8, 8)).astype(np.float32),
                        seg=lab.transpose(2, 0, 1)[None].astype(np.int8))
    out["npz"] = buf.getvalue()
    out["pkl"] = pickle.dumps({
        "spacing": [1.0, 1.0, 1.0], "shape_before_cropping": (4, 8, 8),
        "bbox_used_for_cropping": [[0, 4], [0, 8], [0, 8]],
        "shape_after_cropping_and_before_resampling": (4, 8, 8),
        "class_locations": {k: np.zeros((2, 4), np.int64) for k in (1, 2, 3)}})
    return out


def _nifti_parts():
    """(the header bytes, the float32 voxels) of one tiny uncompressed NIfTI image."""
    import nibabel as nib
    import numpy as np

    arr = np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.nii"
        nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 1.0, 1.0])), p)
        raw = p.read_bytes()
    return raw[: len(raw) - arr.nbytes], arr


def ensure_many(work: Path, cases: int, regen: bool) -> Path:
    """A raw + preprocessed dataset of `cases` cases, 6 tiny files each (~6 x cases files):
    imagesTr/{case}_0000,_0001, labelsTr/{case}, gt_segmentations/{case} (.nii.gz) and
    nnUNetPlans_3d_fullres/{case}.npz + .pkl."""
    root = work / "many"
    marker = work / "many_marker.json"
    params = {"version": MANY_VERSION, "cases": cases}
    if not regen and marker.is_file() and json.loads(marker.read_text()).get("params") == params:
        print(f"reusing {root} ({cases} cases)")
        return root
    if root.exists():
        shutil.rmtree(root)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    tpl = _tiny_templates()
    raw = root / "nnUNet_raw" / MANY_NAME
    pre = root / "nnUNet_preprocessed" / MANY_NAME
    cfg = pre / "nnUNetPlans_3d_fullres"
    for d in (raw / "imagesTr", raw / "labelsTr", pre / "gt_segmentations", cfg):
        d.mkdir(parents=True)
    meta = {"channel_names": {"0": "CT", "1": "PET"}, "labels": LABELS, "numTraining": cases,
            "file_ending": ".nii.gz"}
    for d in (raw, pre):
        (d / "dataset.json").write_text(json.dumps(meta, indent=2))
    (pre / "nnUNetPlans.json").write_text(json.dumps(PLANS, indent=2))
    (pre / "dataset_fingerprint.json").write_text("{}")
    names = [f"case_{i:05d}" for i in range(cases)]
    (pre / "splits_final.json").write_text(json.dumps(splits_for(names)))

    def put(path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
    head, voxels = _nifti_parts()
    for i, c in enumerate(names):           # each image its own voxels: copies are DG307/DG310 now
        for ch in (0, 1):
            put(raw / "imagesTr" / f"{c}_{ch:04d}.nii.gz", gzip.compress(head + (voxels + 2 * i + ch).tobytes(), 1))
        put(raw / "labelsTr" / f"{c}.nii.gz", tpl["label"])
        put(pre / "gt_segmentations" / f"{c}.nii.gz", tpl["label"])
        put(cfg / f"{c}.npz", tpl["npz"])
        put(cfg / f"{c}.pkl", tpl["pkl"])
    marker.write_text(json.dumps({"params": params}))
    print(f"generated {root}: {6 * cases} files in {time.perf_counter() - t0:.1f}s")
    return root


def warm(paths) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass


# ----------------------------------------------------------------------------- the floor


def _floor_file(item) -> int:
    """The bare decode work for one file (bytes out): what no verifier can skip."""
    path, kind = item
    if kind == "npz":
        return bench_scan.inflate_crc((path, "isal"))
    if kind == "pkl":
        with open(path, "rb") as f:
            pickle.load(f)           # a plain load: the floor trusts the file, a scanner may not
        return os.path.getsize(path)
    if kind == "b2nd":
        import blosc2

        blosc2.set_nthreads(1)
        arr = blosc2.open(path, mode="r")        # held: its schunk dies with it
        schunk = arr.schunk
        return sum(len(schunk.decompress_chunk(i)) for i in range(schunk.nchunks))
    from isal import igzip

    n = 0
    with igzip.open(path, "rb") as f:     # gzip CRC and length checked at the end
        while b := f.read(1 << 20):
            n += len(b)
    return n


def floor_files(ds: Path) -> list[tuple[str, str]]:
    """(path, kind) of every array and properties file, biggest first."""
    kinds = {".npz": "npz", ".b2nd": "b2nd", ".pkl": "pkl", ".gz": "gz"}
    out = [(str(p), kinds[p.suffix]) for p in ds.rglob("*") if p.is_file() and p.suffix in kinds]
    return sorted(out, key=lambda it: -os.path.getsize(it[0]))


def floor_child(listfile: str, jobs: int) -> None:
    """Runs as its own process: one spawn pool of `jobs` over every file (start-up included)."""
    import multiprocessing

    files = json.loads(Path(listfile).read_text())
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        out = sum(ex.map(_floor_file, [tuple(f) for f in files], chunksize=4))
    print(f"FLOOR_BYTES {out}")


# ----------------------------------------------------------------------------- runs


CPU: dict[str, list[float]] = {}    # CPU seconds (user + sys, its reaped children included) per run


def timed(cmd: list[str], key: str | None = None, ok=(0, 1)) -> tuple[float, str]:
    """Wall seconds of a whole child process (and its stdout); its CPU seconds go to CPU[key]."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=str(REPO))
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if p.returncode not in ok:
        sys.stderr.write(stdout[-3000:] + stderr[-3000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    if key:
        CPU.setdefault(key, []).append(ru.ru_utime + ru.ru_stime)
    return dt, stdout


def scan_cmd(target: Path, manifest_dir: Path, *extra: str) -> list[str]:
    return [*dataguard_cmd(), "scan", str(target), "--manifest-dir", str(manifest_dir),
            "--format", "json", "--fail-on", "never", "--no-progress", *extra]


def summary(out: str) -> dict:
    d = json.loads(out)
    return {"findings": len(d["findings"]), **{k: d["summary"][k] for k in ("files", "checked", "reused")}}


def compile_package() -> None:
    """Byte-compile dataguard as `pip install` does, so processes do not recompile it each time
    (this environment sets PYTHONDONTWRITEBYTECODE: ~0.08 s of compile per process otherwise)."""
    import compileall

    compileall.compile_dir(str(REPO / "dataguard"), quiet=1)


def main() -> None:
    compile_package()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=200, help="real nnunetv2 cases for full/select (200)")
    ap.add_argument("--many", type=int, default=5000, help="cases of the rescan dataset (6 files each)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None, help="floor workers (default: all cores)")
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--regen", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--dataguard", default=None, metavar="CMD",
                    help="command that runs dataguard (default: the venv's console script); "
                    "e.g. another checkout's launcher, to compare two builds on the same data")
    ap.add_argument("--_floor", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._floor:
        floor_child(a._floor[0], int(a._floor[1]))
        return
    t_start = time.perf_counter()
    if a.dataguard:
        import shlex

        DATAGUARD_CMD[:] = shlex.split(a.dataguard)
    jobs = a.jobs or os.cpu_count() or 1
    real = {k: v for k, v in ensure_real(a.work, a.cases, a.regen).items() if k in a.layouts}
    many = ensure_many(a.work, a.many, a.regen)
    for ds in (*real.values(), many):
        warm(p for p in ds.rglob("*") if p.is_file())
    tmp = Path(tempfile.mkdtemp(prefix="dg-bench-engine-"))
    sizes = {}
    try:
        me = [sys.executable, str(Path(__file__).resolve()), "--_floor"]
        floors = {}
        for lay, ds in real.items():
            files = floor_files(ds)
            sizes[lay] = (sum(os.path.getsize(f) for f, k in files if k != "pkl"),
                          sum(os.path.getsize(f) for f, k in files if k == "pkl"))
            floors[lay] = tmp / f"floor-{lay}.json"
            floors[lay].write_text(json.dumps(files))
        runs: dict[str, list[float]] = {}
        outs: dict[str, dict] = {}

        def run(key, cmd, check=None):
            dt, out = timed(cmd, key, ok=(0, 1) if check is None else (0,))
            runs.setdefault(key, []).append(dt)
            if check is None:
                outs[key] = summary(out)
            else:
                assert check in out and f"{check} 0\n" not in out, f"{' '.join(cmd)}: {out}"
        # the rescan dataset: one scan to write the manifest (timed once, for information)
        mdir = tmp / "m-many"
        t_prime, out = timed(scan_cmd(many, mdir), "first")
        outs["many_first"] = summary(out)
        print(f"{a.many}-case dataset: first scan {t_prime:.1f}s, {outs['many_first']}", flush=True)
        touch_files = sorted((many / "nnUNet_raw" / MANY_NAME / "imagesTr").iterdir())[:a.repeat]
        for rep in range(a.repeat):
            for lay, ds in real.items():
                run(f"floor_{lay}", [*me, str(floors[lay]), str(jobs)], check="FLOOR_BYTES")
                run(f"full_{lay}", scan_cmd(ds, tmp / f"m-full-{lay}-{rep}", "--full"))
                run(f"select_{lay}", scan_cmd(ds, tmp / f"m-sel-{lay}-{rep}", "--full", "--select", "DG5"))
            run("rescan", scan_cmd(many, mdir))
            st = touch_files[rep].stat()
            os.utime(touch_files[rep], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            run("touched", scan_cmd(many, mdir))
            print(f"  repeat {rep + 1}/{a.repeat} done (loadavg {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(a, jobs, real, sizes, runs, outs, t_start)


def report(a, jobs, real, sizes, runs, outs, t_start) -> None:
    """The table of runs, the targets with PASS/FAIL, and --json."""
    best = {k: min(v) for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\n{os.cpu_count()} cores; {a.cases} real nnunetv2 cases (2d, 24x160x160); rescan dataset "
          f"{outs['rescan']['files']} files")
    for lay in real:
        arrays, pkls = sizes[lay]
        print(f"  {lay}: arrays {arrays / 1e6:.0f} MB, .pkl {pkls / 1e6:.0f} MB "
              f"({pkls / a.cases / 1e6:.2f} MB per case)")
    print(f"{'whole-process seconds':<66s} {'best':>7s} {'median':>7s} {'CPU-s':>7s}")
    rows = []
    for lay in real:
        decode = "ISA-L inflate+CRC" if lay == "npz" else "blosc2 decompress"
        rows += [(f"floor_{lay}", f"floor .{lay}: {decode} + pickle.load, {jobs} spawn processes"),
                 (f"full_{lay}", f"dataguard scan --full (.{lay})"),
                 (f"select_{lay}", f"dataguard scan --full --select DG5 (.{lay})")]
    rows += [("rescan", f"dataguard scan, nothing changed ({outs['rescan']['files']} files)"),
             ("touched", "dataguard scan after touching one file")]
    for k, label in rows:
        print(f"  {label:<64s} {best[k]:7.3f} {med[k]:7.3f} {statistics.median(CPU[k]):7.2f}")
    measured = {}
    for lay in real:
        measured[f"full_{lay}"] = ("full", f"full scan / floor (.{lay})", best[f"full_{lay}"] / best[f"floor_{lay}"],
                                   med[f"full_{lay}"] / med[f"floor_{lay}"], "x floor")
    for lay in real:
        measured[f"select_{lay}"] = ("select", f"--select DG5 --full / full scan (.{lay})",
                                     best[f"select_{lay}"] / best[f"full_{lay}"],
                                     med[f"select_{lay}"] / med[f"full_{lay}"], "x full")
    measured["rescan"] = ("rescan", "warm rescan, nothing changed", best["rescan"], med["rescan"], "s")
    measured["touched"] = ("touched", "warm rescan, one file touched", best["touched"], med["touched"], "s")
    print(f"\n{'target':<56s} {'best':>8s} {'median':>8s}")
    result = {"runs": runs, "cpu_s": CPU, "outputs": outs, "targets": {}}
    for k, (kind, name, b, m, unit) in measured.items():
        ok = b <= TARGETS[kind]
        result["targets"][k] = {"best": b, "median": m, "limit": TARGETS[kind], "pass": ok}
        print(f"  {'PASS' if ok else 'FAIL'}  {name + ' <= ' + str(TARGETS[kind]) + ' ' + unit:<50s}"
              f" {b:8.3f} {m:8.3f}")
    for k in ("rescan", "touched"):
        if outs[k]["findings"] != outs["many_first"]["findings"]:
            print(f"WARNING: {k} reported {outs[k]['findings']} findings, the first scan "
                  f"{outs['many_first']['findings']}")
    for lay in real:
        if outs[f"full_{lay}"]["findings"]:
            print(f"WARNING: the full scan of .{lay} reported {outs[f'full_{lay}']['findings']} findings (real "
                  "nnunetv2 output should have none)")
    print("(CPU-s: median user+sys of the process and the workers it reaped, for information: other "
          "load on a shared machine moves it less than wall time)")
    read = ", ".join(f"full .{lay} {outs[f'full_{lay}']['checked']}, select .{lay} {outs[f'select_{lay}']['checked']}"
                     for lay in real)
    print(f"(checked/reused: {read}, rescan {outs['rescan']['checked']}/{outs['rescan']['reused']}, touched "
          f"{outs['touched']['checked']}/{outs['touched']['reused']}); "
          f"benchmark took {time.perf_counter() - t_start:.0f}s")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
