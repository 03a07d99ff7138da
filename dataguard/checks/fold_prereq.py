"""DG507: what a fold needs before nnU-Net can train or select it, for the train gate.

- Fewer training cases than folds without a splits_final.json: nnU-Net's do_split runs
  `KFold(n_splits=5)` at the start of every numbered fold and fails (`splits.too_few_cases`;
  the scan reports it where the raw dataset is known, `gate_findings` for a numbered fold
  where it is not). Fold 'all' uses no split.
- A cascade: a configuration with `previous_stage` in the plans (3d_cascade_fullres ->
  3d_lowres) loads, for every training and validation case, the previous stage's
  segmentation from `nnUNet_results/<dataset>/<trainer>__<plans>__<previous>/
  predicted_next_stage/<configuration>/<case>.npz|.b2nd|.npy` (nnUNetTrainer.__init__'s
  folder_with_segs_from_previous_stage; nnU-Net's dataset classes' load_case). The previous
  stage's final validation writes them (perform_actual_validation, next_stages), fold by
  fold for its validation cases: all its folds must have run, with the same trainer.

Every finding names the configuration ("configuration 3d_cascade_fullres") or the split, and
the commands that make what is missing. `concerns` says whether one is about a given run.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..findings import Finding, finding
from ..folds import NNUNET_FOLDS, nnunet_default_split
from .splits import TOO_FEW, too_few_cases, training_cases

SEG_ENDINGS = (".npz", ".b2nd", ".npy")
CASCADE = "needs the predictions of"
OWN = "_dataguard"           # dataguard train's trainer subclass: <base>_dataguard (train.settings.SUFFIX)


def resolved(plans: dict, configuration: str) -> dict:
    """A configuration's plans section with `inherits_from` applied (as nnU-Net's PlansManager)."""
    confs = plans.get("configurations") or {}
    c, seen = dict(confs.get(configuration) or {}), {configuration}
    while isinstance(c.get("inherits_from"), str) and c["inherits_from"] in confs and c["inherits_from"] not in seen:
        parent = c.pop("inherits_from")
        seen.add(parent)
        c = {**confs[parent], **c}
    return c


def previous_stage(plans: dict, configuration: str) -> str | None:
    prev = resolved(plans, configuration).get("previous_stage")
    return prev if isinstance(prev, str) and prev else None


def cascade_prerequisites(results_root: Path | None, dataset: str, plans: dict, configuration: str,
                          trainer: str, plans_name: str, cases, splits=None) -> list[Finding]:
    """DG507 when `configuration` is a cascade stage and the previous stage's predictions of
    some of `cases` are missing. `splits`: the folds (splits_final.json, else nnU-Net's default
    split of `cases`), to say which previous-stage folds to run."""
    prev = previous_stage(plans, configuration)
    if prev is None:
        return []
    cases = sorted(set(cases))
    model = f"{trainer}__{plans_name}__{prev}"
    rel = f"results/{model}/predicted_next_stage/{configuration}"
    ident = dataset.split("_", 1)[0].removeprefix("Dataset").lstrip("0") or "0"
    folder = None if results_root is None else Path(results_root) / dataset / model
    have = set()
    target = None if folder is None else folder / "predicted_next_stage" / configuration
    if target is not None and target.is_dir() and not target.is_symlink():
        for p in target.iterdir():
            for end in SEG_ENDINGS:
                if p.name.endswith(end):
                    have.add(p.name[: -len(end)])
    missing = [c for c in cases if c not in have]
    if not missing:
        return []
    if splits is None and len(cases) >= NNUNET_FOLDS:
        splits = nnunet_default_split(cases)
    folds = sorted({k for k, f in enumerate(splits or []) if set(f["val"]) & set(missing)}) if splits else []
    trained = [k for k in folds if folder is not None and (folder / f"fold_{k}" / "checkpoint_final.pth").is_file()]
    todo = [k for k in folds if k not in trained]
    cmds = []
    if todo:
        base = trainer[: -len(OWN)] if trainer.endswith(OWN) and len(trainer) > len(OWN) else trainer
        cmds.append(f"dataguard train {ident} {prev} {_ranges(todo)}"
                    + (f" --trainer {base}" if base != "nnUNetTrainer" else "")
                    + (f" --plans {plans_name}" if plans_name != "nnUNetPlans" else ""))
    for k in trained:        # trained before the cascade was planned, or its validation did not finish
        cmds.append(f"nnUNetv2_train {ident} {prev} {k} -tr {trainer} -p {plans_name} --val")
    if not folds:
        cmds.append(f"train every fold of {prev} with -tr {trainer} -p {plans_name}")
    which = f" (validated in {_folds(folds)} of {prev})" if folds else ""
    return [finding("DG507", rel, f"configuration {configuration} {CASCADE} {prev}: {len(missing)} of "
                    f"{len(cases)} cases have none in {rel}{which}; nnU-Net's cascade training fails "
                    f"loading them", help="; ".join(cmds))]


def gate_findings(view, configuration: str, fold: int, *, trainer: str, plans_name: str, plans: dict,
                  results_root: Path | None = None) -> list[Finding]:
    """The DG507 findings of one training run (`fold` < 0: fold 'all') that the gate's scan does
    not make, from its view (checks.cases.DatasetView): too few cases for nnU-Net's default split
    of a numbered fold where the scan had no raw dataset to count them (with raw, the scan's own
    DG507 says it: `concerns` keeps it from refusing fold 'all'), and a cascade's missing
    previous-stage predictions. `results_root`: $nnUNet_results."""
    if results_root is None and os.environ.get("nnUNet_results"):
        results_root = Path(os.environ["nnUNet_results"])
    out = []
    cases = training_cases(view)
    splits = view.splits if isinstance(view.splits, list) else None
    if fold >= 0 and not view.has_raw and view.splits is None and 0 < len(cases) < NNUNET_FOLDS:
        out += too_few_cases(view.name, len(cases))
    out += cascade_prerequisites(results_root, view.name, plans, configuration, trainer, plans_name, cases, splits)
    return out


def concerns(f: Finding, configuration: str, fold: int) -> bool:
    """Is a DG507 about this run? A cascade's only about its configuration; too few cases for
    the default split not about fold 'all' (fold < 0); anything else: yes."""
    if f.code != "DG507":
        return True
    if CASCADE in f.message and f.message.startswith("configuration "):
        return f.message.split()[1] == configuration
    if f.message.startswith(TOO_FEW):
        return fold >= 0
    return True


def _ranges(folds: list[int]) -> str:
    if folds == list(range(folds[0], folds[-1] + 1)) and len(folds) > 1:
        return f"{folds[0]}-{folds[-1]}"
    return ",".join(str(k) for k in folds)


def _folds(folds: list[int]) -> str:
    s = [str(k) for k in folds]
    return f"fold {s[0]}" if len(s) == 1 else "folds " + ", ".join(s[:-1]) + " and " + s[-1]
