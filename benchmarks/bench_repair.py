#!/usr/bin/env python
"""Benchmark `dataguard repair` of one corrupt case against re-running nnU-Net's preprocessing.

Generates (or reuses) a synthetic raw dataset with dataguard.demo.synthetic.write_raw_dataset,
plans + preprocesses it once with the real nnunetv2 (dataguard.nnunet.plan_and_preprocess)
and keeps a pristine copy of the preprocessed dataset. Then, page cache warm, --repeat
times, interleaved, each run starting from the pristine copy, an up-to-date manifest
(from an earlier scan) and one case's .b2nd truncated to half its size:

  (a) nnUNetv2_preprocess -d ID -c CONFIG -np 2 (console script, subprocess): what
        nnU-Net offers, i.e. redo the whole configuration
  (b) python -m dataguard repair <preprocessed dataset> --yes --manifest-dir DIR
        (subprocess: imports, incremental scan, nnunetv2 import, rebuild, verify, swap,
        rescan), and Workspace([...]).repair() timed in a warm process where
        nnunetv2 is already imported
  (c) nnunetv2's DefaultPreprocessor.run_case_save for that one case: in that warm
        process (plans loaded; the floor) and as a cold `python -c` subprocess
        (import nnunetv2, PlansManager/ConfigurationManager, run_case_save)

Targets (best runs; median-run ratio in brackets): (a)/(b subprocess) >= 20;
(b in-process)/(c warm) <= 1.5; (b subprocess)/(c cold subprocess) <= 1.5.

usage:
  python benchmarks/bench_repair.py                       # full: 200 cases, 3d_fullres
  python benchmarks/bench_repair.py --cases 20 --repeat 1 # quick
  python benchmarks/bench_repair.py --json out.json --profile
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_scan import other_cpu_busy, warm_cache  # noqa: E402

DEFAULT_WORK = HERE / "_work"
DS_ID, DS_SHORT = 992, "RepairBench"
DS_NAME = f"Dataset{DS_ID:03d}_{DS_SHORT}"
GEN_VERSION = 1          # bump when the generator changes: invalidates cached datasets
# x, y, z at 1.25 x 1.25 x 8 mm (write_raw_dataset's spacing): ~0.5 s of run_case_save
# per case, ~12 MB per raw image; nnUNetv2_preprocess of 200 cases (3d_fullres or 2d)
# takes ~1.5-2 min on 2 cores, plan_and_preprocess (fingerprint + plans too) ~2 min
DEFAULT_SHAPE = (320, 320, 32)
NP = 2                   # nnUNetv2_preprocess -np

# ----------------------------------------------------------------------------- layout


class Paths:
    def __init__(self, work: Path):
        self.base = (work / "repair").resolve()
        self.raw_root = self.base / "nnUNet_raw"
        self.pre_root = self.base / "nnUNet_preprocessed"
        self.results_root = self.base / "nnUNet_results"
        self.raw = self.raw_root / DS_NAME
        self.pre = self.pre_root / DS_NAME                  # the copy every run works on
        self.pristine = self.base / "pristine" / DS_NAME    # never touched after creation
        self.manifests = self.base / "manifests"
        self.scratch = self.base / "scratch"                # (c) outputs
        self.marker = work / "repair_marker.json"


def env_for(p: Paths) -> dict:
    """nnUNet_* for every child (and OMP_NUM_THREADS=1 unless set, as dataguard.nnunet does)."""
    from dataguard.nnunet import nnunet_env

    return nnunet_env(p.raw_root, p.pre_root, p.results_root)


def config_folder(pre: Path, config: str) -> str:
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    conf = plans["configurations"][config]
    return conf.get("data_identifier") or f"{plans.get('plans_name', 'nnUNetPlans')}_{config}"


def _case_names(cases: int) -> list[str]:
    return [f"heart_{i:03d}" for i in range(cases)]


def _complete(p: Paths, cases: int, config: str) -> bool:
    try:
        cfg = p.pristine / config_folder(p.pristine, config)
        names = {c.name for c in cfg.iterdir()}
        raw_ok = len(list((p.raw / "imagesTr").iterdir())) == cases
    except (OSError, KeyError, ValueError):
        return False
    return raw_ok and all({f"{c}.b2nd", f"{c}_seg.b2nd", f"{c}.pkl"} <= names for c in _case_names(cases))


def ensure_dataset(p: Paths, cases: int, shape: tuple[int, int, int], config: str, seed: int,
                   regen: bool) -> dict:
    """Raw dataset + plans + one preprocessed configuration + pristine copy (reused when unchanged)."""
    from dataguard.nnunet import plan_and_preprocess
    from dataguard.demo.synthetic import write_raw_dataset

    params = {"gen_version": GEN_VERSION, "cases": cases, "shape": list(shape), "config": config,
              "seed": seed, "nnunet_np": NP}
    if not regen and p.marker.is_file():
        try:
            m = json.loads(p.marker.read_text())
        except ValueError:
            m = {}
        if m.get("params") == params and _complete(p, cases, config):
            print(f"reusing dataset {p.base} (generated in {m['generate_s']}s, "
                  f"plan_and_preprocess {m['plan_and_preprocess_s']}s)")
            return m
    p.marker.unlink(missing_ok=True)
    if p.base.exists():
        shutil.rmtree(p.base)           # benchmarks/_work/repair: ours alone
    p.results_root.mkdir(parents=True)
    print(f"generating {cases} raw cases, shape {shape} (x, y, z), in {p.raw} ...", flush=True)
    t0 = time.perf_counter()
    write_raw_dataset(p.raw_root, DS_ID, DS_SHORT, n_cases=cases, shape=shape, seed=seed)
    t_gen = time.perf_counter() - t0
    print(f"  {t_gen:.1f}s; nnUNetv2_plan_and_preprocess -c {config} -np {NP} ...", flush=True)
    t0 = time.perf_counter()
    plan_and_preprocess(p.raw_root, p.pre_root, DS_ID, (config,), num_processes=NP)
    t_pp = time.perf_counter() - t0
    print(f"  {t_pp:.1f}s; pristine copy ...", flush=True)
    shutil.copytree(p.pre, p.pristine)
    m = {"params": params, "generate_s": round(t_gen, 1), "plan_and_preprocess_s": round(t_pp, 1),
         "raw_bytes": sum(f.stat().st_size for f in p.raw.rglob("*") if f.is_file()),
         "preprocessed_bytes": sum(f.stat().st_size for f in p.pristine.rglob("*") if f.is_file())}
    p.marker.write_text(json.dumps(m, indent=2))
    return m


# ----------------------------------------------------------------------------- state between runs


def sync(src: Path, dst: Path, base: Path) -> int:
    """Make dst a copy of src: copy files whose size/mtime differ (copy2), delete extras.

    Only ever used on the benchmark's working copy under `base`. Returns files copied.
    """
    dst = dst.resolve()
    assert base in dst.parents, (dst, base)
    copied = 0
    want_files, want_dirs = set(), set()
    for d, dirs, files in os.walk(src):
        rel = Path(d).relative_to(src)
        want_dirs.add(rel)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for n in files:
            want_files.add(rel / n)
            s, t = Path(d) / n, dst / rel / n
            ss = s.stat()
            try:
                ts = t.lstat()
                same = ts.st_size == ss.st_size and ts.st_mtime_ns == ss.st_mtime_ns and not t.is_symlink()
            except FileNotFoundError:
                same = False
            if not same:
                if t.is_symlink() or t.exists():
                    t.unlink()
                shutil.copy2(s, t)
                copied += 1
    for d, dirs, files in os.walk(dst, topdown=True):
        rel = Path(d).relative_to(dst)
        for n in list(dirs):
            if rel / n not in want_dirs:
                shutil.rmtree(Path(d) / n)          # e.g. the .dataguard folder a repair made
                dirs.remove(n)
        for n in files:
            if rel / n not in want_files:
                (Path(d) / n).unlink()
    return copied


def prepare(p: Paths, config_dir: str, case: str) -> dict:
    """Pristine dataset, manifest up to date (a scan ran earlier), then one case's .b2nd truncated."""
    import dataguard

    t0 = time.perf_counter()
    copied = sync(p.pristine, p.pre, p.base)
    shutil.rmtree(p.raw / ".dataguard", ignore_errors=True)   # the repair's lock folder in our raw copy
    res = dataguard.scan([str(p.pre)], manifest_dir=p.manifests)
    s = res.summary()
    if s["errors"] or s["warnings"]:
        raise SystemExit(f"pristine dataset does not scan clean: {s}")
    target = p.pre / config_dir / f"{case}.b2nd"
    size = target.stat().st_size
    with open(target, "r+b") as f:
        f.truncate(size // 2)
    # write back the GBs the previous step may have left dirty: a later fsync (journal,
    # manifest) must not pay for them (seen: a 4.5 s repair taking 39 s right after (a))
    os.sync()
    return {"copied": copied, "prepare_s": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- measurements


def run_a(p: Paths, config: str, env: dict) -> float:
    exe = Path(sys.executable).parent / "nnUNetv2_preprocess"
    args = ["-d", str(DS_ID), "-c", config, "-np", str(NP)]
    if exe.exists():
        cmd = [str(exe), *args]
    else:   # no console script: the same entry point through python -c
        cmd = [sys.executable, "-c", "import sys; from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints "
               "import preprocess_entry as m; sys.argv[0] = 'nnUNetv2_preprocess'; m()", *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit("nnUNetv2_preprocess failed")
    return t


def run_b_subprocess(p: Paths, env: dict) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "dataguard", "repair", str(p.pre), "--yes", "--manifest-dir", str(p.manifests)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(REPO))
    t = time.perf_counter() - t0
    if r.returncode != 0 or "1 done, 0 failed" not in r.stderr:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit(f"dataguard repair exited {r.returncode}")
    return t, r.stderr


COLD_C = """\
import json, sys
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
pre, cname, out, label, *images = sys.argv[1:]
pm = PlansManager(pre + '/nnUNetPlans.json')
cm = pm.get_configuration(cname)
dj = json.load(open(pre + '/dataset.json'))
cm.preprocessor_class(verbose=False).run_case_save(out, images, label, pm, cm, dj)
"""


def case_inputs(p: Paths, case: str) -> tuple[list[str], str]:
    return sorted(str(f) for f in (p.raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz")), \
        str(p.raw / "labelsTr" / f"{case}.nii.gz")


def run_c_cold(p: Paths, config: str, case: str, env: dict) -> float:
    images, label = case_inputs(p, case)
    out = Path(tempfile.mkdtemp(prefix="c-cold-", dir=p.scratch)) / case
    cmd = [sys.executable, "-c", COLD_C, str(p.pre), config, str(out), label, *images]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    t = time.perf_counter() - t0
    if r.returncode != 0 or not Path(str(out) + ".b2nd").is_file():
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit("cold run_case_save failed")
    shutil.rmtree(out.parent)
    return t


def child_warm(args: dict) -> None:
    """Fresh interpreter: import nnunetv2 + dataguard, (c) warm run_case_save, then time repair()."""
    import cProfile
    import io
    import pstats

    import nnunetv2.paths  # noqa: F401 - env set by the parent
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    import dataguard.nnunet.preprocess_case  # noqa: F401
    import dataguard.engine.scanner  # noqa: F401
    from dataguard.workspace import Workspace

    pre, config, case, scratch = Path(args["pre"]), args["config"], args["case"], Path(args["scratch"])
    images, label = args["images"], args["label"]
    pm = PlansManager(str(pre / "nnUNetPlans.json"))
    cm = pm.get_configuration(config)
    dj = json.loads((pre / "dataset.json").read_text())
    pp = cm.preprocessor_class(verbose=False)
    c_warm = []
    for k in range(args["c_runs"] + 1):         # run 0 warms lazy imports and caches
        out = Path(tempfile.mkdtemp(prefix="c-warm-", dir=scratch)) / case
        t0 = time.perf_counter()
        pp.run_case_save(str(out), images, label, pm, cm, dj)
        t = time.perf_counter() - t0
        shutil.rmtree(out.parent)
        if k:
            c_warm.append(t)
    marks: list[tuple[float, str]] = []
    prof = cProfile.Profile() if args["profile"] else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    res = Workspace([str(pre)], manifest_dir=args["manifests"]).repair(
        log=lambda m: marks.append((time.perf_counter(), m)))
    if prof:
        prof.disable()
    t_b = time.perf_counter() - t0
    outcomes = [o for r in res.reports for o in r.outcomes]
    ok = len(outcomes) == 1 and outcomes[0].ok and res.after is not None and not res.after.summary()["errors"]
    # phases from the log lines: scan + plan | nnunetv2 plans + rebuild + verify + swap | rescan(s)
    t_load = next((t for t, m in marks if m.startswith("loading")), None)
    t_done = next((t for t, m in marks if m.startswith("done") or m.startswith("FAILED")), None)
    phases = None
    if t_load and t_done:
        phases = {"scan_plan_s": t_load - t0, "rebuild_verify_swap_s": t_done - t_load,
                  "rescan_s": t0 + t_b - t_done}
    out = {"b_inprocess_s": t_b, "c_warm_s": c_warm, "ok": ok, "phases": phases,
           "outcomes": [o.detail for o in outcomes], "before": res.before.summary(),
           "after": res.after.summary() if res.after is not None else None}
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(28)
        s.write("\n")
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(14)
        out["profile"] = s.getvalue()
    print("CHILD_JSON " + json.dumps(out))


def run_warm_child(p: Paths, config: str, case: str, env: dict, c_runs: int, profile: bool) -> dict:
    images, label = case_inputs(p, case)
    args = {"pre": str(p.pre), "config": config, "case": case, "scratch": str(p.scratch),
            "manifests": str(p.manifests), "images": images, "label": label, "c_runs": c_runs,
            "profile": profile}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child-warm", json.dumps(args)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(REPO))
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit("warm child failed")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("CHILD_JSON "))
    d = json.loads(line[len("CHILD_JSON "):])
    if not d["ok"]:
        raise SystemExit(f"in-process repair did not end clean: {d['outcomes']} {d['after']}")
    return d


def compare_case(p: Paths, config_dir: str, case: str) -> str:
    """Is the rebuilt case what nnUNetv2 wrote originally? (bytes, else decoded arrays)"""
    import pickle

    import blosc2
    import numpy as np

    a, b = p.pre / config_dir, p.pristine / config_dir
    names = [f"{case}.b2nd", f"{case}_seg.b2nd", f"{case}.pkl"]
    if all((a / n).read_bytes() == (b / n).read_bytes() for n in names):
        return "byte-identical to the original"
    for n in names[:2]:
        if not np.array_equal(blosc2.open(str(a / n), mode="r")[...], blosc2.open(str(b / n), mode="r")[...]):
            return f"DIFFERENT arrays in {n}"
    pa, pb = (pickle.loads((x / names[2]).read_bytes()) for x in (a, b))
    same_props = set(pa) == set(pb)
    return "same arrays as the original (files differ in bytes)" + ("" if same_props else "; properties keys differ")


# ----------------------------------------------------------------------------- main


def _row(label: str, v: list[float]) -> str:
    return f"{label:<64s} {min(v):8.3f} s  {statistics.median(v):7.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--config", default="3d_fullres", help="nnU-Net configuration (3d_fullres or 2d)")
    ap.add_argument("--shape", default=",".join(map(str, DEFAULT_SHAPE)),
                    help="raw case shape x,y,z (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--regen", action="store_true", help="regenerate even if a matching dataset exists")
    ap.add_argument("--repeat", type=int, default=3, help="repeat every measurement (best and median shown)")
    ap.add_argument("--c-runs", type=int, default=3, help="(c) warm run_case_save calls per repeat")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers to this file")
    ap.add_argument("--profile", action="store_true", help="also cProfile one in-process repair")
    ap.add_argument("--_child-warm", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child_warm:
        child_warm(json.loads(a._child_warm))
        return

    import platform

    from importlib.metadata import version

    shape = tuple(int(x) for x in a.shape.split(","))
    p = Paths(a.work)
    marker = ensure_dataset(p, a.cases, shape, a.config, a.seed, a.regen)
    env = env_for(p)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    cfg_dir = config_folder(p.pristine, a.config)
    case = f"heart_{a.cases // 2:03d}"
    p.scratch.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(p.manifests, ignore_errors=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, nnunetv2 {version('nnunetv2')}, "
          f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS')}")
    print(f"dataset: {a.cases} cases, raw shape {shape}, {a.config} ({cfg_dir}), raw "
          f"{marker['raw_bytes'] / 1e9:.2f} GB, preprocessed {marker['preprocessed_bytes'] / 1e9:.2f} GB; "
          f"corrupt case {case} (.b2nd truncated to half)")
    files = [f for f in (*p.raw.rglob("*"), *p.pristine.rglob("*")) if f.is_file()]
    prepare(p, cfg_dir, case)     # first scan: builds the manifest
    files += [f for f in p.pre.rglob("*") if f.is_file()]
    warm_cache(files)
    t0 = time.perf_counter()
    nbytes = warm_cache(files)
    print(f"page cache: warm re-read of {nbytes / 1e9:.2f} GB in {time.perf_counter() - t0:.2f}s\n")

    m: dict[str, list[float]] = {k: [] for k in ("a_preprocess_s", "b_subprocess_s", "b_inprocess_s",
                                                 "c_warm_s", "c_cold_subprocess_s")}
    phases, busy, identical = [], [], []
    for rep in range(a.repeat):
        busy.append(other_cpu_busy())
        prepare(p, cfg_dir, case)
        m["a_preprocess_s"].append(run_a(p, a.config, env))
        prepare(p, cfg_dir, case)
        t, _ = run_b_subprocess(p, env)
        m["b_subprocess_s"].append(t)
        identical.append(compare_case(p, cfg_dir, case))
        prepare(p, cfg_dir, case)
        d = run_warm_child(p, a.config, case, env, a.c_runs, False)
        m["b_inprocess_s"].append(d["b_inprocess_s"])
        m["c_warm_s"] += d["c_warm_s"]
        phases.append(d["phases"])
        m["c_cold_subprocess_s"].append(run_c_cold(p, a.config, case, env))
        print(f"  repeat {rep + 1}/{a.repeat}: (a) {m['a_preprocess_s'][-1]:.1f}s  (b) {t:.2f}s / "
              f"{d['b_inprocess_s']:.2f}s in-process  (c) {min(d['c_warm_s']):.2f}s warm / "
              f"{m['c_cold_subprocess_s'][-1]:.2f}s cold  (cpu busy before: {busy[-1]:.0%}, "
              f"loadavg {os.getloadavg()[0]:.2f})", flush=True)
    busy.append(other_cpu_busy())

    best = {k: min(v) for k, v in m.items()}
    med = {k: statistics.median(v) for k, v in m.items()}
    n = a.repeat
    print(f"\n{'seconds, best of ' + str(n) + ' (median)':<64s} {'best':>8s}    {'median':>7s}")
    print(_row(f"(a) nnUNetv2_preprocess -c {a.config} -np {NP} (subprocess)", m["a_preprocess_s"]))
    print(_row("(b) python -m dataguard repair --yes (subprocess)", m["b_subprocess_s"]))
    print(_row("(b) Workspace.repair(), warm process", m["b_inprocess_s"]))
    print(_row(f"(c) run_case_save, warm process ({len(m['c_warm_s'])} calls)", m["c_warm_s"]))
    print(_row("(c) run_case_save, cold python -c (subprocess)", m["c_cold_subprocess_s"]))
    per_case = best["a_preprocess_s"] * NP / a.cases
    print(f"    (a) per case x {NP} processes: {per_case:.3f} s;  rebuilt case: {identical[-1]}")
    ph = [x for x in phases if x]
    if ph:
        keys = ("scan_plan_s", "rebuild_verify_swap_s", "rescan_s")
        print("    in-process repair phases, median: " + ", ".join(
            f"{k[:-2]} {statistics.median(x[k] for x in ph):.3f}s" for k in keys))
    if max(busy) > 0.15:
        print(f"WARNING: other processes used up to {max(busy):.0%} of the CPUs around the runs; "
              "numbers are noisy (targets use the best run)")

    targets = [
        ("(a) / (b subprocess) >= 20", "a_preprocess_s", "b_subprocess_s", 20, True),
        ("(b in-process) / (c warm) <= 1.5", "b_inprocess_s", "c_warm_s", 1.5, False),
        ("(b subprocess) / (c cold subprocess) <= 1.5", "b_subprocess_s", "c_cold_subprocess_s", 1.5, False),
    ]
    r: dict = {"cases": a.cases, "config": a.config, "shape": list(shape), "corrupt_case": case,
               "cpu_count": os.cpu_count(), "dataset": marker, "runs": m, "best": best, "median": med,
               "phases": phases, "rebuilt_vs_original": identical, "cpu_busy_before_each_repeat": busy,
               "targets": {}}
    print("\ntargets (best runs; median-run ratio in brackets):")
    for name, num, den, lim, ge in targets:
        v, vm = best[num] / best[den], med[num] / med[den]
        ok = v >= lim if ge else v <= lim
        r["targets"][name] = {"value": v, "median_value": vm, "limit": lim, "pass": ok}
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<46s} measured {v:6.2f} x  ({vm:.2f} x)")

    if a.profile:
        prepare(p, cfg_dir, case)
        d = run_warm_child(p, a.config, case, env, 1, True)
        print(f"\ncProfile of one in-process repair ({d['b_inprocess_s']:.3f}s under the profiler):\n"
              + d["profile"])
        r["profile"] = d["profile"]
    sync(p.pristine, p.pre, p.base)
    shutil.rmtree(p.raw / ".dataguard", ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
