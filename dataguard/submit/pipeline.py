"""predict → check → ensemble: what `submit --model` does before the archive, as one function.

It lives here, not in the CLI, so that every face (the CLI, the TUI, the report, a script)
runs the same steps in the same order and stops at the same place: test images with errors
stop it before anything is predicted, a model's missing probability files stop it before
anything is ensembled. Progress reaches the caller as `on_event(stage, done, total)`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..findings import Severity
from .archive import run_checks
from .ensemble import Weights, ensemble_folders
from .predict import ModelSpec, PredictRun, predict_model, prediction_workers
from .predictions import check_test_images, load_probability_inputs, test_images

EventFn = Callable[[str, int, int], None]


@dataclass
class PipelineResult:
    """Where the pipeline stopped ("images", "probabilities" or "ensembled"), and why."""
    stage: str
    merged: Path | None = None                 # the ensembled label maps, when it got there
    runs: list[PredictRun] = field(default_factory=list)
    findings: list = field(default_factory=list)   # what stopped it (errors only)
    written: int = 0

    @property
    def ok(self) -> bool:
        return self.stage == "ensembled"

    def provenance(self, weights: Weights, postprocess: str, training_manifest: Path | None,
                   include_unfinished: bool = False) -> dict:
        """What the archive's manifest records about how its label maps were made: per model the
        folds used, those skipped (unfinished) and those used although unfinished."""
        def skipped(m):
            return [{"fold": s.fold, "why": s.why} for s in (m.choice.skipped if m.choice else [])]

        def unfinished(m):
            return [s.fold for s in (m.choice.unfinished_used if m.choice else [])]

        return {"models": [{"model": r.model.spec, "trainer": r.model.trainer, "plans": r.model.plans,
                            "configuration": r.model.configuration, "folds": r.model.folds,
                            "folds_skipped": skipped(r.model), "unfinished_folds_used": unfinished(r.model),
                            "checkpoint": r.record["checkpoint"], "checkpoints_blake3": r.record["checkpoints"],
                            "tta": r.record["tta"], "reused": r.reused} for r in self.runs],
                "checkpoint": self.runs[0].record["checkpoint"] if self.runs else None,
                "include_unfinished": include_unfinished,
                "weights": weights.to_dict(),
                "postprocess": postprocess.to_json() if hasattr(postprocess, "to_json") else postprocess,
                "training_manifest": training_manifest}


def predict_and_ensemble(models: list[ModelSpec], dataset: str, images: Path, work: Path, weights: Weights,
                         postprocess: str = "none", *, checkpoint: str = "final", tta: bool = True,
                         trust: tuple = (), device: str = "cuda", on_event: EventFn | None = None,
                         on_run: Callable[[PredictRun], None] | None = None,
                         training=None) -> PipelineResult:
    """Every model's probabilities (reused when nothing changed), checked, then ensembled
    into `work/ensemble`. `training`: the training data's profile (consistency.TrainingProfile),
    so test images unlike it stop the run before anything is predicted."""
    event = on_event or (lambda stage, done, total: None)
    bad = [f for f in check_test_images(images, training) if f.severity >= Severity.ERROR]
    if bad:
        return PipelineResult("images", findings=bad)
    cases = sorted(test_images(images))
    runs = []
    for m in models:
        w = prediction_workers(m, Path(images), device)
        stage = f"predicting {m.spec} (-npp {w.npp} -nps {w.nps})"      # what fits in RAM, named
        event(stage, 0, len(cases))
        run = predict_model(m, dataset, Path(images), Path(work), checkpoint=checkpoint, tta=tta, trust=trust,
                            device=device, cases=cases, npp=w.npp, nps=w.nps,
                            on_progress=lambda _spec, done, total, stage=stage: event(stage, done, total))
        runs.append(run)
        if on_run:
            on_run(run)
    pi = load_probability_inputs({r.model.spec: r.out_dir for r in runs}, set(cases))
    missing = run_checks(pi, "probabilities")
    if missing:
        return PipelineResult("probabilities", runs=runs, findings=missing)
    merged = Path(work) / "ensemble"
    if merged.exists():
        shutil.rmtree(merged)       # ours: made by the last run of this pipeline
    done = 0

    def tick(_case):
        nonlocal done
        done += 1
        event("ensembling", done, len(cases))

    event("ensembling", 0, len(cases))
    rep = ensemble_folders(pi.folders, merged, weights, postprocess, files=pi.files, on_case=tick)
    return PipelineResult("ensembled", merged=merged, runs=runs, written=len(rep.written))
