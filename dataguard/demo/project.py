"""`dataguard demo`: a realistic nnU-Net project with the classic faults, then a scan.

Builds synthetic cardiac cases, preprocesses them with the real nnunetv2 (2d), makes a
legacy-layout copy (.npz + .pkl, as nnU-Net <= 2.5 wrote), injects the faults that
cost real teams days, and scans everything. Each injected fault must be found.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..workspace import Workspace
from .synthetic import write_raw_dataset

MARKER = ".dataguard-demo"
MODERN, LEGACY = (901, "DemoCardiac"), (902, "DemoCardiacLegacy")
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(32)


@dataclass(frozen=True)
class InjectedFault:
    code: str
    path: str        # as it appears in findings: raw/... or preprocessed/...
    dataset: str
    what: str


def _ds(idn: tuple[int, str]) -> str:
    return f"Dataset{idn[0]:03d}_{idn[1]}"


def build_demo(root: Path, n_cases: int = 10, log: Callable[[str], None] = print) -> list[InjectedFault]:
    """Build the demo tree under root and return the faults injected into it."""
    build_clean(root, n_cases, log)
    faults = _inject(root)
    (root / MARKER).write_text(json.dumps([f.__dict__ for f in faults], indent=1))
    return faults


def build_clean(root: Path, n_cases: int = 10, log: Callable[[str], None] = print) -> None:
    """Raw + real nnunetv2 2d preprocessing (b2nd) + a legacy .npz copy, all healthy."""
    raw_root, pre_root = root / "nnUNet_raw", root / "nnUNet_preprocessed"
    (root / "nnUNet_results").mkdir(parents=True, exist_ok=True)
    log(f"writing {n_cases} synthetic cardiac cases (myocardium, LV, RV) to {raw_root}")
    write_raw_dataset(raw_root, MODERN[0], MODERN[1], n_cases=n_cases)
    log("running nnUNetv2_plan_and_preprocess -c 2d (real nnunetv2, CPU) ...")
    Workspace(datasets=[]).train.plan_and_preprocess(raw_root.resolve(), pre_root.resolve(), MODERN[0], ("2d",))
    log("making a legacy-layout copy (.npz + .pkl, nnU-Net <= 2.5)")
    _legacy_copy(raw_root, pre_root)


def _legacy_copy(raw_root: Path, pre_root: Path) -> None:
    import blosc2
    import numpy as np

    src_raw, dst_raw = raw_root / _ds(MODERN), raw_root / _ds(LEGACY)
    shutil.copytree(src_raw, dst_raw)
    src, dst = pre_root / _ds(MODERN), pre_root / _ds(LEGACY)
    dst.mkdir(parents=True)
    for name in ("dataset.json", "dataset_fingerprint.json"):
        shutil.copy2(src / name, dst / name)
    plans = json.loads((src / "nnUNetPlans.json").read_text())
    plans["dataset_name"] = _ds(LEGACY)
    (dst / "nnUNetPlans.json").write_text(json.dumps(plans, indent=2))
    shutil.copytree(src / "gt_segmentations", dst / "gt_segmentations")
    cfg_src, cfg_dst = src / "nnUNetPlans_2d", dst / "nnUNetPlans_2d"
    cfg_dst.mkdir()
    for pkl in sorted(cfg_src.glob("*.pkl")):
        case = pkl.stem
        data = blosc2.open(str(cfg_src / f"{case}.b2nd"), mode="r")[...]
        seg = blosc2.open(str(cfg_src / f"{case}_seg.b2nd"), mode="r")[...].astype(np.int8)
        np.savez_compressed(cfg_dst / f"{case}.npz", data=data, seg=seg)
        shutil.copy2(pkl, cfg_dst / pkl.name)


def _corrupt_deflate(npz: Path) -> None:
    """Overwrite bytes inside data.npy's deflate stream, as a bad disk or copy would."""
    with zipfile.ZipFile(npz) as zf:
        zi = zf.getinfo("data.npy")
    with open(npz, "r+b") as f:
        f.seek(zi.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        start = zi.header_offset + 30 + name_len + extra_len
        f.seek(start + zi.compress_size // 2)
        f.write(bytes(range(7, 71)))


def _inject(root: Path) -> list[InjectedFault]:
    import numpy as np

    pre = root / "nnUNet_preprocessed"
    m, lg = _ds(MODERN), _ds(LEGACY)
    cfg_m, cfg_l = pre / m / "nnUNetPlans_2d", pre / lg / "nnUNetPlans_2d"
    faults = []

    def add(code, ds, rel, what):
        faults.append(InjectedFault(code, rel, ds, what))

    (cfg_m / "._heart_001.b2nd").write_bytes(APPLEDOUBLE)
    add("DG101", m, "preprocessed/nnUNetPlans_2d/._heart_001.b2nd", "macOS AppleDouble file")
    (cfg_m / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    add("DG102", m, "preprocessed/nnUNetPlans_2d/.DS_Store", ".DS_Store in a configuration folder")
    b2 = cfg_m / "heart_002.b2nd"
    b2.write_bytes(b2.read_bytes()[: b2.stat().st_size // 2])
    add("DG203", m, "preprocessed/nnUNetPlans_2d/heart_002.b2nd", "truncated .b2nd")
    (cfg_m / "heart_003.pkl").rename(root / "heart_003.pkl.removed-by-demo")
    add("DG206", m, "preprocessed/nnUNetPlans_2d/heart_003", "missing .pkl")
    (root / "nnUNet_raw" / m / "imagesTr" / "._heart_000_0000.nii.gz").write_bytes(APPLEDOUBLE)
    add("DG101", m, "raw/imagesTr/._heart_000_0000.nii.gz", "AppleDouble file next to raw images")

    _corrupt_deflate(cfg_l / "heart_004.npz")
    add("DG201", lg, "preprocessed/nnUNetPlans_2d/heart_004.npz", "zlib-corrupt .npz")
    (cfg_l / "._heart_005.npz").write_bytes(APPLEDOUBLE)
    add("DG101", lg, "preprocessed/nnUNetPlans_2d/._heart_005.npz", "AppleDouble file among .npz cases")
    # an old unpacked .npy pair left behind after the .npz was rewritten
    with np.load(cfg_l / "heart_006.npz", allow_pickle=False) as z:
        np.save(cfg_l / "heart_006.npy", z["data"])
        np.save(cfg_l / "heart_006_seg.npy", z["seg"])
    old = (cfg_l / "heart_006.npz").stat().st_mtime_ns - 3_600_000_000_000
    for n in ("heart_006.npy", "heart_006_seg.npy"):
        os.utime(cfg_l / n, ns=(old, old))
    add("DG206", lg, "preprocessed/nnUNetPlans_2d/heart_006", "stale unpacked .npy next to a newer .npz")
    return faults


def run_demo(root: Path, n_cases: int = 10, force: bool = False, log: Callable[[str], None] = print,
             progress=None):
    """Build (unless already built) and scan the demo; returns the ScanResult, with
    `result.demo_missed`: the injected faults the scan did not find that no repair explains
    (a fault missed on a fresh build is a dataguard bug: the CLI exits 1)."""
    import textwrap

    root = Path(root)
    marker = root / MARKER
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise UsageError(f"{root} exists and is not a dataguard demo folder; choose another DIR")
    if marker.exists() and force:
        shutil.rmtree(root)   # only ever a folder this command made (it holds the marker)
    reused = marker.exists()
    if reused:
        faults = [InjectedFault(**f) for f in json.loads(marker.read_text())]
        log(f"reusing the demo in {root} (--force rebuilds it)")
    else:
        faults = build_demo(root, n_cases, log)
    log("scanning ...")
    ws = Workspace([str(root)])              # the per-user state folder, as every later command uses
    with progress or contextlib.nullcontext():
        result = ws.scan(full=True, on_progress=progress.update if progress else None)
    missed = [f for f in faults if not any(x.code == f.code and x.path == f.path for x in result.findings)]
    repaired = _repaired(ws, missed) if reused and missed else []
    unexplained = [f for f in missed if f not in repaired]
    result.demo_missed = unexplained
    log(f"injected {len(faults)} faults; found {len(faults) - len(missed)} of them")
    if repaired:
        log(textwrap.fill(
            f"{len(repaired)} of them were repaired since the demo was built: `dataguard quarantine list "
            f"{root}` shows what the repair moved, `dataguard restore {root}` puts the faults back, "
            f"`dataguard demo {root} --force` builds a fresh demo", width=78, break_long_words=False,
            break_on_hyphens=False))
    if unexplained:
        log("MISSED (a dataguard bug: please report it):")
        for f in unexplained:
            log(f"  {f.code} {f.dataset}\n    {f.path}")
    log("next:")
    for command, what in ((f"dataguard repair {root} --dry-run", "how each would be fixed"),
                          (f"dataguard repair {root} --yes", f"fix them (dataguard restore {root} undoes it)"),
                          (f"dataguard report {root} -o {root / 'report.html'}", "all of it on one HTML page"),
                          (f"dataguard tui {root}", "browse it in the terminal")):
        log(f"  {command}\n      {what}")
    return result


def _repaired(ws: Workspace, missed: list[InjectedFault]) -> list[InjectedFault]:
    """The missed faults whose files a repair of this demo moved into quarantine."""
    try:
        held = ws.quarantine()
    except Exception:  # noqa: BLE001 - the demo's summary must not fail on a quarantine it cannot read
        return []

    def moved(f: InjectedFault) -> bool:
        return any(h.dataset == f.dataset and (h.path == f.path or h.path.startswith((f.path + ".", f.path + "_")))
                   for h in held)

    return [f for f in missed if moved(f)]
