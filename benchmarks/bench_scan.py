#!/usr/bin/env python
"""Benchmark `dataguard.scan` against the baselines people actually compare it with.

Generates (or reuses) a synthetic nnU-Net v2 preprocessed dataset in the legacy
`.npz` layout under benchmarks/_work/, warms the page cache, then measures:

  (a) naive loop: np.load every .npz and touch every array (one process)
  (b) dataguard.scan(full=True), fresh manifest dir, default jobs (all cores)
  (c) dataguard.scan(full=False) again, same manifest dir (nothing changed)
  (d) blake3 of all bytes (one process)
  (e) inflate + CRC of every zip member, process pool on all cores (ISA-L and zlib)
  plus `dataguard --help` start-up time (median of 5 subprocess runs).

(b) and (c) run in a fresh child process so that peak RSS numbers belong to the scan
alone (self = the scanning process, children = largest pool worker).

usage:
  python benchmarks/bench_scan.py                       # full size (~210 cases, ~1 GB)
  python benchmarks/bench_scan.py --cases 20 --mb-per-case 1   # quick
  python benchmarks/bench_scan.py --json out.json --profile
"""
from __future__ import annotations

import argparse
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
DEFAULT_WORK = HERE / "_work"
DS_NAME = "Dataset990_Bench"
CONFIG = "nnUNetPlans_3d_fullres"
GEN_VERSION = 1          # bump when the generator changes: invalidates cached datasets
CHUNK = 1 << 20          # same bounded-chunk sizes as dataguard.checks.base
MAX_OUT = 4 << 20

DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2, "c": 3},
                "file_ending": ".nii.gz"}
PLANS_JSON = {"plans_name": "nnUNetPlans",
              "configurations": {"3d_fullres": {"data_identifier": CONFIG, "patch_size": [64, 64, 64],
                                                "spacing": [1.0, 1.0, 1.0], "batch_size": 2}}}

# ----------------------------------------------------------------------------- generation


def _smooth(rng, shape, scale, amp):
    """Smooth random field: low-res noise, nearest upsample, separable box blur."""
    import numpy as np

    Z, Y, X = shape
    small = rng.normal(0, 1, (Z // scale + 2, Y // scale + 2, X // scale + 2)).astype(np.float32)
    big = np.repeat(np.repeat(np.repeat(small, scale, 0), scale, 1), scale, 2)[:Z, :Y, :X]
    for ax in range(3):
        c = np.cumsum(big, axis=ax, dtype=np.float32)
        big = (c - np.roll(c, scale, axis=ax)) / scale
    return big * amp


def make_case(seed: int, shape: tuple[int, int, int]):
    """CT-like volume after nnU-Net CT normalisation + a blob segmentation (labels 0..3).

    Air (-1000 HU, constant) around an elliptic body of smooth tissue with noise and
    three ellipsoid organs; z-scored as float32. Compresses ~1.8x with savez_compressed,
    like real resampled CT (continuous values, full mantissa noise, constant air).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    Z, Y, X = shape
    z, y, x = np.ogrid[:Z, :Y, :X]
    body = ((y - Y / 2) / (Y * 0.49)) ** 2 + ((x - X / 2) / (X * 0.48)) ** 2 < 1
    body = np.broadcast_to(body, shape)
    tissue = 40 + _smooth(rng, shape, 16, 60) + _smooth(rng, shape, 4, 20)
    hu = np.where(body, tissue, np.float32(-1000)).astype(np.float32)
    seg = np.zeros(shape, np.int8)
    for lab in (1, 2, 3):
        cz, cy, cx = (rng.uniform(0.3, 0.7) * Z, rng.uniform(0.35, 0.65) * Y, rng.uniform(0.35, 0.65) * X)
        r = rng.uniform(0.08, 0.18, 3) * np.array(shape)
        m = ((z - cz) / r[0]) ** 2 + ((y - cy) / r[1]) ** 2 + ((x - cx) / r[2]) ** 2 < 1
        seg[m] = lab
        hu[m] += lab * 80
    hu += rng.normal(0, 12, shape).astype(np.float32) * body
    data = ((hu - 50.0) / 180.0).astype(np.float32)
    return data[None], seg[None]


def case_shape(i: int, base: tuple[int, int, int]) -> tuple[int, int, int]:
    """Base shape varied by up to about +-12% per axis, deterministic per case."""
    import numpy as np

    rng = np.random.default_rng(10_000 + i)
    return tuple(max(8, int(round(b * rng.uniform(0.88, 1.12)))) for b in base)


def write_case(args) -> tuple[str, int, int]:
    folder, i, base, seed = args
    import numpy as np

    folder = Path(folder)
    name = f"case_{i:03d}"
    shape = case_shape(i, base)
    data, seg = make_case(seed * 1_000_003 + i, shape)
    tmp = folder / f".{name}.tmp.npz"
    np.savez_compressed(tmp, data=data, seg=seg)
    os.replace(tmp, folder / f"{name}.npz")
    spacing = (2.5, 0.8, 0.8)
    props = {
        "spacing": list(spacing),
        "shape_before_cropping": (shape[0] + 6, shape[1] + 20, shape[2] + 20),
        "bbox_used_for_cropping": [[3, 3 + shape[0]], [10, 10 + shape[1]], [10, 10 + shape[2]]],
        "shape_after_cropping_and_before_resampling": shape,
        "class_locations": {k: np.zeros((5, 4), np.int64) for k in (1, 2, 3)},
    }
    (folder / f"{name}.pkl").write_bytes(pickle.dumps(props))
    return name, data.nbytes + seg.nbytes, (folder / f"{name}.npz").stat().st_size


def calibrate(mb_per_case: float, seed: int) -> tuple[int, int, int]:
    """Pick a base shape whose savez_compressed output is about mb_per_case MB."""
    import io

    import numpy as np

    probe = (64, 128, 128)
    data, seg = make_case(seed * 7 + 1, probe)
    buf = io.BytesIO()
    np.savez_compressed(buf, data=data, seg=seg)
    per_voxel = len(buf.getvalue()) / (64 * 128 * 128)
    voxels = mb_per_case * 1e6 / per_voxel
    s = (voxels / (64 * 128 * 128)) ** (1 / 3)
    # CT-ish aspect: fewer slices than in-plane pixels
    return (max(8, round(64 * s)), max(8, round(128 * s)), max(8, round(128 * s)))


def ensure_dataset(work: Path, cases: int, mb_per_case: float, seed: int, regen: bool) -> Path:
    ds = work / "nnUNet_preprocessed" / DS_NAME
    marker = work / "dataset_marker.json"
    params = {"gen_version": GEN_VERSION, "cases": cases, "mb_per_case": mb_per_case, "seed": seed}
    if not regen and marker.is_file():
        try:
            m = json.loads(marker.read_text())
        except ValueError:
            m = {}
        cfg = ds / CONFIG
        if m.get("params") == params and all(
                (cfg / f"case_{i:03d}.npz").is_file() and (cfg / f"case_{i:03d}.pkl").is_file()
                for i in range(cases)) and len(list(cfg.iterdir())) == 2 * cases:
            print(f"reusing dataset {ds} ({m['npz_bytes'] / 1e9:.2f} GB .npz)")
            return ds
    if ds.exists():
        shutil.rmtree(ds)
    marker.unlink(missing_ok=True)
    cfg = ds / CONFIG
    cfg.mkdir(parents=True)
    (ds / "dataset.json").write_text(json.dumps({**DATASET_JSON, "numTraining": cases}, indent=2))
    (ds / "dataset_fingerprint.json").write_text("{}")
    (ds / "nnUNetPlans.json").write_text(json.dumps(PLANS_JSON, indent=2))
    base = calibrate(mb_per_case, seed)
    print(f"generating {cases} cases, base shape {base} (~{mb_per_case} MB/.npz) in {ds} ...", flush=True)
    t0 = time.perf_counter()
    raw = npz = 0
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = [(str(cfg), i, base, seed) for i in range(cases)]
        for k, (_name, r, n) in enumerate(pool.map(write_case, jobs, chunksize=1), 1):
            raw += r
            npz += n
            if k % 20 == 0 or k == cases:
                print(f"  {k}/{cases}  {npz / 1e9:.2f} GB", flush=True)
    marker.write_text(json.dumps({"params": params, "base_shape": base, "raw_bytes": raw,
                                  "npz_bytes": npz, "generated_s": round(time.perf_counter() - t0, 1)},
                                 indent=2))
    print(f"generated in {time.perf_counter() - t0:.1f}s")
    return ds


# ----------------------------------------------------------------------------- baselines


def dataset_files(ds: Path) -> list[Path]:
    return sorted(p for p in ds.rglob("*") if p.is_file())


def warm_cache(files: list[Path]) -> int:
    n = 0
    for p in files:
        with open(p, "rb") as f:
            while True:
                b = f.read(8 << 20)
                if not b:
                    break
                n += len(b)
    return n


def naive_loop(npzs: list[Path]) -> float:
    import numpy as np

    t0 = time.perf_counter()
    for p in npzs:
        with np.load(p) as z:
            for k in z.files:
                a = z[k]
                a.sum()
    return time.perf_counter() - t0


def blake3_all(files: list[Path]) -> float:
    from blake3 import blake3

    t0 = time.perf_counter()
    for p in files:
        h = blake3()
        with open(p, "rb") as f:
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                h.update(b)
        h.hexdigest()
    return time.perf_counter() - t0


def inflate_crc(args) -> int:
    """Inflate every member of one zip in bounded pieces and check its CRC. Returns bytes out."""
    path, impl = args
    import struct
    import zipfile

    if impl == "isal":
        from isal import isal_zlib as z
    else:
        import zlib as z
    hdr_struct = struct.Struct("<4s5H3I2H")
    out_total = 0
    with open(path, "rb") as f:
        infos = zipfile.ZipFile(f).infolist()
        for zi in infos:
            f.seek(zi.header_offset)
            fields = hdr_struct.unpack(f.read(hdr_struct.size))
            f.seek(fields[-2] + fields[-1], 1)
            remaining = zi.compress_size
            d = z.decompressobj(-15)
            crc = n = 0
            while True:
                if d.unconsumed_tail:
                    buf = d.unconsumed_tail
                elif remaining:
                    buf = f.read(min(CHUNK, remaining))
                    remaining -= len(buf)
                else:
                    break
                o = d.decompress(buf, MAX_OUT)
                crc = z.crc32(o, crc)
                n += len(o)
                if d.eof:
                    break
            if crc != zi.CRC or n != zi.file_size:
                raise RuntimeError(f"{path}:{zi.filename}: bad CRC/length")
            out_total += n
    return out_total


def inflate_pool(npzs: list[Path], impl: str, jobs: int) -> tuple[float, int]:
    """Process pool (spawn, like dataguard) over files, biggest first. Includes pool start-up."""
    import multiprocessing

    order = sorted(npzs, key=lambda p: -p.stat().st_size)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        out = sum(pool.map(inflate_crc, [(str(p), impl) for p in order], chunksize=1))
    return time.perf_counter() - t0, out


def inflate_serial(npzs: list[Path], impl: str) -> float:
    t0 = time.perf_counter()
    for p in npzs:
        inflate_crc((str(p), impl))
    return time.perf_counter() - t0


def time_help(n: int = 5) -> list[float]:
    exe = Path(sys.executable).parent / "dataguard"
    if not exe.exists():
        exe = REPO / ".venv" / "bin" / "dataguard"
    # no installed entry point (bare checkout): same thing through `python -m dataguard`
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "dataguard", "--help"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, cwd=str(REPO))  # warm .pyc
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, cwd=str(REPO))
        times.append(time.perf_counter() - t0)
    return times


def other_cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds` while this script sleeps (Linux /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v[:8])   # idle + iowait, total (without guest)
    try:
        i0, t0 = snap()
        time.sleep(seconds)
        i1, t1 = snap()
    except OSError:
        return 0.0
    return 1 - (i1 - i0) / max(1, t1 - t0)


# ----------------------------------------------------------------------------- scan child


def child_scan(ds: str, manifest_dir: str, jobs: int | None) -> None:
    """Runs in a fresh interpreter: (b) full scan then (c) incremental; prints one JSON line."""
    import resource

    import dataguard

    t0 = time.perf_counter()
    full = dataguard.scan(targets=[ds], manifest_dir=manifest_dir, full=True, jobs=jobs)
    t_full = time.perf_counter() - t0
    rss_self_full = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    inc = dataguard.scan(targets=[ds], manifest_dir=manifest_dir, full=False, jobs=jobs)
    t_inc = time.perf_counter() - t0
    print("CHILD_JSON " + json.dumps({
        "full_s": t_full, "incremental_s": t_inc,
        "full_summary": full.summary(), "incremental_summary": inc.summary(),
        "maxrss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "maxrss_self_after_full_kb": rss_self_full,
        "maxrss_children_kb": max(rss_kids, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
    }))


def run_scan_child(ds: Path, jobs: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="dg-bench-manifest-") as md:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child-scan", str(ds), md]
        if jobs:
            cmd += ["--jobs", str(jobs)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
        if p.returncode != 0:
            sys.stderr.write(p.stdout + p.stderr)
            raise SystemExit("scan child failed")
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith("CHILD_JSON "))
        return json.loads(line[len("CHILD_JSON "):])


def profile_check_file(ds: Path, n: int = 6) -> str:
    """cProfile of dataguard's per-file worker, in-process, on n .npz + n .pkl files."""
    import cProfile
    import io
    import pstats

    from dataguard.checks.base import FileTask
    from dataguard.checks.files import check_file

    cfg = ds / CONFIG
    tasks = []
    for i in range(n):
        for ext, kind in ((".npz", "npz"), (".pkl", "pkl")):
            p = cfg / f"case_{i:03d}{ext}"
            tasks.append(FileTask(path=str(p), rel=f"preprocessed/{CONFIG}/{p.name}", kind=kind,
                                  where="config", case=f"case_{i:03d}", labels=(0, 1, 2, 3)))
    check_file(tasks[0])   # imports outside the profile
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for t in tasks:
        check_file(t)
    pr.disable()
    wall = time.perf_counter() - t0
    s = io.StringIO()
    s.write(f"check_file on {n} npz + {n} pkl, one process: {wall:.3f}s\n")
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(14)
    return s.getvalue()


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=210)
    ap.add_argument("--mb-per-case", type=float, default=5.0, help="target .npz size per case (MB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--regen", action="store_true", help="regenerate even if a matching dataset exists")
    ap.add_argument("--jobs", type=int, default=None, help="scan/inflate workers (default: all cores)")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers to this file")
    ap.add_argument("--repeat", type=int, default=3, help="repeat every measurement (best run is used)")
    ap.add_argument("--profile", action="store_true", help="also cProfile dataguard's per-file worker")
    ap.add_argument("--_child-scan", nargs=2, metavar=("DS", "MANIFEST_DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child_scan:
        child_scan(a._child_scan[0], a._child_scan[1], a.jobs)
        return

    import platform

    import numpy as np

    jobs = a.jobs or os.cpu_count() or 1
    ds = ensure_dataset(a.work, a.cases, a.mb_per_case, a.seed, a.regen)
    files = dataset_files(ds)
    npzs = [p for p in files if p.suffix == ".npz"]
    npz_bytes = sum(p.stat().st_size for p in npzs)
    all_bytes = sum(p.stat().st_size for p in files)
    import zipfile

    raw_bytes = 0
    for p in npzs:
        with zipfile.ZipFile(p) as zf:
            raw_bytes += sum(zi.file_size for zi in zf.infolist())
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"dataset: {len(npzs)} cases, {len(files)} files, .npz {npz_bytes / 1e9:.3f} GB on disk, "
          f"{raw_bytes / 1e9:.3f} GB inflated (ratio {raw_bytes / npz_bytes:.2f}x), "
          f"{npz_bytes / len(npzs) / 1e6:.2f} MB/.npz")
    t0 = time.perf_counter()
    warm_cache(files)
    t_warm = time.perf_counter() - t0
    t_warm2 = time.perf_counter()
    warm_cache(files)
    t_warm2 = time.perf_counter() - t_warm2
    print(f"page cache: first read {t_warm:.2f}s, warm re-read {t_warm2:.2f}s "
          f"({all_bytes / t_warm2 / 1e9:.2f} GB/s)\n")

    r: dict = {"cases": len(npzs), "files": len(files), "npz_bytes": npz_bytes,
               "all_bytes": all_bytes, "inflated_bytes": raw_bytes, "cpu_count": os.cpu_count(),
               "jobs": jobs, "warm_reread_s": t_warm2}

    # every measurement runs --repeat times, interleaved; targets use the best (min) run,
    # which is the least disturbed by other processes on a shared machine
    m: dict[str, list[float]] = {k: [] for k in (
        "a_naive_s", "b_scan_full_s", "c_scan_incremental_s", "d_blake3_s", "e_isal_pool_s",
        "e_zlib_pool_s", "e_isal_serial_s", "e_zlib_serial_s")}
    busy: list[float] = []
    children = []
    for rep in range(a.repeat):
        busy.append(other_cpu_busy())
        m["a_naive_s"].append(naive_loop(npzs))
        child = run_scan_child(ds, a.jobs)
        children.append(child)
        m["b_scan_full_s"].append(child["full_s"])
        m["c_scan_incremental_s"].append(child["incremental_s"])
        m["d_blake3_s"].append(blake3_all(files))
        t, out = inflate_pool(npzs, "isal", jobs)
        assert out == raw_bytes, (out, raw_bytes)
        m["e_isal_pool_s"].append(t)
        m["e_zlib_pool_s"].append(inflate_pool(npzs, "zlib", jobs)[0])
        m["e_isal_serial_s"].append(inflate_serial(npzs, "isal"))
        m["e_zlib_serial_s"].append(inflate_serial(npzs, "zlib"))
        print(f"  repeat {rep + 1}/{a.repeat} done (cpu busy before it: {busy[-1]:.0%}, "
              f"loadavg {os.getloadavg()[0]:.2f})", flush=True)
    busy.append(other_cpu_busy())
    r["runs"] = m
    r["cpu_busy_before_each_repeat"] = busy
    best = {k: min(v) for k, v in m.items()}
    r.update(best)
    r["scan_child"] = min(children, key=lambda c: c["full_s"])

    print(f"\n{'seconds, best of ' + str(a.repeat) + ' (median)':<58s} {'best':>8s}    {'median':>7s}  MB/s on disk")
    rows = [
        ("a_naive_s", "(a) naive np.load + touch every array, 1 process", npz_bytes),
        ("b_scan_full_s", f"(b) dataguard.scan full=True, jobs={a.jobs or 'default'} ({jobs})", all_bytes),
        ("c_scan_incremental_s", "(c) dataguard.scan again, manifest reused", all_bytes),
        ("d_blake3_s", "(d) blake3 of all bytes, 1 process", all_bytes),
        ("e_isal_pool_s", f"(e) inflate+CRC isal, pool of {jobs} (spawn incl.)", npz_bytes),
        ("e_zlib_pool_s", f"(e') inflate+CRC zlib, pool of {jobs} (spawn incl.)", npz_bytes),
        ("e_isal_serial_s", "    inflate+CRC isal, 1 process", npz_bytes),
        ("e_zlib_serial_s", "    inflate+CRC zlib, 1 process", npz_bytes),
    ]
    for key, label, nbytes in rows:
        v = m[key]
        print(f"{label:<58s} {min(v):8.3f} s  {statistics.median(v):7.3f}  {nbytes / min(v) / 1e6:9.1f}")
    helps = time_help(5)
    r["help_runs_s"] = helps
    r["help_median_s"] = statistics.median(helps)
    print(f"{'dataguard --help (median of 5 subprocess runs)':<58s} {r['help_median_s']:8.3f} s")
    if max(busy) > 0.15:
        print(f"WARNING: other processes used {max(busy):.0%} of the CPUs around the runs; "
              "numbers are noisy (targets use the best run)")

    child = r["scan_child"]
    fs = child["full_summary"]
    print(f"\nscan summary (full): files={fs['files']} checked={fs['checked']} errors={fs['errors']} "
          f"warnings={fs['warnings']} info={fs['info']} by_code={fs['by_code']}")
    inc = child["incremental_summary"]
    print(f"scan summary (incr): checked={inc['checked']} reused={inc['reused']}")
    rss_self = max(c["maxrss_self_kb"] for c in children) / 1024
    rss_kid = max(c["maxrss_children_kb"] for c in children) / 1024
    r["peak_rss_scan_process_mib"], r["peak_rss_pool_worker_mib"] = rss_self, rss_kid
    print(f"peak RSS: scanning process {rss_self:.0f} MiB, largest pool worker {rss_kid:.0f} MiB "
          f"(dataset {all_bytes / 2**20:.0f} MiB on disk, {raw_bytes / len(npzs) / 2**20:.1f} MiB "
          f"inflated per case)")

    b, aa, e, c, h = (r["b_scan_full_s"], r["a_naive_s"], r["e_isal_pool_s"],
                      r["c_scan_incremental_s"], r["help_median_s"])
    targets = [
        ("(b) <= 0.35 x (a)", b / aa, 0.35, f"{b / aa:.3f} x"),
        ("(b) <= 1.3 x (e, isal, all cores)", b / e, 1.3, f"{b / e:.3f} x"),
        ("(c) <= 0.02 x (b)", c / b, 0.02, f"{c / b:.4f} x"),
        ("--help < 0.3 s", h, 0.3, f"{h:.3f} s"),
    ]
    print("\ntargets (best runs):")
    r["targets"] = {}
    for name, val, lim, txt in targets:
        ok = val <= lim if "<=" in name else val < lim
        r["targets"][name] = {"value": val, "limit": lim, "pass": ok}
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<38s} measured {txt}")
    print(f"  (info) (b)/(d) blake3 = {b / r['d_blake3_s']:.2f} x;  "
          f"isal speed-up over zlib (1 proc) = {r['e_zlib_serial_s'] / r['e_isal_serial_s']:.2f} x;  "
          f"pool scaling isal = {r['e_isal_serial_s'] / e:.2f} x on {jobs} workers")

    if a.profile:
        print("\n" + profile_check_file(ds))
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
