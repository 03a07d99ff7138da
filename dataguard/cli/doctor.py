"""`dataguard doctor`: the environment nnU-Net runs in, and the memory a run will need."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..findings import Severity
from ..fsio import human_size
from .common import ExitCode, UsageError, add_engine_args, console, note, shown, workspace
from .progress import CountProgress

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
  dataguard doctor -d 1 -c 3d_lowres --throughput
                      why an epoch is slow: nnU-Net's trainer timed three ways
                      (full step, no data loading, data loader alone), the
                      bound, the evidence, the epoch and run it predicts (DG908)
  nnUNet_n_proc_DA=0 dataguard doctor -d 1 -c 2d --throughput --device cpu
                      the same with augmentation in the training process

--throughput takes 1-3 minutes (it starts nnU-Net's trainer and its
augmentation workers as nnUNetv2_train would; nothing is written into the
dataset). Predict with the length you will train: --iterations-per-epoch,
--val-iterations, --epochs (nnU-Net's defaults: 250, 50, 1000).

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
    g = p.add_argument_group("throughput (needs -d and --config; imports torch in a child process)")
    g.add_argument("--throughput", action="store_true",
                   help="time the configuration's training step three ways and say what bounds the epoch")
    g.add_argument("--trainer", default="nnUNetTrainer", metavar="BASE",
                   help="nnU-Net trainer class to time (default nnUNetTrainer), found as nnUNetv2_train -tr finds it")
    g.add_argument("--steps", type=int, default=20, metavar="N", help="iterations timed per way (default 20)")
    g.add_argument("--iterations-per-epoch", type=int, metavar="N", help="predict epochs of N steps (default 250)")
    g.add_argument("--val-iterations", type=int, metavar="N", help="... and N validation batches (default 50)")
    g.add_argument("--epochs", type=int, metavar="N", help="predict a run of N epochs (default 1000)")
    add_engine_args(p)             # the one spine: -d finds the dataset the way every command does
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    if args.config and not args.dataset:
        raise_usage("--config needs -d/--dataset")
    ws = workspace(args, [args.dataset] if args.dataset else None)
    if args.throughput and not args.config:
        raise_usage("--throughput needs -d/--dataset and --config")
    if args.steps < 2:
        raise_usage("--steps must be at least 2")
    rep = ws.doctor(args.config, plans=args.plans, images=args.images, device=args.device)
    tp = None
    if args.throughput:
        device = args.device or ("cuda" if rep.devices.gpus else "cpu")
        with CountProgress() as bar:
            tp = ws.dataset(args.dataset).train.throughput(
                args.config, plans=args.plans, device=device, steps=args.steps, trainer=args.trainer,
                iterations_per_epoch=args.iterations_per_epoch, val_iterations=args.val_iterations,
                epochs=args.epochs, on_progress=lambda phase, done, total: bar.event("timing nnU-Net's trainer",
                                                                                     done, total))
        rep.findings += tp.findings
    if args.format == "json":
        d = rep.to_dict()
        if tp is not None:
            d["throughput"] = tp.to_dict()
        json.dump(d, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(rep)
        if tp is not None:
            render_throughput(tp)
    n_err = len(rep.errors)
    note(f"doctor: {len(rep.findings)} finding(s), {n_err} error(s), {rep.seconds:.2f} s"
         + (f" + throughput {tp.seconds:.0f} s" if tp is not None else ""))
    return ExitCode.FINDINGS if n_err else ExitCode.CLEAN


def render_throughput(tp) -> None:
    """The three rates, the bound and its evidence, the predicted epoch and run, what to do."""
    from rich.table import Table

    out = console()
    out.print(f"[bold]throughput[/bold]: {shown(tp.dataset)} {shown(tp.configuration)} on {tp.device}, "
              f"nnUNet_n_proc_DA={tp.da_workers}" + (f", {shown(tp.trainer)}" if tp.trainer != "nnUNetTrainer" else ""))
    t = Table(header_style="bold", show_edge=False)
    t.add_column("way")
    t.add_column("iterations/s", justify="right")
    t.add_column("s/iteration", justify="right")
    for name, rate in (("full step", tp.full_per_s), ("no data loading", tp.compute_per_s),
                       ("data loader alone", tp.data_per_s)):
        t.add_row(name, f"{rate:.2f}", f"{1 / rate:.3f}" if rate else "-")
    out.print(t)
    out.print(f"bound by [bold]{tp.bound}[/bold]: " + "; ".join(shown(e) for e in tp.evidence))
    out.print(f"predicted epoch: {_duration(tp.epoch_seconds)} ({tp.iterations_per_epoch} iterations + "
              f"{tp.val_iterations} validation batches); {tp.epochs} epochs: {_duration(tp.run_seconds)}")
    for a in tp.advice:
        out.print(f"  [dim]->[/dim] {shown(a)}")


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


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
