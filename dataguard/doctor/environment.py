"""nnU-Net's environment variables as nnU-Net reads them (DG902) and dataset ids that two
datasets share (DG903)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..engine.layout import DATASET_DIR, ENV_PRE, ENV_RAW, ENV_RES, nnunet_env_problem
from ..findings import Finding, Severity, finding

VARS = (ENV_RAW, ENV_PRE, ENV_RES)
WRITES = {ENV_PRE: True, ENV_RES: True, ENV_RAW: False}     # where nnU-Net writes
HELP = {ENV_RAW: "the folder holding your DatasetXXX_Name raw folders",
        ENV_PRE: "a folder you can write, where nnUNetv2_preprocess puts its output",
        ENV_RES: "a folder you can write, where nnU-Net puts trained models"}
OTHER_VARS = ("nnUNet_n_proc_DA", "nnUNet_def_n_proc", "nnUNet_compile", "nnUNet_npp", "nnUNet_nps",
              "nnUNet_extTrainer", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


@dataclass
class EnvVar:
    name: str
    value: str | None
    problem: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "problem": self.problem}


def read_env() -> list[EnvVar]:
    return [EnvVar(v, os.environ.get(v)) for v in (*VARS, *OTHER_VARS)]


def check_env(env: list[EnvVar] | None = None) -> list[Finding]:
    """DG902 per nnU-Net folder variable nnU-Net could not use (unset, not a folder, quoted, a ~,
    not writable where nnU-Net writes), and for two of them nested inside each other."""
    env = read_env() if env is None else env
    out = []
    for ev in env:
        if ev.name not in VARS:
            continue
        problem = nnunet_env_problem(ev.name)
        if problem is None and WRITES[ev.name] and not os.access(ev.value, os.W_OK | os.X_OK):
            problem = f"{ev.name}={ev.value} is not writable, and nnU-Net writes there"
        if problem is None and _quoted(ev.value):
            problem = f"{ev.name}={ev.value}: the quotes are part of the value (a Windows `set X=\"...\"`)"
        ev.problem = problem
        if problem:
            out.append(finding("DG902", ev.name, problem,
                               help=f"nnU-Net reads {ev.name} at import: export {ev.name}=<{HELP[ev.name]}>"))
    paths = {ev.name: Path(os.path.abspath(ev.value)) for ev in env
             if ev.name in VARS and ev.value and not ev.problem}
    names = sorted(paths)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa, pb = paths[a], paths[b]
            if pa == pb:
                out.append(finding("DG902", a, f"{a} and {b} are the same folder ({pa}): nnU-Net's raw, "
                                   "preprocessed and results data would mix", help="give each its own folder"))
            elif pa in pb.parents or pb in pa.parents:
                inner, outer = (a, b) if pb in pa.parents else (b, a)
                out.append(finding("DG902", inner, f"{inner}={paths[inner]} is inside {outer}={paths[outer]}: "
                                   f"nnU-Net and dataguard see {inner}'s folder as a dataset of {outer}",
                                   help="use sibling folders (nnUNet_raw, nnUNet_preprocessed, nnUNet_results)"))
    return out


def _quoted(value: str | None) -> bool:
    return bool(value) and (value[:1] in "'\"" or value[-1:] in "'\"")


def duplicate_ids(env: list[EnvVar] | None = None) -> list[Finding]:
    """DG903 for each id that names more than one dataset across the three roots (nnU-Net's
    `-d 1` then picks neither: maybe_convert_to_dataset_name refuses)."""
    env = read_env() if env is None else env
    by_id: dict[int, dict[str, list[str]]] = {}
    for ev in env:
        if ev.name not in VARS or not ev.value or not os.path.isdir(ev.value):
            continue
        try:
            children = sorted(os.scandir(ev.value), key=lambda e: e.name)
        except OSError:
            continue
        for c in children:
            m = DATASET_DIR.match(c.name)
            if m and c.is_dir():
                by_id.setdefault(int(m.group(1)), {}).setdefault(c.name, []).append(ev.name)
    out = []
    for ident, names in sorted(by_id.items()):
        if len(names) < 2:
            continue
        where = "; ".join(f"{n} in {', '.join(v)}" for n, v in sorted(names.items()))
        out.append(finding("DG903", f"Dataset{ident:03d}", f"id {ident} names {len(names)} datasets ({where}): "
                           f"`-d {ident}` is ambiguous to nnU-Net", severity=Severity.ERROR,
                           help=f"rename all but one (a free id, e.g. Dataset{_free_id(by_id):03d}_...)"))
    return out


def _free_id(by_id: dict) -> int:
    return next(i for i in range(1, 1000) if i not in by_id)


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "t", "yes", "on")


def int_env(name: str) -> int | None:
    v = os.environ.get(name, "").strip()
    return int(v) if re.fullmatch(r"\d+", v) else None
