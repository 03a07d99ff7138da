"""`ws.evaluate` / `ws.dataset(name).evaluate`: cross-validation Dice and ensemble weights."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..engine.layout import nnunet_env
from ..errors import UsageError
from ..evaluate import postprocess as pp
from ..evaluate.crossval import evaluate, fold_sources, foreground_labels, splits_of
from ..evaluate.gain import paired_bootstrap
from ..evaluate.surface import METRICS as SURFACE_METRICS
from ..evaluate.region_weights import RegionReducer, region_rule, search_regions
from ..evaluate.validation import run_validation, validation_calls
from ..evaluate.weights import OOF, _read_ref, check_weights, load_oof, search
from ..spec import load_spec
from ..submit.ensemble import Weights, combine, nnunet_meta, read_probabilities, writer_for
from ..submit.predict import parse_model
from ..submit.predictions import find_probabilities
from ..submit.trained import fold_names, validation_checkpoint
from .scope import Scoped, deprecated


def wrong_checkpoint(models: list, checkpoint: str) -> list[tuple[str, str, str]]:
    """(model, fold, checkpoint) of each used fold whose validation folder another checkpoint made."""
    out = []
    for m in models:
        for k in m.folds:
            made = validation_checkpoint(m.folder / f"fold_{k}")
            if made != checkpoint:
                out.append((m.spec, k, made))
    return out


def tolerances(tolerance, labels: dict[int, str]) -> dict[int, float]:
    """{class: mm} from one number, or {label value or name, or "*" for the others: mm};
    UsageError for a name that is no label (with the closest one) or a tolerance that is not
    a positive number."""
    import difflib
    import math

    if tolerance is None:
        return {}
    if isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool):
        tolerance = {"*": tolerance}
    tolerance = dict(tolerance)
    every = tolerance.pop("*", None)                  # one number for the labels not named
    if every is not None:
        tolerance = {**{k: every for k in labels}, **tolerance}
    out = {}
    by_name = {v: k for k, v in labels.items()}
    for key, mm in tolerance.items():
        k = key if key in labels else by_name.get(str(key)) if not str(key).isdigit() else int(key)
        if k not in labels:
            close = difflib.get_close_matches(str(key), list(by_name), n=1)
            raise UsageError(f"--tolerance: {key!r} is no label of this dataset"
                             + (f" (did you mean {close[0]!r}?)" if close else f" (labels: {', '.join(by_name)})"))
        if not isinstance(mm, (int, float)) or isinstance(mm, bool) or not math.isfinite(mm) or mm <= 0:
            raise UsageError(f"--tolerance for {labels[k]}: {mm!r} is not a positive number of mm")
        out[k] = float(mm)
    return out


class Evaluation(Scoped):
    """A dataset's trained models: their validation Dice, out-of-fold probabilities, weights."""

    def models(self, specs: list[str] | None = None, include_unfinished: bool = False) -> list:
        """Trained models (predict.ModelSpec), by `--model` spec; None: every cross-validation
        model under $nnUNet_results/<dataset>. Each uses its finished folds only (unfinished ones
        too with `include_unfinished`); `m.fold_findings()` says which it skipped (DG806)."""
        return self._models(specs, include_unfinished)[0]

    def _results(self) -> Path:
        """The dataset's folder under nnUNet_results: the one its layout found (beside its
        tree), else under $nnUNet_results."""
        ds = self._ds()
        found = getattr(ds, "results", None)
        if found is not None:
            return Path(found)
        results = os.environ.get("nnUNet_results")
        if not results:
            raise UsageError("nnUNet_results is not set: it says where the trained models are")
        return Path(results) / ds.name

    def _references(self, no_regions: str | None = None):
        """(dataset layout, its preprocessed DatasetSpec, the scored classes): what every
        comparison with gt_segmentations starts from. UsageError when the dataset is not
        preprocessed, or (with `no_regions`, the reason) when its labels are regions."""
        ds = self._ds()
        if ds.preprocessed is None:
            raise UsageError(f"{ds.name} is not preprocessed: the references are its gt_segmentations")
        spec = load_spec(Path(ds.preprocessed) / "dataset.json")
        if no_regions and spec.has_regions:
            raise UsageError(no_regions)
        return ds, spec, foreground_labels(spec)

    def _models(self, specs, include_unfinished: bool = False) -> tuple[list, list]:
        """(models with a usable fold, models found without one): the second only when
        discovering (a named model without a finished fold is refused)."""
        root = self._results()
        if specs:
            return [parse_model(s, root, include_unfinished) for s in specs], []
        out, dropped = [], []
        for d in sorted(root.glob("*__*__*")) if root.is_dir() else []:
            trainer, plans, config = d.name.split("__", 2)
            if d.is_symlink() or not any(k.isdigit() for k in fold_names(d)):
                continue
            short = parse_model(config, root, require_finished=False)
            spec = config if short.folder == d else f"{config}:all:{trainer}:{plans}"
            m = parse_model(spec, root, include_unfinished, require_finished=False)
            (out if m.folds else dropped).append(m)
        if not out:
            why = "; ".join(m.describe() for m in dropped)
            raise UsageError(f"no trained cross-validation model under {root}"
                             + (f" with a finished fold ({why})" if why else ""))
        return out, dropped

    def run(self, specs: list[str] | None = None, pred_dir: Path | None = None, fold: int | None = None,
            on_case=None, include_unfinished: bool = False, checkpoint: str = "final",
            metrics: tuple = (), tolerance: dict | None = None):
        """Per case, fold and label Dice of models' validation predictions (or one loose folder
        given as fold `fold`), with DG802 on their case sets and DG806 on unfinished folds
        (skipped unless `include_unfinished`). A fold whose validation another checkpoint made
        than `checkpoint` is refused: the Dice would describe other weights. `metrics`: surface
        metrics besides Dice (hd, hd95, assd, nsd), NSD at `tolerance` mm ({label value or
        name: mm}, or one number for every label; 2 mm where none is stated)."""
        ds, spec, labels = self._references()
        splits = splits_of(ds.preprocessed)
        notes = []
        if pred_dir is not None:
            if fold is None:
                raise UsageError("a loose PRED_DIR needs --fold K: which fold's validation it claims to be")
            sources = fold_sources(str(pred_dir), {fold: Path(pred_dir)}, splits)
            models = []
        else:
            sources = []
            models, dropped = self._models(specs, include_unfinished)
            for m in models + dropped:
                notes += m.fold_findings()
            other = wrong_checkpoint(models, checkpoint)
            if other:
                raise UsageError(f"validation made with another checkpoint than checkpoint_{checkpoint}: "
                                 + "; ".join(f"{spec} fold {k} ({c})" for spec, k, c in other)
                                 + f" (make it with: dataguard ensemble suggest ... --checkpoint {checkpoint} "
                                   f"--predict-missing)")
            for m in models:
                folds = {int(k): m.folder / f"fold_{k}" / "validation" for k in m.folds if k.isdigit()}
                sources += fold_sources(m.spec, folds, splits)
        ev = evaluate(ds.name, Path(ds.preprocessed) / "gt_segmentations", labels, sources, jobs=self._ws.jobs,
                      on_case=on_case, spec=spec, metrics=tuple(metrics), tolerance=tolerances(tolerance, labels))
        ev.findings = notes + ev.findings
        ev.used = [m.describe() for m in models]
        return ev

    def out_of_fold(self, specs: list[str], on_case=None, include_unfinished: bool = False,
                    checkpoint: str = "final"):
        """Out-of-fold probabilities of the models on the cases they share, and the references.
        Finished folds only (unless `include_unfinished`); a fold whose validation another
        checkpoint made counts as missing (`oof.why` says so)."""
        ws, ds = self._ws, self._ds()
        models = self.models(specs, include_unfinished)
        spec = load_spec(Path(ds.preprocessed) / "dataset.json")
        labels = foreground_labels(spec)
        dj, plans = nnunet_meta(models[0].folder)
        reader = writer_for(plans, dj)()
        other = wrong_checkpoint(models, checkpoint)
        if other:
            oof = OOF([m.spec for m in models], labels, [], checkpoint=checkpoint)
            for m, k, c in other:
                oof.missing.setdefault(m, []).append(k)
                oof.why[f"{m} fold {k}"] = f"its validation was made with checkpoint_{c}"
            return models, oof
        folds = {m.spec: {int(k): m.folder / f"fold_{k}" / "validation" for k in m.folds if k.isdigit()}
                 for m in models}
        rule = region_rule(spec)
        oof = load_oof(folds, Path(ds.preprocessed) / "gt_segmentations", labels, reader, on_case,
                       jobs=ws.jobs, ignore=spec.ignore_label, reduce=None if rule is None else RegionReducer(rule),
                       executor=ws.executor if ws.client is not None else None)
        oof.rule = rule
        oof.checkpoint = checkpoint
        return models, oof

    SURFACE_METRICS = SURFACE_METRICS           # what run(metrics=...) takes, in this order

    @staticmethod
    def write_postprocessing(decision, path: Path) -> None:
        """The decision file `submit --postprocess PP.json` reads."""
        pp.write(decision, path)

    @staticmethod
    def load_postprocessing(path: Path):
        """A decision file (ValueError / OSError say what is wrong with it)."""
        return pp.load_decision(path)

    def decide_postprocessing(self, specs: list[str], weights=None, on_case=None, jobs: int | None = None):
        """nnU-Net's post-processing decision (evaluate/postprocess.py) on the out-of-fold
        segmentation `submit` would build: one model's validation label maps as nnU-Net decides
        on them, or for several models the ensemble of their `--npz` probabilities with
        `weights` (equal when None). Returns (Decision, Gain of the decided operations over
        none, paired over cases in nnU-Net's Dice; None when nothing was kept)."""
        from concurrent.futures import ThreadPoolExecutor

        ds, spec, labels = self._references(
            no_regions="post-processing of region models is decided by nnU-Net's order-dependent rule; "
                       "dataguard decides it for label models only")
        models, _ = self._models(specs)
        names = [m.spec for m in models]
        gt_dir = Path(ds.preprocessed) / "gt_segmentations"
        dj, plans = nnunet_meta(models[0].folder)
        reader = writer_for(plans, dj)()
        ending = str(dj.get("file_ending", ".nii.gz")) if isinstance(dj, dict) else ".nii.gz"
        per_model: dict[str, dict] = {}
        for m in models:
            files: dict = {}
            for k in m.folds:
                val = m.folder / f"fold_{k}" / "validation"
                if len(models) == 1 and weights is None:
                    files.update({p.name[: -len(ending)]: p for p in sorted(val.glob(f"*{ending}"))})
                else:
                    files.update(find_probabilities(val))
            per_model[m.spec] = files
        cases = sorted(set.intersection(*[set(f) for f in per_model.values()]))
        if not cases:
            raise UsageError("no out-of-fold predictions to decide on (train with --npz for an ensemble; "
                             "every fold's validation/ for one model)")
        w = weights if weights is not None else Weights.load(None, names)

        def one(case):
            ref = _read_ref(gt_dir, case, reader)
            if ref is None:
                return None
            if len(models) == 1 and weights is None:
                seg, _ = reader.read_seg(str(per_model[names[0]][case]))
                seg = seg[0]
            else:
                probs = [read_probabilities(per_model[n][case].npz) for n in names]
                seg, _ = combine(probs, w.matrix(names, probs[0].shape[0]))
            if seg.shape != ref.shape:
                raise UsageError(f"case {case}: prediction shape {seg.shape} is not the reference's {ref.shape}")
            return pp.trial(case, ref, seg, list(labels), spec.ignore_label)

        trials = []
        with ThreadPoolExecutor(max_workers=jobs or self._ws.jobs or 2) as pool:
            for t in pool.map(one, cases):
                if t is not None:
                    trials.append(t)
                    if on_case:
                        on_case(t.case)
        source = " + ".join(names) + ("" if weights is None else " (weighted)")
        dec = pp.decide(trials, labels, source)
        gain = None
        if dec.largest_foreground or dec.largest_per_label:
            import numpy as np

            def after(t, lab):
                if lab in dec.largest_per_label:
                    return (t.own_on_fg if dec.largest_foreground else t.own_on_base)[lab]
                return (t.fg if dec.largest_foreground else t.base)[lab]
            a = np.array([[pp.dice(after(t, lab)) for lab in labels] for t in trials])
            b = np.array([[pp.dice(t.base[lab]) for lab in labels] for t in trials])
            gain = paired_bootstrap(a, b)
        return dec, gain

    @staticmethod
    def load_weights(path: Path | None, models: list[str]):
        """An ensemble weights file (submit.ensemble.Weights); None: equal weights."""
        return Weights.load(path, models)

    @staticmethod
    def suggest_weights(oof, step: float = 0.1):
        """Per-label ensemble weights from out-of-fold probabilities, and DG803 on them:
        (evaluate.weights.Suggestion, findings)."""
        sug = search(oof, step=step) if oof.rule is None else search_regions(oof, oof.rule, step=step)
        sug.checkpoint = oof.checkpoint
        single = {m: sug.single[m] for m in sug.models}
        found = check_weights(Weights.parse(sug.weights_file(), sug.models), single, oof.labels, "suggested weights")
        return sug, found

    def validation_calls(self, models: list, missing: dict, checkpoint: str = "final") -> list:
        """nnU-Net's `--val --npz` call for each fold without out-of-fold probabilities (from
        `checkpoint`), with the device and settings its run was started with:
        [(model, fold, TrainCall)]."""
        return validation_calls(self._ds().name, models, missing, checkpoint)

    def run_validation(self, calls: list, trust: tuple = (), on_call=None) -> None:
        """Run those calls, each checkpoint proven plain data first; in a project folder used
        without nnU-Net's variables, they name its folders for the calls."""
        try:
            env = nnunet_env(self._ds())
        except UsageError:                       # several datasets in the workspace: the calls name theirs
            env = contextlib.nullcontext()
        with env:
            run_validation(calls, trust, on_call)

    def check_weights(self, weights, specs: list[str], source: str, checkpoint: str = "final",
                      include_unfinished: bool = False):
        """DG803: weights against each model's out-of-fold Dice per label (from `run`)."""
        ev = self.run(specs, checkpoint=checkpoint, include_unfinished=include_unfinished)
        oof = {m: {lab: v["mean_dice"] for lab, v in ev.per_label(m).items()} for m in ev.models()}
        return check_weights(weights, oof, ev.labels, source)

    def __call__(self, specs: list[str] | None = None, pred_dir: Path | None = None, fold: int | None = None,
                 dataset: str | None = None, on_case=None):
        """The 0.3 `ws.evaluate(...)` method (deprecated): `run`."""
        deprecated("evaluate()", "ws.dataset(name).evaluate.run()")
        target = self if dataset is None else Evaluation(self._ws, self._ws._layout(dataset).name)
        return target.run(specs, pred_dir, fold, on_case=on_case)
