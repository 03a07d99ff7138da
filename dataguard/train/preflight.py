"""The pre-flight gate: every reason a training run would fail or mislead, before it starts.

It runs the engine (an incremental `Workspace.scan` of the raw dataset and of this
configuration's preprocessed folder) and adds what only a training run needs: the split of
this fold (DG502-DG504, also for the default split nnU-Net has not written yet: DG505),
the device, free disk for checkpoints and an earlier run in the output folder. Each
refusal names the command that fixes it.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..checks.fold_prereq import concerns as concerns_run
from ..checks.fold_prereq import gate_findings
from ..checks.metadata import METADATA_LIMIT
from ..doctor.report import training_check
from ..engine.layout import (
    ENV_PRE,
    ENV_RAW,
    ENV_RES,
    nnunet_env_problem,
    resolve_as_nnunet,
)
from ..doctor.throughput import load_verdicts
from ..engine.user_dirs import dataset_dir
from ..errors import UsageError
from ..findings import Finding, Fix, Severity
from ..folds import NNUNET_FOLDS
from ..fsio import human_size, read_json
from .checkpoints import UnsafeCheckpoint, safe_load
from .deadline import gate as deadline_gate
from .settings import base_of
from .logs import label_names_from

SPLIT_CODES = ("DG502", "DG503", "DG504")
# warnings a run should be told about before it starts (they do not refuse): a channel name that
# picks the wrong normalization, mirrored label pairs, a configuration that loses a label
GATE_WARNINGS = ("DG313", "DG314", "DG405")
_FOLDS = re.compile(r"\bfolds? (\d+(?:(?:, | and )\d+)*)")
BYTES_PER_PARAM_CHECKPOINT = 4 * 3        # fp32 weights + SGD momentum + slack for the pickle


@dataclass
class Refusal:
    """A reason not to start that is not a data finding (environment, device, disk, an earlier run)."""
    what: str
    fix: str
    code: str | None = None          # its finding code, where the catalogue has one (DG902)


@dataclass
class Preflight:
    dataset: str
    configuration: str
    fold: int
    fold_folder: Path
    findings: list[Finding] = field(default_factory=list)       # everything the scan found
    blocking: list[Finding] = field(default_factory=list)       # the findings that refuse
    allowed: list[Finding] = field(default_factory=list)        # let through by --allow
    warnings: list[Finding] = field(default_factory=list)       # shown, not refusing (GATE_WARNINGS)
    refusals: list[Refusal] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)            # foreground, in pseudo Dice order
    record: object = None            # record.RunRecord written before training starts
    resume: object = None            # record.Resume: what --continue reuses and changes

    @property
    def ok(self) -> bool:
        return not self.blocking and not self.refusals


def folds_named(message: str) -> set[int] | None:
    """The folds a split finding is about ("fold 2", "folds 1 and 3"); None when it names none."""
    out: set[int] = set()
    for m in _FOLDS.finditer(message):
        out |= {int(x) for x in re.findall(r"\d+", m.group(1))}
    return out or None


def concerns_fold(f: Finding, fold: int) -> bool:
    named = folds_named(f.message)
    return named is None or fold in named


def concerns_configuration(f: Finding, configuration: str) -> bool:
    """A DG405 is about one configuration ("configuration 3d_lowres" in its message); the other
    gate warnings concern every configuration."""
    if f.code != "DG405":
        return True
    named = re.findall(r"\bconfiguration ([A-Za-z0-9_.-]+)", f.message)
    return not named or named[0] == configuration


def data_identifier(plans: dict, configuration: str) -> str:
    confs = plans.get("configurations", {})
    if configuration not in confs:
        raise UsageError(f"plans have no configuration {configuration!r} (have: {', '.join(confs) or 'none'})")
    c, seen = confs[configuration], set()
    while "data_identifier" not in c and c.get("inherits_from") in confs and c["inherits_from"] not in seen:
        seen.add(c["inherits_from"])
        c = {**confs[c["inherits_from"]], **{k: v for k, v in c.items() if k != "inherits_from"}}
    return c.get("data_identifier") or f"{plans.get('plans_name', 'nnUNetPlans')}_{configuration}"


def estimate_checkpoint_bytes(plans: dict, configuration: str) -> int:
    """One checkpoint's size from the plans' architecture (conv weights x kernel x channels)."""
    c = plans["configurations"][configuration]
    arch = c.get("architecture", {}).get("arch_kwargs", {})
    feats = arch.get("features_per_stage") or [32, 64, 128, 256, 320, 320]
    kernels = arch.get("kernel_sizes") or [[3, 3, 3]] * len(feats)
    n_conv = arch.get("n_conv_per_stage") or [2] * len(feats)
    params, prev = 0, 1
    for i, f in enumerate(feats):
        k = 1
        for x in kernels[min(i, len(kernels) - 1)]:
            k *= int(x)
        convs = int(n_conv[min(i, len(n_conv) - 1)])
        params += k * prev * f + (convs - 1) * k * f * f     # encoder stage
        params += k * 2 * f * f + k * f * f if i else 0        # decoder stage (concat + conv)
        prev = f
    return max(params * BYTES_PER_PARAM_CHECKPOINT, 1 << 20)


def _splits_fix(f: Finding) -> bool:
    return f.fix == Fix.REGENERATE_SPLITS or f.code in SPLIT_CODES or f.code == "DG505"


def fix_for(f: Finding, dataset: str) -> str:
    if _splits_fix(f):
        return f"dataguard splits rebalance -d {dataset}"
    if f.fix is not None:
        return f"dataguard repair -d {dataset} --select {f.code}"
    commands = [c.strip() for c in (f.help or "").split(";") if c.strip().startswith(("dataguard ", "nnUNetv2_"))]
    return "; ".join(commands) if commands else f"dataguard explain {f.code}"   # a DG507 names its commands


def fixes_for(findings: list[Finding], dataset: str) -> list[str]:
    """The commands that fix these findings, each once: a single `dataguard repair --select A,B`
    for every repairable code (one repair, one journal, one restore), then the others."""
    codes, out = [], []
    for f in findings:
        if f.fix is not None and not _splits_fix(f):
            codes += [] if f.code in codes else [f.code]
        elif (fix := fix_for(f, dataset)) not in out:
            out.append(fix)
    repair = [f"dataguard repair -d {dataset} --select {','.join(sorted(codes))}"] if codes else []
    return repair + out


def run_preflight(dataset: str, configuration: str, fold: int, *, trainer: str, plans_name: str = "nnUNetPlans",
                  device: str = "cuda", cont: bool = False, allow: list[str] = (), save_best_per_label: bool = False,
                  reserve_bytes: int = 1 << 30, on_progress=None,
                  trust: tuple = (), scan=None, deadline: dict | None = None) -> Preflight:
    """The gate. `scan(dataset, on_progress)` scans one layout.Dataset and returns its
    ScanResult: the Workspace passes its own, so the gate needs no engine of its own.
    `deadline`: {"deadline", "epochs", "iterations", "val_iterations"} of --until/--hours,
    judged against the last throughput verdict (DG909)."""
    env = env_refusals()
    if set(env) - {ENV_RAW}:                      # nothing nnU-Net would train from or write to
        pf = Preflight(dataset, configuration, fold, Path())
        pf.refusals += env.values()
        return pf
    ds = resolve_as_nnunet(dataset)
    if ds.preprocessed is None:
        raise UsageError(f"{ds.name} is not preprocessed: run nnUNetv2_plan_and_preprocess -d {ds.id} first")
    plans_file = ds.preprocessed / f"{plans_name}.json"
    try:
        plans = read_json(plans_file, METADATA_LIMIT)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the plans {plans_file}: {e}") from None
    ident = data_identifier(plans, configuration)
    fold_folder = model_folder(ds.name, trainer, plans_name, configuration) / f"fold_{'all' if fold < 0 else fold}"
    pf = Preflight(ds.name, configuration, fold, fold_folder)
    pf.refusals += [*env.values(), *env_refusals(fold_folder).values()]
    if not os.environ.get(ENV_RAW):
        pf.notes.append(f"{ENV_RAW} is not set: the raw data is not checked (nnU-Net's training does not read it)")

    try:
        pf.labels = label_names_from(read_json(ds.preprocessed / "dataset.json", METADATA_LIMIT)) or []
    except (OSError, ValueError):
        pass

    # the data: raw + this configuration's folder only (other configurations do not block,
    # and their files are not "unexpected" in this one's scan: the walk leaves them out)
    ds.skip_dirs = tuple(d.name for d in ds.config_dirs if d.name != ident)
    ds.config_dirs = [d for d in ds.config_dirs if d.name == ident]
    if not ds.config_dirs:
        pf.refusals.append(Refusal(f"no preprocessed data for {configuration} ({ds.preprocessed / ident} is missing)",
                                   f"nnUNetv2_preprocess -d {ds.id} -c {configuration} -plans_name {plans_name}"))
    res = scan(ds, on_progress)
    view = res.views.get(ds.name)
    extra = gate_findings(view, configuration, fold, trainer=trainer, plans_name=plans_name, plans=plans) \
        if view is not None else []              # fold prerequisites (DG507) only a run can judge
    pf.findings = [*res.findings, *extra]
    allow_set = tuple(a.upper() for a in allow)
    for f in pf.findings:
        split = f.code in SPLIT_CODES or f.code == "DG505"
        blocks = (f.code in SPLIT_CODES and concerns_fold(f, fold)) or (
            f.severity >= Severity.ERROR and not split and concerns_run(f, configuration, fold))
        if not blocks:
            continue
        (pf.allowed if f.code.startswith(allow_set) and allow_set else pf.blocking).append(f)
    pf.warnings = [f for f in pf.findings if f.code in GATE_WARNINGS and f.severity < Severity.ERROR
                   and concerns_configuration(f, configuration)]
    predicted = [f for f in pf.findings if f.code == "DG505"]
    if predicted and any(f.code == "DG504" for f in pf.blocking):
        pf.blocking[:0] = predicted                              # say why a split that does not exist is judged

    _check_fold_in_split(pf, res)
    _check_device(pf, device)
    _check_disk(pf, plans, configuration, save_best_per_label, reserve_bytes)
    _check_memory(pf, ds.preprocessed, configuration, plans_name)
    _check_earlier_run(pf, cont, trust)
    if deadline:
        _check_deadline(pf, ds, configuration, device, deadline, trainer)
    pf.fixes = fixes_for(pf.blocking, ds.name)
    return pf


def _check_deadline(pf: Preflight, ds, configuration: str, device: str, d: dict, pf_trainer: str) -> None:
    """DG909 before the first epoch: the epochs asked for against the time to the deadline, at
    the epoch time `doctor --throughput` last measured for this configuration and device."""
    kind, text = deadline_gate(load_verdicts(dataset_dir(ds)), configuration, device, d["deadline"], time.time(),
                               epochs=d.get("epochs"), iterations=d.get("iterations"),
                               val_iterations=d.get("val_iterations"), trainer=base_of(pf_trainer) or pf_trainer)
    if kind == "refuse":
        pf.refusals.append(Refusal(text, "a later --until, or fewer --iterations-per-epoch", code="DG909"))
    elif kind == "warn":
        pf.warnings.append(Finding(path=pf.configuration, code="DG909", severity=Severity.WARNING, message=text,
                                   dataset=pf.dataset))
    else:
        pf.notes.append(text)


ENV_FIX = {ENV_RAW: "the folder holding your DatasetXXX_Name raw folders",
           ENV_PRE: "the folder holding your preprocessed DatasetXXX_Name folders",
           ENV_RES: "a folder you can write, where nnU-Net puts the trained models"}


def model_folder(dataset_name: str, trainer: str, plans_name: str, configuration: str) -> Path:
    """Where nnU-Net puts this model's folds (under $nnUNet_results)."""
    return Path(os.environ.get(ENV_RES) or ".") / dataset_name / f"{trainer}__{plans_name}__{configuration}"


def locate(dataset: str, configuration: str, fold: int | str, trainer: str, plans_name: str) -> Path | None:
    """The fold folder a run would write, without the gate (None when nnU-Net's variables or
    the dataset cannot say): where `--continue` finds the run record before the gate runs."""
    if env_refusals():
        return None
    try:
        ds = resolve_as_nnunet(dataset)
    except UsageError:
        return None
    return model_folder(ds.name, trainer, plans_name, configuration) / f"fold_{fold}"


def _check_fold_in_split(pf: Preflight, res) -> None:
    """nnU-Net trains a fold the split does not have on a random 80:20 split of its own (its
    validation cases are then out-of-fold for no ensemble): say so before days of training."""
    if pf.fold < 0:
        return
    n = _folds_in_split(res)
    if n is not None and pf.fold >= n:
        last = f"0-{n - 1}" if n > 1 else "0"
        pf.refusals.append(Refusal(f"fold {pf.fold} is not in the split ({n} folds, {last}): nnU-Net would train "
                                   "it on a random 80:20 split of its own",
                                   f"a fold {last}, or 'all' to train on every case"))


def _folds_in_split(res) -> int | None:
    """The folds of splits_final.json, or of the default split nnU-Net will write (5)."""
    for view in getattr(res, "views", {}).values():
        splits = view.splits
        if isinstance(splits, list) and splits:
            return len(splits)
        if splits is None:
            return NNUNET_FOLDS
    return None


def env_refusals(fold_folder: Path | None = None) -> dict[str, Refusal]:
    """DG902 for each nnU-Net variable this run needs that nnU-Net could not use.

    The values as nnU-Net reads them, nothing guessed: a sibling `nnUNet_preprocessed`
    next to `nnUNet_raw` is not what `nnUNetv2_train` would open. nnUNet_raw is optional
    (training does not read it) but must be a folder when set; with `fold_folder`, only
    where nnU-Net writes the model is checked (the folders under nnUNet_results).
    """
    if fold_folder is not None:
        wanted = {ENV_RES: fold_folder}
    else:
        wanted = {ENV_PRE: None, ENV_RES: Path(os.environ.get(ENV_RES) or ".")}
        if os.environ.get(ENV_RAW) is not None:
            wanted = {ENV_RAW: None, **wanted}
    out = {}
    for var, writes_to in wanted.items():
        problem = nnunet_env_problem(var, writes_to)
        if problem:
            out[var] = Refusal(problem, f"export {var}=<{ENV_FIX[var]}>", code="DG902")
    return out


def _check_device(pf: Preflight, device: str) -> None:
    if device == "cpu":
        return
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pf.refusals.append(Refusal("--device cuda, but torch sees no CUDA GPU"
                                   + ("" if torch.version.cuda else " (this torch is a CPU-only build)"),
                                   "--device cpu, or install a CUDA build of torch"))
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        pf.refusals.append(Refusal("--device mps, but MPS (Apple GPU) is not available here",
                                   "--device cpu"))


def _check_disk(pf: Preflight, plans: dict, configuration: str, per_label: bool, reserve: int) -> None:
    probe = pf.fold_folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    n_labels = len(pf.labels) if per_label else 0
    ckpt = estimate_checkpoint_bytes(plans, configuration)
    need = ckpt * (4 + n_labels) + reserve     # latest, best, final, the verified copy
    if free < need:
        pf.refusals.append(Refusal(f"{human_size(free)} free under {probe}; checkpoints need about {human_size(need - reserve)} "
                                   f"plus the {human_size(reserve)} to keep free",
                                   "free disk space, point nnUNet_results elsewhere, or lower --reserve-disk"))
    else:
        pf.notes.append(f"disk: {human_size(free)} free, checkpoints need about {human_size(need - reserve)}")


def _check_memory(pf: Preflight, preprocessed: Path, configuration: str, plans_name: str) -> None:
    """DG904/DG905 (doctor's resource model): the data-augmentation workers of this configuration
    against available RAM and /dev/shm; errors refuse, warnings are notes, each naming the
    nnUNet_n_proc_DA that fits."""
    for f in training_check(preprocessed, configuration, plans_name):
        if f.severity >= Severity.ERROR:
            pf.refusals.append(Refusal(f.message, f.help or f"dataguard explain {f.code}", code=f.code))
        else:
            pf.notes.append(f"{f.code}: {f.message} ({f.help})")


def _check_earlier_run(pf: Preflight, cont: bool, trust: tuple = ()) -> None:
    final, latest = pf.fold_folder / "checkpoint_final.pth", pf.fold_folder / "checkpoint_latest.pth"
    if cont:
        ckpt = next((p for p in (final, latest, pf.fold_folder / "checkpoint_best.pth") if p.is_file()), None)
        if ckpt is None:
            pf.notes.append("--continue: no checkpoint yet, training starts at epoch 0")
            return

        try:
            got = safe_load(ckpt, map_location="cpu", trust=trust)
            pf.notes.append(f"--continue from {ckpt.name} (epoch {got.get('current_epoch', '?')})")
        except UnsafeCheckpoint as e:
            pf.refusals.append(Refusal(str(e), e.fix))
        except Exception as e:                                # truncated, not a checkpoint at all
            pf.refusals.append(Refusal(f"{ckpt}: unreadable checkpoint ({type(e).__name__}: {e})",
                                       "move the checkpoint away and train from the start"))
        return
    if final.is_file():
        pf.refusals.append(Refusal(f"a finished run is already in {pf.fold_folder}",
                                   "--continue (re-runs only what is missing), or move that folder away"))
    elif latest.is_file():
        pf.refusals.append(Refusal(f"an unfinished run is in {pf.fold_folder}: starting over would overwrite it",
                                   "--continue to resume it, or move that folder away"))


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text.upper())
    if not m:
        raise UsageError(f"not a size: {text!r} (e.g. 500M, 2G)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))
