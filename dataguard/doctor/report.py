"""One doctor report: versions, devices, nnU-Net's env vars, memory and (for a dataset and a
configuration) the resource model, with DG901-DG907 findings. Also the checks the training and
submission gates run (`training_check`, `predict_workers`)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..checks.metadata import METADATA_LIMIT
from ..findings import Finding, Severity, finding
from ..fsio import human_size, read_json
from . import resources
from .devices import Devices, check_devices, read_devices
from .environment import EnvVar, check_env, duplicate_ids, int_env, read_env
from .memory import DOCKER_SHM_DEFAULT, Memory, read_memory
from .representation import representation_findings
from .versions import check_versions, read_versions

GB = 1 << 30
DISK_ERROR = 2 * GB          # less free than this where nnU-Net writes: DG907 error
DISK_WARN = 10 * GB
CLOSE = 0.8                  # an estimate above this share of what is available: a warning
NNUNET_PREPROCESS_NP = {"2d": 8, "3d_fullres": 4, "3d_lowres": 8}     # nnUNetv2_preprocess's default -np
NNUNET_DA_DEFAULT = 12       # get_allowed_n_proc_DA's default, at most the CPU count


@dataclass
class DoctorReport:
    versions: dict
    devices: Devices
    env: list[EnvVar]
    memory: Memory
    findings: list[Finding] = field(default_factory=list)
    resources: dict = field(default_factory=dict)      # "preprocess", "predict", "training": estimates
    dataset: str | None = None
    configuration: str | None = None
    seconds: float = 0.0

    @property
    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity >= Severity.ERROR]

    def to_dict(self) -> dict:
        d = {"versions": self.versions, "devices": self.devices.to_dict(),
             "environment": {e.name: e.to_dict() for e in self.env}, "memory": self.memory.to_dict(),
             "findings": [f.to_dict() for f in self.findings], "seconds": round(self.seconds, 3)}
        if self.resources:
            d["dataset"], d["configuration"] = self.dataset, self.configuration
            d["resources"] = {k: v.to_dict() for k, v in self.resources.items()}
        return d


def run_doctor(preprocessed: Path | None = None, configuration: str | None = None, *, plans: str = "nnUNetPlans",
               images: Path | None = None, device: str | None = None) -> DoctorReport:
    """The whole report. `preprocessed` (a DatasetXXX_Name folder under nnUNet_preprocessed) and
    `configuration` add the resource model; `images` (a folder of test images) sizes prediction on
    them instead of on the training cases."""
    t0 = time.monotonic()
    versions = read_versions()
    devices = read_devices()
    env = read_env()
    mem = read_memory()
    rep = DoctorReport(versions, devices, env, mem)
    rep.findings += check_versions(versions)
    rep.findings += check_devices(devices, device)
    rep.findings += check_env(env)
    rep.findings += duplicate_ids(env)
    rep.findings += check_memory(mem)
    if preprocessed is not None and configuration:
        rep.dataset, rep.configuration = Path(preprocessed).name, configuration
        rep.resources, found = estimate_all(Path(preprocessed), configuration, mem, plans=plans, images=images)
        rep.findings += found
        rep.findings += representation_findings(Path(preprocessed), configuration)     # DG405
    rep.seconds = time.monotonic() - t0
    return rep


def check_memory(mem: Memory) -> list[Finding]:
    """Without a dataset: Docker's 64 MB /dev/shm with data-loading workers (DG905), little free
    disk where nnU-Net writes (DG907), no RAM figure at all."""
    out = []
    n_da = da_workers(mem.cpus)
    if mem.shm_total is not None and mem.shm_total <= DOCKER_SHM_DEFAULT and n_da > 0:
        where = f" in this {mem.container} container" if mem.container else ""
        out.append(finding("DG905", "/dev/shm", f"/dev/shm is {human_size(mem.shm_total)}{where}: nnU-Net's {n_da} "
                           "data-augmentation workers pass batches through it and die (\"Some background workers "
                           "are no longer alive\")",
                           help="docker run --shm-size=8g (or --ipc=host), or export nnUNet_n_proc_DA=0"))
    for var, d in mem.disk.items():
        if d["free"] < DISK_ERROR:
            sev = Severity.ERROR
        elif d["free"] < DISK_WARN:
            sev = Severity.WARNING
        else:
            continue
        out.append(finding("DG907", var, f"{human_size(d['free'])} free under {d['path']} ({var}), where nnU-Net "
                           "writes preprocessed data, checkpoints or predictions", severity=sev,
                           help=f"free space there, or point {var} at a larger disk"))
    return out


def da_workers(cpus: int) -> int:
    """nnU-Net's data-augmentation workers: nnUNet_n_proc_DA, else its default, at most the CPUs."""
    n = int_env("nnUNet_n_proc_DA")
    return n if n is not None else min(NNUNET_DA_DEFAULT, cpus)


def _channels(dataset_json: dict) -> int:
    return max(1, len(dataset_json.get("channel_names") or dataset_json.get("modality") or {"0": None}))


def estimate_all(preprocessed: Path, configuration: str, mem: Memory, *, plans: str = "nnUNetPlans",
                 images: Path | None = None) -> tuple[dict, list[Finding]]:
    """The preprocessing, prediction and training estimates of one configuration, and DG904/DG905."""
    plans_file, dj_file = preprocessed / f"{plans}.json", preprocessed / "dataset.json"
    avail = mem.available or 0
    out: dict = {}
    found: list[Finding] = []
    try:
        plans_d = read_json(plans_file, METADATA_LIMIT)
        dj = read_json(dj_file, METADATA_LIMIT)
        resources.config_of(plans_d, configuration)
    except (OSError, ValueError, KeyError) as e:
        found.append(finding("DG904", str(plans_file), f"no resource estimate: {e}", severity=Severity.WARNING,
                             help="run nnUNetv2_plan_and_preprocess for this dataset first"))
        return out, found
    try:
        cases = resources.fingerprint_cases(preprocessed)
    except (OSError, ValueError):
        cases = []
    pre = resources.preprocess_estimate(preprocessed, configuration, plans, cases=cases, available=avail, cpus=mem.cpus)
    out["preprocess"] = pre
    default_np = NNUNET_PREPROCESS_NP.get(configuration, 4)
    ram_np = resources.fitting_workers(avail, pre.main_bytes, pre.peak_bytes_per_worker, 1 << 30)
    if cases and ram_np == 0:
        found.append(finding("DG904", "preprocess", f"preprocessing {configuration}: one worker peaks at about "
                             f"{human_size(pre.peak_bytes_per_worker)} (case {pre.largest_case}, {_shape(pre.largest_shape)} "
                             f"-> {_shape(pre.target_shape)}), more than the {human_size(avail)} available",
                             help="free memory or preprocess on a larger machine; -np 1 does not fit"))
    elif cases and ram_np < default_np:          # RAM, not the CPUs or the cases, is what limits -np
        found.append(finding("DG904", "preprocess", f"nnUNetv2_preprocess -c {configuration} runs {default_np} "
                             f"workers by default, about {human_size(pre.main_bytes + default_np * pre.peak_bytes_per_worker)}"
                             f"; {human_size(avail)} is available", severity=Severity.WARNING,
                             help=f"nnUNetv2_preprocess -d {_id(preprocessed)} -c {configuration} "
                                  f"-np {min(ram_np, pre.recommended_np or ram_np)}"))
    test = resources.image_infos(images, dj.get("file_ending", ".nii.gz")) if images is not None else cases
    pred = resources.predict_estimate(plans_file, dj_file, configuration, test, available=avail, cpus=mem.cpus)
    out["predict"] = pred
    if test and pred.recommended_nps == 0:
        found.append(finding("DG904", "predict", f"predicting {configuration}: one case needs about "
                             f"{human_size(pred.peak_bytes_per_case)} (export of {pred.classes} classes: "
                             f"{human_size(pred.export_bytes)}), more than the {human_size(avail)} available",
                             help="predict on a machine with more RAM, or fewer classes per model"))
    for case, factor in pred.growth:
        found.append(finding("DG904", case, f"{case}: resampling to the training spacing makes the array "
                             f"{factor:.1f}x larger", severity=Severity.WARNING,
                             help="expect that much more memory and time for this case; check its spacing"))
    out["validation"] = resources.validation_estimate(pred.export_bytes, mem.cpus, avail,
                                                      int_env("nnUNet_def_n_proc"))
    n_da = da_workers(mem.cpus)
    tr = resources.training_estimate(plans_d, configuration, _channels(dj), n_da)
    out["training"] = tr
    found += training_findings(tr, mem)
    return out, found


def training_findings(tr, mem: Memory) -> list[Finding]:
    """DG904 when the augmentation workers do not fit in RAM, DG905 when their batches do not fit
    in /dev/shm; each names the nnUNet_n_proc_DA that fits."""
    out = []
    if tr.n_proc_da <= 0:
        return out
    avail = mem.available or 0
    fit_ram = resources.fitting_workers(avail, resources.BASE_PREDICT_MAIN, tr.worker_bytes, tr.n_proc_da)
    if fit_ram < tr.n_proc_da:
        out.append(finding("DG904", "nnUNet_n_proc_DA", f"{tr.n_proc_da} data-augmentation workers need about "
                           f"{human_size(tr.workers_bytes)}; {human_size(avail)} is available",
                           severity=Severity.ERROR if fit_ram == 0 else Severity.WARNING,
                           help=f"export nnUNet_n_proc_DA={fit_ram}"))
    if mem.shm_total is not None and tr.shm_bytes > mem.shm_total:
        per = max(tr.batch_bytes, 1)
        fit = 0
        while fit < tr.n_proc_da and (max(6, (fit + 1) // 2) + fit + 1) * per <= mem.shm_total:
            fit += 1
        out.append(finding("DG905", "/dev/shm", f"{tr.n_proc_da} data-augmentation workers keep about "
                           f"{human_size(tr.shm_bytes)} of batches in /dev/shm, which is {human_size(mem.shm_total)}"
                           + (f" ({mem.container} container)" if mem.container else ""),
                           help=f"docker run --shm-size={_shm_advice(tr.shm_bytes)} (or --ipc=host), or export "
                                f"nnUNet_n_proc_DA={fit}"))
    return out


def training_check(preprocessed: Path, configuration: str, plans: str = "nnUNetPlans") -> list[Finding]:
    """What `dataguard train`'s gate asks: do this configuration's augmentation workers fit?"""
    mem = read_memory(disk_vars=())
    try:
        plans_d = read_json(preprocessed / f"{plans}.json", METADATA_LIMIT)
        dj = read_json(preprocessed / "dataset.json", METADATA_LIMIT)
        tr = resources.training_estimate(plans_d, configuration, _channels(dj), da_workers(mem.cpus))
    except (OSError, ValueError, KeyError):
        return []
    return training_findings(tr, mem)


@dataclass
class Workers:
    npp: int
    nps: int
    why: str
    estimate: object | None = None


def predict_workers(plans_file: Path, dataset_json_file: Path, configuration: str, images_dir: Path,
                    device: str = "cuda") -> Workers:
    """The -npp/-nps for nnUNetv2_predict: nnUNet_npp/nnUNet_nps when set, else what fits in RAM
    (at most 1 each on the CPU, where the sliding window is the bottleneck anyway)."""
    env_npp, env_nps = int_env("nnUNet_npp"), int_env("nnUNet_nps")
    if env_npp and env_nps:
        return Workers(env_npp, env_nps, "from nnUNet_npp / nnUNet_nps")
    mem = read_memory(disk_vars=())
    try:
        dj = read_json(dataset_json_file, METADATA_LIMIT)
        infos = resources.image_infos(images_dir, dj.get("file_ending", ".nii.gz"))
        est = resources.predict_estimate(plans_file, dataset_json_file, configuration, infos,
                                         available=mem.available or 0, cpus=mem.cpus)
    except (OSError, ValueError, KeyError):
        return Workers(env_npp or (1 if device == "cpu" else 3), env_nps or (1 if device == "cpu" else 3),
                       "no estimate (plans or images unreadable): nnU-Net's defaults")
    npp, nps = est.recommended_npp or 1, est.recommended_nps or 1
    if device == "cpu":
        npp, nps = min(npp, 1), min(nps, 1)
    npp, nps = env_npp or npp, env_nps or nps
    fits = "does not fit even with 1 each" if not est.recommended_nps else "fits"
    why = (f"export of {est.classes} classes peaks at about {human_size(est.export_bytes)} per case; "
           f"{human_size(est.available_bytes or 0)} available, {fits}")
    return Workers(npp, nps, why, est)


def _id(preprocessed: Path) -> str:
    name = Path(preprocessed).name
    return str(int(name[7:10])) if name.startswith("Dataset") and name[7:10].isdigit() else name


def _shape(s) -> str:
    return "x".join(str(int(v)) for v in s) or "?"


def _shm_advice(need: int) -> str:
    g = max(1, -(-need * 2 // GB))
    return f"{g}g"


def cpu_count() -> int:
    return os.cpu_count() or 1
