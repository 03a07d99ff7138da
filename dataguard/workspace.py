"""Workspace: the one API every face calls (CLI, TUI, train/submit gates, report).

A Workspace is a set of datasets (found once from paths, ids, the nnU-Net env vars or the
project folder it runs in: engine.layout), where their manifests live (this user's state
folder, one folder per dataset, unless `manifest_dir` names one folder for all) and an
executor. It keeps what every face needs: it scans and verifies,
lists cases with their state, restores repairs and lists the quarantine. Everything else
hangs off a dataset handle (`dataset(name)`, handles/dataset.py), whose `.splits`,
`.repair`, `.train`, `.evaluate` and `.submit` own their methods; `repair`, `train`,
`evaluate` and `submit` here are the same for the whole workspace. Faces never reach past
it into scanner, repair or layout internals.

    ws = dataguard.Workspace(["/data/nnUNet_preprocessed/Dataset001_Heart"])
    res = ws.scan()
    for c in ws.cases():
        print(c.case, c.status, c.val_fold)
    ws.dataset("Dataset001_Heart").splits.folds_view()
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .engine import (
    scanner,  # scanner.scan at call time: tests and tools may wrap it
    stat_index,
)
from .engine.caseinfo import case_infos, from_summary
from .engine.executors import as_executor, check_mounts, connect, is_dask_client
from .engine.layout import discover, planned_configurations
from .engine import manifest_home
from .engine.manifest import DEFAULT_DIR
from .engine.verifier import verify
from .doctor.report import run_doctor
from .errors import LayoutError, UsageError
from .findings import Finding
from .handles.dataset import DatasetHandle
from .handles.evaluate import Evaluation
from .handles.repair import RepairRun, Repairs
from .handles.scope import deprecated
from .handles.splits import Splits
from .handles.submit import Submission
from .handles.train import Training
from .names import unknown
from .repair.restore import quarantine_list, restore

if TYPE_CHECKING:
    from concurrent.futures import Executor

__all__ = ["Workspace", "RepairRun", "DatasetHandle"]


class Workspace:
    def __init__(self, targets: list[str] | None = None, manifest_dir: Path | str | None = DEFAULT_DIR,
                 jobs: int | None = None, executor: Executor | None = None, *, datasets=None,
                 on_note: Callable[[str], None] | None = None):
        self.targets = list(targets) if targets else None
        # None: each dataset's own folder in this user's state folder (engine.manifest_home)
        self.manifest_dir = Path(manifest_dir) if manifest_dir is not None else None
        self.jobs = jobs
        self.notes: list[str] = []          # what a face should tell (an old ./manifests adopted)
        self._on_note = on_note

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

    # --- where each dataset's manifest lives ---------------------------------------------------
    def _manifest_home(self, ds) -> Path:
        """The folder of a dataset's manifest, stat index and groups rule (a layout.Dataset or
        its name): `manifest_dir` when one was given, else the dataset's state folder (an old
        `./manifests/<name>.json` of it is adopted there once, with a note)."""
        if isinstance(ds, str):
            ds = self._layout(ds)
        if self.manifest_dir is not None:
            return self.manifest_dir
        return manifest_home.state_dir(ds, note=self._note)

    def _note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)
            if self._on_note is not None:
                self._on_note(msg)

    def _manifests(self):
        """What scanner and verifier take as `manifest_dir`: the folder, or a function of the dataset."""
        return self.manifest_dir if self.manifest_dir is not None else self._manifest_home

    # --- datasets and scanning ---------------------------------------------------------------
    @property
    def datasets(self) -> list:
        """The discovered datasets (layout.Dataset), found once."""
        if self._datasets is None:

            self._datasets = discover(self.targets)
        return self._datasets

    def dataset(self, name: str | None = None) -> DatasetHandle:
        """One dataset, by name or id; with None, the only one (UsageError when ambiguous or
        unknown). Its `.splits`, `.repair`, `.train`, `.evaluate`, `.submit` work on it."""
        return DatasetHandle(self, self._layout(name))

    def _layout(self, name: str | None = None):
        """The layout.Dataset `dataset(name)` is for."""
        ds = self.datasets
        if name is None:
            if len(ds) != 1:
                raise UsageError(f"{len(ds)} datasets ({', '.join(d.name for d in ds)}): name one")
            return ds[0]
        for d in ds:
            if d.name == name or (name.isdigit() and d.id == int(name)):
                return d
        raise UsageError(unknown("dataset", name, [d.name for d in ds], "here"))

    def _check_mounts(self) -> None:
        """With a Dask cluster: a smoke task first, so a missing mount is one clear error."""
        if self.client is not None and not getattr(self, "_mounts_ok", False):

            check_mounts(self.client, [r for d in self.datasets for r in (d.raw, d.preprocessed)])
            self._mounts_ok = True

    def scan(self, full: bool = False, select=None, ignore=None, on_progress=None,
             cancel: threading.Event | None = None, write_manifest: bool = True):
        """Scan every dataset (incrementally, unless full). Returns and remembers a ScanResult."""
        self._check_mounts()

        res = scanner.scan(datasets=self.datasets, manifest_dir=self._manifests(), full=full, jobs=self.jobs,
                   select=select, ignore=ignore, on_progress=on_progress, write_manifest=write_manifest,
                   executor=self.executor, cancel=cancel, pool=self.pool)
        if not res.cancelled and not select and not ignore:
            self.last = res
        return res

    def verify(self, select=None, ignore=None, on_progress=None, cancel: threading.Event | None = None):
        """Re-hash every file against the manifest (DG701-DG703); never updates it."""
        self._check_mounts()

        return verify(datasets=self.datasets, manifest_dir=self._manifests(), jobs=self.jobs,
                      select=select, ignore=ignore, on_progress=on_progress, executor=self.executor,
                      cancel=cancel)

    def recorded(self) -> tuple[list, list, float | None]:
        """What the last scan recorded, read without touching the data: (cases, findings,
        when). Cases come without their file lists; a face shows these at once, then scans."""
        cases, findings, when = [], [], None
        for ds in self.datasets:
            got = stat_index.recorded(manifest_home.manifest_file(self._manifest_home(ds), ds.name))
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

    # --- repair ------------------------------------------------------------------------------
    @property
    def repair(self) -> Repairs:
        """Repairs of every dataset here: `.plan()`, `.apply(plan)`, `.run()` (scan, plan,
        confirm, apply, rescan). `ws.dataset(name).repair` is the same for one dataset."""
        return Repairs(self)

    def restore(self, run_id: str | None = None) -> list:
        """Undo a repair run (default: the latest on these datasets), byte for byte. With a run
        id and no dataset named, the run's dataset is found: among the datasets of the roots
        (env vars, the project folder it runs in), else by the manifests this user keeps."""
        reports = restore(self._restore_datasets(run_id), run_id=run_id)
        self.last = None
        return reports

    def _restore_datasets(self, run_id: str | None) -> list:
        if self.targets is not None or not run_id:
            return self.datasets
        try:
            here = [d for d in self.datasets if manifest_home.holds_run(d.roots().values(), run_id)]
        except LayoutError:
            here = []
        if here:
            return here
        found = manifest_home.find_run(run_id, self.manifest_dir)
        if not found:
            where = (f"the manifests in {self.manifest_dir}" if self.manifest_dir is not None
                     else "any dataset dataguard has scanned")
            raise UsageError(f"no repair run {run_id!r} here\n  nor in {where}:\n"
                             f"  name its dataset: dataguard restore PATH --run {run_id}")
        dsets = discover([r for roots in found for r in roots.values() if Path(r).is_dir()])
        return [d for d in dsets if manifest_home.holds_run(d.roots().values(), run_id)]

    def quarantine(self) -> list:
        """What repairs moved aside, per run (repair.restore.Held)."""
        return quarantine_list(self.datasets)

    # --- the features, for the whole workspace (a method that needs a dataset takes the only one)
    @property
    def train(self) -> Training:
        """Training (`ws.train.runs(path)`, `.plot`, `.run`, `.prepare`); per dataset:
        `ws.dataset(name).train`."""
        return Training(self)

    @property
    def evaluate(self) -> Evaluation:
        """Evaluation and ensemble weights; per dataset: `ws.dataset(name).evaluate`."""
        return Evaluation(self)

    @property
    def submit(self) -> Submission:
        """Test images, predictions, ensembles, the archive, judged without a dataset; per
        dataset (against its training images and label shares): `ws.dataset(name).submit`."""
        return Submission(self)

    def _scan_dataset(self, ds, on_progress=None):
        """A scan of one layout.Dataset with this Workspace's manifest folder and executor (not
        remembered as `last`: that is the scan of every dataset)."""
        if self.client is not None:
            check_mounts(self.client, [r for r in (ds.raw, ds.preprocessed)])
        return scanner.scan(datasets=[ds], manifest_dir=self._manifests(), full=False, jobs=self.jobs,
                            select=None, ignore=None, on_progress=on_progress, write_manifest=True,
                            executor=self.executor, cancel=None, pool=self.pool)

    def doctor(self, configuration: str | None = None, plans: str = "nnUNetPlans", images: Path | None = None,
               device: str | None = None):
        """The environment report (doctor.report.DoctorReport): versions, devices, nnU-Net's env vars,
        memory, DG901-DG907; with a dataset named and `configuration`, the resource model too
        (peak RSS per preprocessing worker, the -np / -npp / -nps that fit)."""
        pre = None
        if self.targets:
            self.datasets             # a dataset named that does not exist: say so, with the names
        if self.targets and configuration:
            ds = self._layout()
            if ds.preprocessed is None:
                raise UsageError(f"{ds.name} is not preprocessed (no plans): run nnUNetv2_plan_experiment -d "
                                 f"{ds.id} first")
            pre = ds.preprocessed
            planned = planned_configurations(pre)
            idents = sorted({pc.plans_file.stem for pc in planned})
            if idents and plans not in idents:
                raise UsageError(unknown("plans", plans, idents, f"in {ds.name}"))
            have = [pc.name for pc in planned if pc.plans_file.stem == plans]
            if have and configuration not in have:      # no plans at all: the doctor says to plan first
                raise UsageError(unknown("configuration", configuration, have, f"in {plans}.json of {ds.name}"))
        return run_doctor(pre, configuration, plans=plans, images=images, device=device)

    # --- the 0.3 methods, kept one release (DeprecationWarning; CHANGELOG 0.3.0) -----------------
    def __getattr__(self, name: str):
        old = _DEPRECATED.get(name)
        if old is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        new, fn = old

        def alias(*args, **kw):
            deprecated(f"{name}()", new)
            return fn(self, *args, **kw)
        alias.__name__ = name
        return alias


def _scoped(ws: Workspace, dataset: str | None):
    """What a 0.3 method meant with `dataset=`: None the workspace, else that dataset."""
    return ws if dataset is None else ws.dataset(dataset)


# old name -> (what to call now, the old signature mapped onto it)
_DEPRECATED = {
    "load_slice": ("ws.dataset(name).load_slice(case, ...)",
                   lambda ws, dataset, case, *a, **kw: ws.dataset(dataset).load_slice(case, *a, **kw)),
    "plan": ("ws.repair.plan()", lambda ws, *a, **kw: ws.repair.plan(*a, **kw)),
    "apply": ("ws.repair.apply(plan)", lambda ws, *a, **kw: ws.repair.apply(*a, **kw)),
    "label_names": ("ws.dataset(name).label_names()", lambda ws, dataset=None: ws.dataset(dataset).label_names()),
    "plan_rebalance": ("ws.dataset(name).splits.plan_rebalance()",
                       lambda ws, dataset=None: ws.dataset(dataset).splits.plan_rebalance()),
    "splits_context": ("ws.dataset(name).splits.context()",
                       lambda ws, dataset=None: ws.dataset(dataset).splits.context()),
    "write_splits": ("ws.dataset(name).splits.write(splits)",
                     lambda ws, dataset, splits, dry_run=False: ws.dataset(dataset).splits.write(splits, dry_run)),
    "folds_view": ("ws.dataset(name).splits.folds_view()",
                   lambda ws, dataset=None: ws.dataset(dataset).splits.folds_view()),
    "groups": ("ws.dataset(name).splits.groups()", lambda ws, dataset=None: ws.dataset(dataset).splits.groups()),
    "set_groups": ("ws.dataset(name).splits.set_groups(file, regex)",
                   lambda ws, file=None, regex=None, dataset=None:
                   (Splits(ws) if dataset is None else ws.dataset(dataset).splits).set_groups(file, regex)),
    "consistency": ("ws.dataset(name).consistency()", lambda ws, dataset=None: ws.dataset(dataset).consistency()),
    "dataset_json": ("ws.dataset(name).dataset_json()",
                     lambda ws, dataset=None: ws.dataset(dataset).dataset_json()),
    "label_shares": ("ws.dataset(name).submit.label_shares()",
                     lambda ws, dataset=None: ws.dataset(dataset).submit.label_shares()),
    "training_profile": ("ws.dataset(name).submit.training_profile()",
                         lambda ws, dataset=None: ws.dataset(dataset).submit.training_profile()),
    "test_images": ("ws.submit.test_images(images_dir)", lambda ws, images_dir: ws.submit.test_images(images_dir)),
    "check_test_images": ("ws.dataset(name).submit.check_test_images(images_dir)",
                          lambda ws, images_dir, dataset=None:
                          _scoped(ws, dataset).submit.check_test_images(images_dir)),
    "check_predictions": ("ws.dataset(name).submit.check_predictions(...)",
                          lambda ws, source, images_dir, dataset_json=None, dataset=None, on_case=None:
                          _scoped(ws, dataset).submit.check_predictions(source, images_dir, dataset_json,
                                                                         on_case=on_case)),
    "package_submission": ("ws.submit.package(...)", lambda ws, *a, **kw: ws.submit.package(*a, **kw)),
    "check_probabilities": ("ws.submit.check_probabilities(folders)",
                            lambda ws, *a, **kw: ws.submit.check_probabilities(*a, **kw)),
    "ensemble": ("ws.submit.ensemble(...)", lambda ws, *a, **kw: ws.submit.ensemble(*a, **kw)),
    "predict": ("ws.dataset(name).submit.predict(model, images_dir, work)",
                lambda ws, model, dataset, images_dir, work, **kw:
                ws.dataset(dataset).submit.predict(model, images_dir, work, **kw)),
    "predict_and_ensemble": ("ws.dataset(name).submit.predict_and_ensemble(...)",
                             lambda ws, models, images_dir, work, weights, postprocess="none", dataset=None, **kw:
                             _scoped(ws, dataset).submit.predict_and_ensemble(models, images_dir, work, weights,
                                                                              postprocess, **kw)),
    "models": ("ws.dataset(name).evaluate.models(specs)",
               lambda ws, specs=None, dataset=None: _scoped(ws, dataset).evaluate.models(specs)),
    "out_of_fold": ("ws.dataset(name).evaluate.out_of_fold(specs)",
                    lambda ws, specs, dataset=None, on_case=None:
                    _scoped(ws, dataset).evaluate.out_of_fold(specs, on_case=on_case)),
    "load_weights": ("ws.evaluate.load_weights(path, models)",
                     lambda ws, *a, **kw: ws.evaluate.load_weights(*a, **kw)),
    "suggest_weights": ("ws.evaluate.suggest_weights(oof)",
                        lambda ws, *a, **kw: ws.evaluate.suggest_weights(*a, **kw)),
    "validation_calls": ("ws.dataset(name).evaluate.validation_calls(models, missing)",
                         lambda ws, models, missing, dataset=None:
                         _scoped(ws, dataset).evaluate.validation_calls(models, missing)),
    "run_validation": ("ws.evaluate.run_validation(calls)", lambda ws, *a, **kw: ws.evaluate.run_validation(*a, **kw)),
    "check_weights": ("ws.dataset(name).evaluate.check_weights(weights, specs, source)",
                      lambda ws, weights, specs, source, dataset=None:
                      _scoped(ws, dataset).evaluate.check_weights(weights, specs, source)),
    "prepare_training": ("ws.dataset(name).train.prepare(configuration, fold)",
                         lambda ws, dataset, configuration, fold, **kw:
                         ws.train.prepare(configuration, fold, dataset=dataset, **kw)),
    "training_runs": ("ws.train.runs(path)", lambda ws, *a, **kw: ws.train.runs(*a, **kw)),
    "plot_training": ("ws.train.plot(runs, path)", lambda ws, *a, **kw: ws.train.plot(*a, **kw)),
    "plan_and_preprocess": ("ws.train.plan_and_preprocess(...)",
                            lambda ws, *a, **kw: Training.plan_and_preprocess(*a, **kw)),
}
