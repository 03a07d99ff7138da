"""`ws.evaluate` / `ws.dataset(name).evaluate`: cross-validation Dice and ensemble weights."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from ..evaluate.crossval import evaluate, fold_sources, foreground_labels, splits_of
from ..evaluate.region_weights import RegionReducer, region_rule, search_regions
from ..evaluate.validation import run_validation, validation_calls
from ..evaluate.weights import check_weights, load_oof, search
from ..spec import load_spec
from ..submit.ensemble import Weights, nnunet_meta, writer_for
from ..submit.predict import parse_model
from .scope import Scoped, deprecated


class Evaluation(Scoped):
    """A dataset's trained models: their validation Dice, out-of-fold probabilities, weights."""

    def models(self, specs: list[str] | None = None) -> list:
        """Trained models (predict.ModelSpec), by `--model` spec; None: every cross-validation
        model under $nnUNet_results/<dataset>."""
        ds = self._ds()
        results = os.environ.get("nnUNet_results")
        if not results:
            raise UsageError("nnUNet_results is not set: it says where the trained models are")
        root = Path(results) / ds.name
        if specs:
            return [parse_model(s, root) for s in specs]
        out = []
        for d in sorted(root.glob("*__*__*")) if root.is_dir() else []:
            trainer, plans, config = d.name.split("__", 2)
            if any(p.name[5:].isdigit() for p in d.glob("fold_*")):
                short = parse_model(config, root)
                spec = config if short.folder == d else f"{config}:all:{trainer}:{plans}"
                out.append(parse_model(spec, root))
        if not out:
            raise UsageError(f"no trained cross-validation model under {root}")
        return out

    def run(self, specs: list[str] | None = None, pred_dir: Path | None = None, fold: int | None = None,
            on_case=None):
        """Per case, fold and label Dice of models' validation predictions (or one loose folder
        given as fold `fold`), with DG802 on their case sets."""
        ds = self._ds()
        if ds.preprocessed is None:
            raise UsageError(f"{ds.name} is not preprocessed: the references are its gt_segmentations")
        splits = splits_of(ds.preprocessed)
        spec = load_spec(Path(ds.preprocessed) / "dataset.json")
        labels = foreground_labels(spec)
        if pred_dir is not None:
            if fold is None:
                raise UsageError("a loose PRED_DIR needs --fold K: which fold's validation it claims to be")
            sources = fold_sources(str(pred_dir), {fold: Path(pred_dir)}, splits)
        else:
            sources = []
            for m in self.models(specs):
                folds = {int(k): m.folder / f"fold_{k}" / "validation" for k in m.folds if k.isdigit()}
                sources += fold_sources(m.spec, folds, splits)
        return evaluate(ds.name, Path(ds.preprocessed) / "gt_segmentations", labels, sources, jobs=self._ws.jobs,
                        on_case=on_case, spec=spec)

    def out_of_fold(self, specs: list[str], on_case=None):
        """Out-of-fold probabilities of the models on the cases they share, and the references."""
        ws, ds = self._ws, self._ds()
        models = self.models(specs)
        spec = load_spec(Path(ds.preprocessed) / "dataset.json")
        labels = foreground_labels(spec)
        dj, plans = nnunet_meta(models[0].folder)
        reader = writer_for(plans, dj)()
        folds = {m.spec: {int(k): m.folder / f"fold_{k}" / "validation" for k in m.folds if k.isdigit()}
                 for m in models}
        rule = region_rule(spec)
        oof = load_oof(folds, Path(ds.preprocessed) / "gt_segmentations", labels, reader, on_case,
                       jobs=ws.jobs, ignore=spec.ignore_label, reduce=None if rule is None else RegionReducer(rule),
                       executor=ws.executor if ws.client is not None else None)
        oof.rule = rule
        return models, oof

    @staticmethod
    def load_weights(path: Path | None, models: list[str]):
        """An ensemble weights file (submit.ensemble.Weights); None: equal weights."""
        return Weights.load(path, models)

    @staticmethod
    def suggest_weights(oof, step: float = 0.1):
        """Per-label ensemble weights from out-of-fold probabilities, and DG803 on them:
        (evaluate.weights.Suggestion, findings)."""
        sug = search(oof, step=step) if oof.rule is None else search_regions(oof, oof.rule, step=step)
        single = {m: sug.single[m] for m in sug.models}
        found = check_weights(Weights.parse(sug.weights_file(), sug.models), single, oof.labels, "suggested weights")
        return sug, found

    def validation_calls(self, models: list, missing: dict) -> list:
        """nnU-Net's `--val --npz` call for each fold without out-of-fold probabilities:
        [(model, fold, TrainCall)]."""
        return validation_calls(self._ds().name, models, missing)

    @staticmethod
    def run_validation(calls: list, trust: tuple = (), on_call=None) -> None:
        """Run those calls, each checkpoint proven plain data first."""
        run_validation(calls, trust, on_call)

    def check_weights(self, weights, specs: list[str], source: str):
        """DG803: weights against each model's out-of-fold Dice per label (from `run`)."""
        ev = self.run(specs)
        oof = {m: {lab: v["mean_dice"] for lab, v in ev.per_label(m).items()} for m in ev.models()}
        return check_weights(weights, oof, ev.labels, source)

    def __call__(self, specs: list[str] | None = None, pred_dir: Path | None = None, fold: int | None = None,
                 dataset: str | None = None, on_case=None):
        """The 0.3 `ws.evaluate(...)` method (deprecated): `run`."""
        deprecated("evaluate()", "ws.dataset(name).evaluate.run()")
        target = self if dataset is None else Evaluation(self._ws, self._ws._layout(dataset).name)
        return target.run(specs, pred_dir, fold, on_case=on_case)
