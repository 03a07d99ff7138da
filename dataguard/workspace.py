"""Workspace: the one API every face calls (CLI, TUI, train/submit gates, report).

A Workspace is a set of datasets (found once from paths, ids or the nnU-Net env vars),
a manifest folder and an executor. It scans, lists cases with their state, shows a
slice of a case, plans and applies repairs, restores them, and lists the quarantine.
Faces never reach past it into scanner, repair or layout internals.

    ws = dataguard.Workspace(["/data/nnUNet_preprocessed/Dataset001_Heart"])
    res = ws.scan()
    for c in ws.cases():
        print(c.case, c.status, c.val_fold)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .checks.consistency import profile, raw_channels
from .checks.consistency import summary as consistency_summary
from .engine import (
    scanner,  # scanner.scan at call time: tests and tools may wrap it
    stat_index,
)
from .engine.caseinfo import case_infos, from_summary
from .engine.executors import as_executor, check_mounts, connect, is_dask_client
from .engine.groups_store import save_rule
from .engine.layout import discover
from .engine.manifest import DEFAULT_DIR
from .engine.slices import SliceError, config_slice, raw_slice
from .engine.verifier import verify
from .doctor.report import run_doctor
from .engine.walk import file_ending, load_dataset_json
from .errors import UsageError
from .evaluate.crossval import evaluate, fold_sources, foreground_labels, splits_of
from .evaluate.region_weights import RegionReducer, region_rule, search_regions
from .evaluate.validation import run_validation, validation_calls
from .evaluate.weights import check_weights, load_oof, search
from .findings import Finding
from .nnunet import plan_and_preprocess
from .repair.apply import apply_plan
from .repair.plan import Action, plan_repairs
from .repair.restore import quarantine_list, restore
from .spec import load_spec, parse_spec
from .splits.context import context_from_result
from .splits.folds import (
    NNUNET_FOLDS,
    SplitError,
    class_shares,
    label_table,
    load_splits,
    nnunet_default_split,
    write_splits,
)
from .submit.archive import build_archive, run_checks, write_manifest
from .submit.ensemble import Weights, ensemble_folders, nnunet_meta, writer_for
from .submit.pipeline import predict_and_ensemble
from .submit.predict import parse_model, predict_model
from .submit.predictions import (
    check_test_images,
    load_prediction_set,
    load_probability_inputs,
    test_images,
)
from .train.logs import DEFAULT_PATIENCE, load_runs, plot_runs
from .train.session import prepare, train

if TYPE_CHECKING:
    from concurrent.futures import Executor

EventFn = Callable[[dict], None]


@dataclass
class RepairRun:
    """What `Workspace.apply` / `Workspace.repair` did."""
    plan: list                                   # list[Action]
    reports: list = field(default_factory=list)  # list[RepairReport], one per run id
    before: object | None = None                 # ScanResult the plan came from
    after: object | None = None                  # ScanResult after applying (None: nothing applied)
    declined: bool = False
    cancelled: bool = False

    @property
    def failed(self) -> list:
        return [o for r in self.reports for o in r.failed]

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.reports]


class Workspace:
    def __init__(self, targets: list[str] | None = None, manifest_dir: Path | str = DEFAULT_DIR,
                 jobs: int | None = None, executor: Executor | None = None, *, datasets=None):
        self.targets = list(targets) if targets else None
        self.manifest_dir = Path(manifest_dir)
        self.jobs = jobs

        # "local" (as --executor takes it): this machine, threads or, for big scans, a spawn
        # pool (the calling script needs a main guard); None: threads only; or dask://host:port
        self.pool = "auto" if isinstance(executor, str) and executor.strip() == "local" else "thread"
        if isinstance(executor, str):
            executor = connect(executor)
        self.client = executor if is_dask_client(executor) else None   # a distributed.Client, kept
        self.executor = as_executor(executor)
        self._datasets = datasets
        self.last = None            # the latest ScanResult (cases() and plan() reuse it)
        self._lock = threading.Lock()

    # --- datasets and scanning ---------------------------------------------------------------
    @property
    def datasets(self) -> list:
        """The discovered datasets (layout.Dataset), found once."""
        if self._datasets is None:

            self._datasets = discover(self.targets)
        return self._datasets

    def dataset(self, name: str | None = None):
        """One dataset by name; with None, the only one (DataguardError when ambiguous)."""
        ds = self.datasets
        if name is None:
            if len(ds) != 1:
                raise UsageError(f"{len(ds)} datasets ({', '.join(d.name for d in ds)}): name one")
            return ds[0]
        for d in ds:
            if d.name == name or (name.isdigit() and d.id == int(name)):
                return d
        raise UsageError(f"no dataset {name!r} here (have: {', '.join(d.name for d in ds)})")

    def _check_mounts(self) -> None:
        """With a Dask cluster: a smoke task first, so a missing mount is one clear error."""
        if self.client is not None and not getattr(self, "_mounts_ok", False):

            check_mounts(self.client, [r for d in self.datasets for r in (d.raw, d.preprocessed)])
            self._mounts_ok = True

    def scan(self, full: bool = False, select=None, ignore=None, on_progress=None,
             cancel: threading.Event | None = None, write_manifest: bool = True):
        """Scan every dataset (incrementally, unless full). Returns and remembers a ScanResult."""
        self._check_mounts()

        res = scanner.scan(datasets=self.datasets, manifest_dir=self.manifest_dir, full=full, jobs=self.jobs,
                   select=select, ignore=ignore, on_progress=on_progress, write_manifest=write_manifest,
                   executor=self.executor, cancel=cancel, pool=self.pool)
        if not res.cancelled and not select and not ignore:
            self.last = res
        return res

    def verify(self, select=None, ignore=None, on_progress=None, cancel: threading.Event | None = None):
        """Re-hash every file against the manifest (DG701-DG703); never updates it."""
        self._check_mounts()

        return verify(datasets=self.datasets, manifest_dir=self.manifest_dir, jobs=self.jobs,
                      select=select, ignore=ignore, on_progress=on_progress, executor=self.executor,
                      cancel=cancel)

    def recorded(self) -> tuple[list, list, float | None]:
        """What the last scan recorded, read without touching the data: (cases, findings,
        when). Cases come without their file lists; a face shows these at once, then scans."""
        cases, findings, when = [], [], None
        for ds in self.datasets:
            got = stat_index.recorded(self.manifest_dir / f"{ds.name}.json")
            if got is None:
                continue
            doc, mtime = got
            when = max(when or mtime, mtime)
            fs = [Finding.from_dict(f) for f in doc.get("findings", [])]
            findings += fs
            by_case: dict[str, list] = {}
            for f in fs:
                if f.case is not None:
                    by_case.setdefault(f.case, []).append(f)
            cases += [from_summary(ds.name, c, by_case.get(c["case"], [])) for c in doc.get("cases", [])]
        return cases, findings, when

    def _result(self):
        return self.last if self.last is not None else self.scan()

    # --- cases -------------------------------------------------------------------------------
    def cases(self, dataset: str | None = None) -> list:
        """Every case (raw and every configuration) with status, findings, files, facts, fold."""
        return case_infos(self._result(), dataset)

    def case(self, dataset: str, case: str):

        for c in case_infos(self._result(), dataset):
            if c.case == case:
                return c
        raise UsageError(f"no case {case!r} in {dataset}")

    def load_slice(self, dataset: str, case: str, axis: int = 0, index: int | None = None,
                   source: str = "raw", config: str | None = None):
        """(image_2d float32, label_2d int or None) in (z, y, x) order; middle slice by default.

        source: "raw" (imagesTr channel 0 + labelsTr) or "preprocessed" (config: the
        configuration folder, default the first one holding the case).
        """
        ds = self.dataset(dataset)
        if source == "raw":
            if ds.raw is None:
                raise SliceError(f"{ds.name} has no raw folder")

            return raw_slice(ds.raw, case, file_ending(load_dataset_json(ds)), axis, index)
        if source != "preprocessed":
            raise SliceError("source must be 'raw' or 'preprocessed'")
        folders = [c for c in ds.config_dirs if config is None or c.name == config]
        for folder in folders:
            if any(folder.glob(f"{case}.*")):
                return config_slice(folder, case, axis, index)
        raise SliceError(f"case {case} not found in {config or 'any configuration folder'} of {ds.name}")

    # --- repair ------------------------------------------------------------------------------
    def plan(self, select=None, cases=None) -> list:
        """Repair actions for the latest scan's findings (scans first if needed); touches nothing."""
        return plan_repairs(self._result(), select=select, cases=cases)

    def apply(self, plan: list, on_event: EventFn | None = None, cancel: threading.Event | None = None,
              on_progress=None, log: Callable[[str], None] | None = None) -> RepairRun:
        """Carry out a plan (journalled, locked, undoable), then rescan once.

        on_event gets {"event": "started"|"done"|"failed"|"cancelled", "index", "total",
        "action", "detail"} per action. cancel stops between actions; what was done stays
        done and journalled (`restore` undoes it).
        """
        before = self._result()
        run = RepairRun(plan=plan, before=before)
        todo = [a for a in plan if not a.blocked]
        if not todo:
            return run
        with self._lock:
            report = apply_plan(todo, self.datasets, log=log or (lambda m: None), scan_result=before,
                                on_event=on_event, cancel=cancel,
                                executor=self.executor if self.client is not None else None)
        run.reports.append(report)
        run.cancelled = report.cancelled
        run.after = self.scan(on_progress=on_progress)
        return run

    def repair(self, select=None, cases=None, dry_run: bool = False,
               confirm: Callable[[list], bool] = lambda plan: True, on_event: EventFn | None = None,
               cancel: threading.Event | None = None, on_progress=None,
               log: Callable[[str], None] | None = None) -> RepairRun:
        """Scan, plan, confirm, apply, rescan: one scan before and one after."""
        before = self.scan(on_progress=on_progress)
        plan = self.plan(select=select, cases=cases)
        run = RepairRun(plan=plan, before=before)
        if dry_run or not [a for a in plan if not a.blocked]:
            return run
        if not confirm(plan):
            run.declined = True
            return run
        done = self.apply(plan, on_event=on_event, cancel=cancel, on_progress=on_progress, log=log)
        done.before = before
        return done

    def restore(self, run_id: str | None = None) -> list:
        """Undo a repair run (default: the latest on these datasets), byte for byte."""
        reports = restore(self.datasets, run_id=run_id)
        self.last = None
        return reports

    def quarantine(self) -> list:
        """What repairs moved aside, per run (repair.restore.Held)."""
        return quarantine_list(self.datasets)

    def label_names(self, dataset: str | None = None) -> dict[int, str]:
        """{label value: name} from the dataset's dataset.json (region labels by first value)."""
        return parse_spec(load_dataset_json(self.dataset(dataset)) or {}).foreground_names

    # --- splits ------------------------------------------------------------------------------
    def plan_rebalance(self, dataset: str | None = None) -> list:
        """The one action that writes stratified splits for a dataset (apply it like any plan)."""
        ds = self.dataset(dataset)
        if ds.preprocessed is None:

            raise UsageError(f"{ds.name} has no preprocessed folder: splits_final.json lives there")
        return [Action(kind="regenerate-splits", dataset=ds.name, target="preprocessed/splits_final.json",
                       files=["preprocessed/splits_final.json"])]

    def splits_context(self, dataset: str | None = None):
        """Training cases and their labels for one dataset, from the latest scan (no second scan)."""
        ds = self.dataset(dataset)
        return context_from_result(self._result(), ds)

    def write_splits(self, dataset: str | None, splits, dry_run: bool = False):
        """The one splits writer (`splits rebalance` and repair both use splits.write_splits)."""
        ds = self.dataset(dataset)
        backup = write_splits(Path(ds.preprocessed) / "splits_final.json", splits, dry_run=dry_run)
        if not dry_run:
            self.last = None
        return backup

    # --- predictions, ensembles and submissions ---------------------------------------------
    def label_shares(self, dataset: str | None = None) -> dict[int, float]:
        """Share of training cases that contain each class (DG605's reference): foreground
        labels, or regions (a case has a region when it holds any of its values); never ignore."""
        spec = parse_spec(load_dataset_json(self.dataset(dataset)) or {})
        return class_shares(({int(lab) for lab, n in c.labels.items() if n} for c in self.cases(dataset)
                             if c.labels is not None), spec)

    def test_images(self, images_dir: Path) -> dict:
        """Test cases of a folder: case -> its channel files (case_0000.nii.gz, ...)."""
        return test_images(Path(images_dir))

    def check_test_images(self, images_dir: Path, dataset: str | None = None) -> list:
        """The raw-data checks on a folder of test images (`case_0000.nii.gz`, ...); with a
        dataset, also against its training images (DG308-DG310)."""
        training = self.training_profile(dataset) if dataset is not None else None
        return check_test_images(Path(images_dir), training)

    def set_groups(self, file: Path | str | None = None, regex: str | None = None,
                   dataset: str | None = None) -> dict:
        """Remember a case -> patient rule (a CSV/JSON file, or a regex over case ids) for a
        dataset (default: every dataset of this Workspace); later scans, splits and training
        gates use it (DG506, `splits rebalance` keeps patients together)."""
        names = [self.dataset(dataset).name] if dataset is not None else [d.name for d in self.datasets]
        rule = {}
        for name in names:
            rule = save_rule(self.manifest_dir, name, file=file, regex=regex)
        self.last = None
        return rule

    def groups(self, dataset: str | None = None) -> dict[str, str] | None:
        """case -> patient of a dataset's training cases, from its remembered rule (None: none)."""
        ds = self.dataset(dataset)
        view = self._scan_dataset(ds).views.get(ds.name)
        return None if view is None else view.groups

    def consistency(self, dataset: str | None = None) -> dict | None:
        """Orientation, per-channel intensity and test-vs-training spacing of a raw dataset, as
        the report draws them (checks.consistency.summary); None without raw images."""
        ds = self.dataset(dataset)
        if ds.raw is None:
            return None
        view = self._scan_dataset(ds).views.get(ds.name)
        return None if view is None else consistency_summary(view)

    def training_profile(self, dataset: str | None = None):
        """What a dataset's raw training images look like (consistency.TrainingProfile: axis
        codes, spacing, intensity ranges, voxel hashes), from an incremental scan; None
        without raw data."""
        ds = self.dataset(dataset)
        if ds.raw is None:
            return None
        res = self._scan_dataset(ds)
        view = res.views.get(ds.name)
        if view is None:
            return None
        spec = parse_spec(view.meta or {})
        return profile([f for f in raw_channels(view, spec.ending) if f.split == "Tr"], spec.channels)

    def check_predictions(self, source: Path, images_dir: Path, dataset_json: Path | None = None,
                          dataset: str | None = None, on_case=None):
        """A prediction folder or zip against its test images: (PredictionSet, DG601-DG606 findings)."""
        common = self.label_shares(dataset) if dataset is not None else {}
        ps = load_prediction_set(Path(source), Path(images_dir), dataset_json, common, on_case=on_case)
        return ps, run_checks(ps)

    def package_submission(self, ps, out_zip: Path, images_dir: Path, dataset_json: Path | None = None, *,
                           fix_dtype: bool = False, on_member=None, **provenance):
        """Write, verify and describe the archive: (ArchiveReport, manifest path)."""
        report = build_archive(ps, Path(out_zip), Path(images_dir), dataset_json, fix_dtype=fix_dtype,
                               common=ps.common, on_member=on_member)
        return report, write_manifest(report, source=ps.source, **provenance)

    def check_probabilities(self, folders: dict, expected: set | None = None):
        """An ensemble's inputs: (ProbabilityInputs, DG607 findings)."""
        pi = load_probability_inputs({k: Path(v) for k, v in folders.items()}, expected)
        return pi, run_checks(pi, "probabilities")

    def ensemble(self, pi, out_dir: Path, weights, postprocess: str = "none", on_case=None):
        """Weighted per-label ensemble of checked probability inputs into label maps."""
        return ensemble_folders(pi.folders, Path(out_dir), weights, postprocess, files=pi.files, on_case=on_case)

    def predict(self, model, dataset: str, images_dir: Path, work: Path, **kw):
        """One model's probabilities through nnUNetv2_predict (reused when nothing changed)."""
        return predict_model(model, dataset, Path(images_dir), Path(work), **kw)

    def predict_and_ensemble(self, models: list, images_dir: Path, work: Path, weights, postprocess: str = "none",
                             dataset: str | None = None, **kw):
        """`submit --model` up to the archive: check the test images, predict with every model,
        check the probabilities, ensemble (submit.pipeline.PipelineResult says where it stopped)."""
        name = self.dataset(dataset).name
        kw.setdefault("training", self.training_profile(name))
        return predict_and_ensemble(models, name, Path(images_dir), Path(work), weights, postprocess, **kw)

    def dataset_json(self, dataset: str | None = None) -> Path | None:
        """The dataset.json that declares a dataset's labels: raw's, else preprocessed's."""
        ds = self.dataset(dataset)
        for root in (ds.raw, ds.preprocessed):
            if root is not None and (Path(root) / "dataset.json").is_file():
                return Path(root) / "dataset.json"
        return None

    # --- evaluation and ensemble weights -----------------------------------------------------
    def models(self, specs: list[str] | None = None, dataset: str | None = None) -> list:
        """Trained models of a dataset (predict.ModelSpec), by `--model` spec; None: every
        cross-validation model under $nnUNet_results/<dataset>."""
        import os


        ds = self.dataset(dataset)
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

    def evaluate(self, specs: list[str] | None = None, pred_dir: Path | None = None, fold: int | None = None,
                 dataset: str | None = None, on_case=None):
        """Per case, fold and label Dice of models' validation predictions (or one loose folder
        given as fold `fold`), with DG802 on their case sets."""
        ds = self.dataset(dataset)
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
            for m in self.models(specs, ds.name):
                folds = {int(k): m.folder / f"fold_{k}" / "validation" for k in m.folds if k.isdigit()}
                sources += fold_sources(m.spec, folds, splits)
        return evaluate(ds.name, Path(ds.preprocessed) / "gt_segmentations", labels, sources, jobs=self.jobs,
                        on_case=on_case, spec=spec)

    def out_of_fold(self, specs: list[str], dataset: str | None = None, on_case=None):
        """Out-of-fold probabilities of the models on the cases they share, and the references."""
        ds = self.dataset(dataset)
        models = self.models(specs, ds.name)
        spec = load_spec(Path(ds.preprocessed) / "dataset.json")
        labels = foreground_labels(spec)
        dj, plans = nnunet_meta(models[0].folder)
        reader = writer_for(plans, dj)()
        folds = {m.spec: {int(k): m.folder / f"fold_{k}" / "validation" for k in m.folds if k.isdigit()}
                 for m in models}
        rule = region_rule(spec)
        oof = load_oof(folds, Path(ds.preprocessed) / "gt_segmentations", labels, reader, on_case,
                       jobs=self.jobs, ignore=spec.ignore_label, reduce=None if rule is None else RegionReducer(rule),
                       executor=self.executor if self.client is not None else None)
        oof.rule = rule
        return models, oof

    def load_weights(self, path: Path | None, models: list[str]):
        """An ensemble weights file (submit.ensemble.Weights); None: equal weights."""
        return Weights.load(path, models)

    def suggest_weights(self, oof, step: float = 0.1):
        """Per-label ensemble weights from out-of-fold probabilities, and DG803 on them:
        (evaluate.weights.Suggestion, findings)."""
        sug = search(oof, step=step) if oof.rule is None else search_regions(oof, oof.rule, step=step)
        single = {m: sug.single[m] for m in sug.models}
        found = check_weights(Weights.parse(sug.weights_file(), sug.models), single, oof.labels, "suggested weights")
        return sug, found

    def validation_calls(self, models: list, missing: dict, dataset: str | None = None) -> list:
        """nnU-Net's `--val --npz` call for each fold without out-of-fold probabilities:
        [(model, fold, TrainCall)]."""
        return validation_calls(self.dataset(dataset).name, models, missing)

    def run_validation(self, calls: list, trust: tuple = (), on_call=None) -> None:
        """Run those calls, each checkpoint proven plain data first."""
        run_validation(calls, trust, on_call)

    def check_weights(self, weights, specs: list[str], source: str, dataset: str | None = None):
        """DG803: weights against each model's out-of-fold Dice per label (from evaluate)."""
        ev = self.evaluate(specs, dataset=dataset)
        oof = {m: {lab: v["mean_dice"] for lab, v in ev.per_label(m).items()} for m in ev.models()}
        return check_weights(weights, oof, ev.labels, source)

    # --- training ------------------------------------------------------------------------
    @staticmethod
    def plan_and_preprocess(raw: Path, preprocessed: Path, dataset_id: int, configurations=("2d",)) -> None:
        """nnU-Net's own nnUNetv2_plan_and_preprocess of one raw dataset (how the demo makes its data)."""
        plan_and_preprocess(Path(raw), Path(preprocessed), dataset_id, tuple(configurations))

    def prepare_training(self, dataset: str, configuration: str, fold: int | str, **kw):
        """The gate (scanning through this Workspace) and nnU-Net's training call:
        (train.preflight.Preflight, train.launch.TrainCall). See train.session.prepare."""
        return prepare(dataset, configuration, fold, scan=self._scan_dataset, **kw)

    def _scan_dataset(self, ds, on_progress=None):
        """A scan of one layout.Dataset with this Workspace's manifest folder and executor."""
        other = Workspace(datasets=[ds], manifest_dir=self.manifest_dir, jobs=self.jobs,
                          executor=self.client or self.executor)
        other.pool = self.pool
        return other.scan(on_progress=on_progress)

    def train(self, preflight, call, patience: int | None = None, on_event=None):
        """Run a prepared training to its end and judge it (train.session.TrainResult)."""
        return train(preflight, call, patience, on_event)

    def training_runs(self, path: Path, patience: int | None = None) -> list:
        """Every training run under `path` read from nnU-Net's logs (train.logs.Run), judged
        (collapses, wasted epochs) with that patience."""
        return load_runs(Path(path), patience=DEFAULT_PATIENCE if patience is None else patience)

    def plot_training(self, runs: list, path: Path) -> Path:
        """Per-label pseudo Dice of runs as a PNG."""
        return plot_runs(runs, path)

    def folds_view(self, dataset: str | None = None):
        """The folds x labels table every face shows: of splits_final.json, or of the split
        nnU-Net will write when there is none yet. (context, splits or None, table or None, note)."""
        ctx = self.splits_context(dataset)
        note = None
        if not ctx.splits_path.exists():
            splits = nnunet_default_split(ctx.cases) if len(ctx.cases) >= NNUNET_FOLDS else None
            note = (f"no {ctx.splits_path.name} yet: shown is the unstratified split nnU-Net will write "
                    f"at the first training")
        else:
            try:
                splits = load_splits(ctx.splits_path)
            except (SplitError, OSError) as e:
                splits, note = None, f"{ctx.splits_path.name} is unusable: {e}"
        table = label_table(splits, ctx.case_labels, ctx.names) if splits else None
        return ctx, splits, table, note

    def doctor(self, configuration: str | None = None, plans: str = "nnUNetPlans", images: Path | None = None,
               device: str | None = None):
        """The environment report (doctor.report.DoctorReport): versions, devices, nnU-Net's env vars,
        memory, DG901-DG907; with a dataset named and `configuration`, the resource model too
        (peak RSS per preprocessing worker, the -np / -npp / -nps that fit)."""
        pre = None
        if self.targets and configuration:
            ds = self.dataset()
            if ds.preprocessed is None:
                raise UsageError(f"{ds.name} is not preprocessed (no plans): run nnUNetv2_plan_experiment -d "
                                 f"{ds.id} first")
            pre = ds.preprocessed
        return run_doctor(pre, configuration, plans=plans, images=images, device=device)
