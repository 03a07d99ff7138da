"""GPUs without importing torch (`import torch` alone takes 1-6 s): nvidia-smi when present,
else /proc/driver/nvidia; torch's build (CUDA or CPU-only) from its version.py, read as text.
`nnUNet_compile` on a GPU triton cannot compile for, or without a C compiler: DG906."""
from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..findings import Finding, finding
from .environment import truthy

TRITON_MIN_CC = (7, 0)          # triton (torch.compile's GPU backend) needs compute capability 7.0+
SMI_TIMEOUT = 1.5


@dataclass
class Gpu:
    name: str
    memory: int | None = None           # bytes
    compute_capability: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Devices:
    gpus: list[Gpu] = field(default_factory=list)
    torch_cuda: str | None = None       # the CUDA version torch was built for; None: a CPU-only build
    torch_installed: bool = False
    mps: bool = False                   # an Apple-silicon Mac (torch's MPS backend)
    probe: str = "none"                 # how the GPUs were found: nvidia-smi, /proc/driver/nvidia, none

    @property
    def cuda(self) -> bool:
        """A CUDA GPU that this torch can use."""
        return bool(self.gpus) and self.torch_cuda is not None

    def to_dict(self) -> dict:
        return {"gpus": [g.to_dict() for g in self.gpus], "cuda": self.cuda, "torch_cuda": self.torch_cuda,
                "mps": self.mps, "probe": self.probe}


def torch_build() -> tuple[bool, str | None]:
    """(installed, cuda version) from torch/version.py, without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return False, None
    if spec is None or not spec.submodule_search_locations:
        return False, None
    for loc in spec.submodule_search_locations:
        try:
            text = (Path(loc) / "version.py").read_text("utf-8")
        except OSError:
            continue
        m = re.search(r"^cuda(?:\s*:\s*[^=]+)?\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        return True, m.group(1) if m else None
    return True, None


def nvidia_smi() -> list[Gpu] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=SMI_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    gpus = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not parts or not parts[0]:
            continue
        mem = int(float(parts[1])) << 20 if len(parts) > 1 and re.fullmatch(r"[\d.]+", parts[1]) else None
        cc = parts[2] if len(parts) > 2 and re.fullmatch(r"\d+\.\d+", parts[2]) else None
        gpus.append(Gpu(parts[0], mem, cc))
    return gpus


def proc_nvidia(root: str = "/proc/driver/nvidia/gpus") -> list[Gpu] | None:
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return None
    gpus = []
    for e in entries:
        try:
            text = (Path(root) / e / "information").read_text()
        except OSError:
            continue
        m = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        gpus.append(Gpu(m.group(1).strip() if m else e))
    return gpus


def read_devices() -> Devices:
    installed, cuda = torch_build()
    d = Devices(torch_installed=installed, torch_cuda=cuda,
                mps=platform.system() == "Darwin" and platform.machine() == "arm64")
    for probe, fn in (("nvidia-smi", nvidia_smi), ("/proc/driver/nvidia", proc_nvidia)):
        got = fn()
        if got:
            d.gpus, d.probe = got, probe
            break
    return d


def _cc(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    a, _, b = text.partition(".")
    return (int(a), int(b or 0)) if a.isdigit() and (b or "0").isdigit() else None


def check_devices(d: Devices, device: str | None = None, compile_env: str | None = None) -> list[Finding]:
    """DG906: the requested device is not here; nnUNet_compile on where it cannot work."""
    out = []
    if device == "cuda" and not d.cuda:
        why = ("torch is a CPU-only build" if d.gpus and d.torch_installed else
               "no NVIDIA GPU found" + (" (no nvidia-smi, no /proc/driver/nvidia)" if d.probe == "none" else ""))
        out.append(finding("DG906", "device", f"device cuda requested, but {why}",
                           help="use -device cpu, or install a CUDA build of torch on a machine with a GPU"))
    if device == "mps" and not d.mps:
        out.append(finding("DG906", "device", "device mps requested, but this is not an Apple-silicon Mac",
                           help="use -device cpu"))
    compile_env = os.environ.get("nnUNet_compile") if compile_env is None else compile_env
    # nnU-Net compiles by default on CUDA (and never on CPU or MPS): only a GPU run can fail here
    if d.cuda and (compile_env is None or truthy(compile_env)):
        old = [g for g in d.gpus if (_cc(g.compute_capability) or TRITON_MIN_CC) < TRITON_MIN_CC]
        if old:
            g = old[0]
            out.append(finding("DG906", "nnUNet_compile",
                               f"nnUNet_compile is {'on' if compile_env else 'on by default'}, but {g.name} has compute "
                               f"capability {g.compute_capability}: triton compiles for 7.0 and newer, so "
                               "torch.compile fails at the first epoch (MIC-DKFZ/nnUNet#2349)",
                               help="export nnUNet_compile=f"))
        elif not (shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")):
            out.append(finding("DG906", "nnUNet_compile",
                               "nnUNet_compile is on, but no C compiler (gcc, cc, clang) is on PATH: triton "
                               "needs one to build its kernels",
                               help="install gcc, or export nnUNet_compile=f"))
    return out
