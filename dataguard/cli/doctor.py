"""`dataguard doctor`: the environment nnU-Net runs in, and the memory a run will need."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..findings import Severity
from ..fsio import human_size
from .common import ExitCode, UsageError, add_engine_args, console, note, shown, workspace

EPILOG = """\
what it checks (finding codes DG901-DG907, `dataguard explain DG904`):
  versions   Python, nnunetv2, torch + torchvision (a matching pair?), blosc2, numpy,
             SimpleITK, acvl-utils, batchgenerators(v2); known-bad pairs (DG901)
  devices    NVIDIA GPUs (nvidia-smi, without importing torch), torch's CUDA build,
             nnUNet_compile where triton cannot compile (DG906)
  nnU-Net    nnUNet_raw / _preprocessed / _results: set, existing, writable, not
             quoted, not nested (DG902); two datasets with one id (DG903)
  memory     RAM, swap, container limit, /dev/shm (DG905), free disk (DG907)
  resources  with -d and --config: peak RAM of one preprocessing worker and the -np
             that fits, of training's augmentation workers, of predicting one case
             and the -npp / -nps that fit (DG904)

examples:
  dataguard doctor                                  the environment only
  dataguard doctor -d 1 --config 3d_fullres         + the -np for nnUNetv2_preprocess
  dataguard doctor -d 1 --config 3d_fullres --images imagesTs
                                                    size prediction on the test images
  dataguard doctor --format json > doctor.json

exit codes: 0 no errors, 1 an error finding, 2 usage error
"""


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check versions, devices, nnU-Net env vars, RAM and /dev/shm; "
                                      "the -np / -npp / -nps that fit",
                       description="Check the environment nnU-Net runs in before a run dies in it: package "
                                   "versions, GPUs, nnU-Net's environment variables, RAM, shared memory and "
                                   "disk. With a dataset and a configuration, estimate the peak memory of "
                                   "preprocessing, training's data loaders and prediction, and name the worker "
                                   "counts that fit. Takes under 2 s; imports no torch.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", metavar="ID", default=None,
                   help="dataset id or name (1, Dataset001_Heart), found via nnUNet_preprocessed")
    p.add_argument("-c", "--config", metavar="C", default=None,
                   help="configuration to size (2d, 3d_fullres, ...); needs -d")
    p.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="test images to size prediction on (default: the training cases' shapes)")
    p.add_argument("--device", choices=("cuda", "cpu", "mps"), default=None,
                   help="the device you will use: DG906 when it is not here")
    p.add_argument("--format", choices=("table", "json"), default="table")
    add_engine_args(p)             # the one spine: -d finds the dataset the way every command does
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    if args.config and not args.dataset:
        raise_usage("--config needs -d/--dataset")
    ws = workspace(args, [args.dataset] if args.dataset else None)
    rep = ws.doctor(args.config, plans=args.plans, images=args.images, device=args.device)
    if args.format == "json":
        json.dump(rep.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(rep)
    n_err = len(rep.errors)
    note(f"doctor: {len(rep.findings)} finding(s), {n_err} error(s), {rep.seconds:.2f} s")
    return ExitCode.FINDINGS if n_err else ExitCode.CLEAN


def raise_usage(msg: str):
    raise UsageError(msg)


STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


def render(rep) -> None:
    from rich.table import Table

    out = console()
    t = Table(title="versions", title_justify="left", header_style="bold", show_edge=False)
    t.add_column("package")
    t.add_column("version")
    for k, v in rep.versions.items():
        t.add_row(k, v or "[dim]not installed[/dim]")
    out.print(t)

    d, m = rep.devices, rep.memory
    t = Table(title="devices and memory", title_justify="left", header_style="bold", show_edge=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
    for g in d.gpus:
        t.add_row("GPU", shown(f"{g.name}, {human_size(g.memory)}, compute capability {g.compute_capability or '?'}"))
    if not d.gpus:
        t.add_row("GPU", "none found" + (f" ({d.probe})" if d.probe != "none" else ""))
    t.add_row("torch build", ("CUDA " + d.torch_cuda) if d.torch_cuda else ("CPU only" if d.torch_installed
                                                                              else "torch not installed"))
    if d.mps:
        t.add_row("MPS", "Apple silicon")
    t.add_row("RAM", f"{human_size(m.available)} available of {human_size(m.total)}"
              + (f" (container limit {human_size(m.cgroup_limit)})" if m.cgroup_limit else ""))
    t.add_row("swap", f"{human_size(m.swap_free)} free of {human_size(m.swap_total)}")
    t.add_row("/dev/shm", f"{human_size(m.shm_free)} free of {human_size(m.shm_total)}"
              + (f" ({m.container} container)" if m.container else ""))
    t.add_row("CPUs", str(m.cpus))
    for var, disk in m.disk.items():
        t.add_row(f"disk ({var})", shown(f"{human_size(disk['free'])} free under {disk['path']}"))
    out.print(t)

    t = Table(title="nnU-Net environment", title_justify="left", header_style="bold", show_edge=False)
    t.add_column("variable")
    t.add_column("value", overflow="fold")
    for e in rep.env:
        if e.value is None and not e.name.startswith("nnUNet_") or (e.value is None and e.name not in
                                                                     ("nnUNet_raw", "nnUNet_preprocessed",
                                                                      "nnUNet_results")):
            continue
        t.add_row(e.name, shown(e.value) if e.value is not None else "[red](unset)[/red]")
    out.print(t)

    if rep.resources:
        _render_resources(out, rep)
    if rep.findings:
        t = Table(title="findings", title_justify="left", header_style="bold", show_edge=False)
        t.add_column("code")
        t.add_column("sev")
        t.add_column("what", overflow="fold")
        for f in rep.findings:
            text = shown(f.message) + (f"\n[dim]help: {shown(f.help)}[/dim]" if f.help else "")
            t.add_row(f.code, f"[{STYLE[f.severity]}]{f.severity}[/]", text)
        out.print(t)
    else:
        out.print("no findings: the environment looks fit for nnU-Net")


def _render_resources(out, rep) -> None:
    from rich.table import Table

    r = rep.resources
    t = Table(title=f"resources: {shown(rep.dataset)} {shown(rep.configuration)} (estimates, docs/resources.md)",
              title_justify="left", header_style="bold", show_edge=False)
    t.add_column("step")
    t.add_column("peak RAM", justify="right")
    t.add_column("setting that fits", overflow="fold")
    pre = r.get("preprocess")
    if pre:
        t.add_row("preprocess, per worker", human_size(pre.peak_bytes_per_worker),
                  f"nnUNetv2_preprocess -np {pre.recommended_np}" if pre.recommended_np else "[red]-np 1 does not fit[/red]")
    tr = r.get("training")
    if tr:
        t.add_row(f"training, {tr.n_proc_da} DA workers", human_size(tr.workers_bytes),
                  f"/dev/shm need about {human_size(tr.shm_bytes)}")
    p = r.get("predict")
    if p:
        t.add_row("predict, one case", human_size(p.peak_bytes_per_case),
                  f"-npp {p.recommended_npp} -nps {p.recommended_nps}" if p.recommended_nps
                  else "[red]does not fit[/red]")
        t.add_row("  of which export", human_size(p.export_bytes), f"{p.classes} classes, original spacing")
    v = r.get("validation")
    if v:
        t.add_row(f"final validation, {v.workers} workers", human_size(v.workers_bytes),
                  f"nnUNet_def_n_proc={v.recommended}" + ("" if v.set_by_env else " (dataguard train sets it)"))
    out.print(t)
