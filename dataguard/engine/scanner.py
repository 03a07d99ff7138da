"""Scan orchestration: discover → manifest decides what to read → checks → ScanResult.

Where the per-file checks run (in-process, threads, a spawn pool, Dask) and how workers
are tuned is `engine/executors.py`'s job; its names are re-exported here for old imports.

The one engine behind the CLI, the TUI and the gates. It never prints; progress goes
to an optional callback `on_progress(done_bytes, total_bytes, current_rel)`.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from _blake2 import blake2b  # hashlib would load OpenSSL's _hashlib: 3 ms per start
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ..version import __version__
from ..checks import Selection, versions
from ..checks import get as get_check
from ..checks.base import FileResult, FileTask
from ..checks.cascades import fold as fold_cascades
from ..checks.cases import DatasetView
from ..checks.files import check_batch
from ..findings import Finding, Severity, code_matches, finding
from . import stat_index
from .caseinfo import summary, view_cases
from .executors import (  # noqa: F401  (re-exported: executor choice used to live here)
    BATCH_BYTES,
    BATCH_FILES,
    CLUSTER_BATCH_BYTES,
    DECODED_KINDS,
    PARALLEL_MIN_AVG_BYTES,
    PARALLEL_MIN_BYTES,
    PARALLEL_MIN_FILES,
    PROCESS_MIN_BYTES,
    PROCESS_MIN_FILES,
    THREAD_BATCH_BYTES,
    THREAD_VARS,
    _one_thread_per_worker,
    _tune_malloc,
    batches,
    choose_pool,
    default_jobs,
    make_executor,
    on_cluster,
)
from .groups_store import groups_for, rule_digest
from .layout import Dataset, discover, planned_configurations
from .manifest import DEFAULT_DIR, Manifest, gc_paused, gc_release, json_canonical
from .manifest_home import dir_for, manifest_file
from .own_state import foreign_state
from .walk import list_files

if TYPE_CHECKING:
    from concurrent.futures import Executor

ProgressFn = Callable[[int, int, str], None]


@dataclass
class ScanStats:
    files: int = 0
    checked: int = 0
    reused: int = 0
    bytes_checked: int = 0
    vanished: int = 0
    seconds: float = 0.0
    read: list[str] = field(default_factory=list)   # "<dataset>/<rel>" of every file read this run
    same_content: int = 0     # read, found byte-identical to the manifest: only hashed, not re-checked
    dataset_checks_reused: int = 0   # dataset-level checks whose recorded findings still held
    indexed: int = 0          # datasets answered by the stat index (nothing decoded, nothing read)
    not_recorded: list[str] = field(default_factory=list)   # manifests that could not be written, and why


@dataclass
class ScanResult:
    datasets: list[Dataset]
    findings: list[Finding]
    stats: ScanStats = field(default_factory=ScanStats)
    views: dict[str, DatasetView] = field(default_factory=dict)   # per dataset, for dataset-level tools
    cancelled: bool = False         # the scan was stopped early: findings are incomplete

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def by_case(self) -> dict[tuple[str, str | None], list[Finding]]:
        """Findings grouped by (dataset-relative folder, case) for case-centred views."""
        out: dict = {}
        for f in self.findings:
            out.setdefault((f.path.rsplit("/", 1)[0], f.case), []).append(f)
        return out

    def summary(self) -> dict:
        by_code: dict[str, int] = {}
        for f in self.findings:
            by_code[f.code] = by_code.get(f.code, 0) + 1
        s = self.stats
        return {"errors": self.count(Severity.ERROR), "warnings": self.count(Severity.WARNING),
                "info": self.count(Severity.INFO), "by_code": dict(sorted(by_code.items())),
                "files": s.files, "checked": s.checked, "reused": s.reused,
                "bytes_checked": s.bytes_checked, "seconds": round(s.seconds, 3)}

    def to_dict(self) -> dict:

        return {
            "version": 1,
            "dataguard": __version__,
            "roots": [{"dataset": d.name, "raw": str(d.raw) if d.raw else None,
                       "preprocessed": str(d.preprocessed) if d.preprocessed else None}
                      for d in self.datasets],
            "findings": [f.to_dict() for f in self.findings],
            "summary": self.summary(),
        }


def filter_findings(findings: Iterable[Finding], select: list[str] | None,
                    ignore: list[str] | None) -> list[Finding]:
    out = [f for f in findings if (not select or code_matches(f.code, select))
           and not (ignore and code_matches(f.code, ignore))]
    return sorted(out, key=lambda f: (f.dataset or "", f.path, f.code, f.message))




def run_file_checks(tasks: list[FileTask], sizes: list[int] | None = None, *,
                    executor: Executor | None = None, jobs: int | None = None,
                    on_progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                    worker: Callable[[list[FileTask]], list[FileResult]] = check_batch,
                    force_parallel: bool = False, pool: str = "thread") -> list[FileResult | None]:
    """Run a per-file batch function over tasks; results come back in the order of `tasks`.

    executor: any concurrent.futures.Executor (threads, a spawn pool, a Dask client's
    executor). None: in-process for small work, else a thread pool of `jobs` threads, or
    with pool="auto" a spawn pool of `jobs` processes past PROCESS_MIN_BYTES / _FILES (the
    caller's script then needs an `if __name__ == "__main__":` guard; the CLI has one).
    cancel: set it to stop between batches; pending batches are cancelled and their
    results are None.
    """
    sizes = sizes if sizes is not None else [0] * len(tasks)
    total = sum(sizes)
    results: list[FileResult | None] = [None] * len(tasks)
    order = sorted(range(len(tasks)), key=lambda i: -sizes[i])   # biggest first: busy to the end
    done = 0

    def finish(group, out):
        nonlocal done
        for i, r in zip(group, out):
            results[i] = r
            done += sizes[i]
        if on_progress:
            on_progress(done, total, tasks[group[-1]].rel)

    jobs = jobs or default_jobs()
    heavy = sum(1 for t in tasks if t.roundtrip and (t.checks is None or "roundtrip-case" in t.checks))
    choice = choose_pool([t.kind for t in tasks], sizes, executor=executor, jobs=jobs,
                         force_parallel=force_parallel, pool=pool, heavy=heavy)
    parallel, kind, own = choice.parallel, choice.kind, choice.own
    groups = batches(order, sizes, *choice.batch)
    if not parallel:
        for g in groups:
            if cancel is not None and cancel.is_set():
                break
            finish(g, worker([tasks[i] for i in g]))
        return results
    from concurrent.futures import FIRST_COMPLETED, wait

    ex = make_executor(kind, jobs) if own else executor
    try:
        futs = {ex.submit(worker, [tasks[i] for i in g]): g for g in groups}
        pending = set(futs)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in finished:
                if not fut.cancelled():
                    finish(futs[fut], fut.result())
            if cancel is not None and cancel.is_set():
                for fut in pending:
                    fut.cancel()
                wait(pending)      # running batches end at their next file boundary at most
                for fut in pending:
                    if not fut.cancelled() and fut.exception() is None:
                        finish(futs[fut], fut.result())
                break
    finally:
        if own:
            ex.shutdown(wait=True, cancel_futures=True)
    return results


def remote_check_batch(tasks: list[FileTask]) -> list[FileResult]:
    """check_batch on a Dask worker: a file it cannot read is tagged with the worker's host."""
    import socket

    _tune_malloc()
    out = check_batch(tasks)
    host = socket.gethostname()
    for r in out:
        if r.by_check.get("read"):
            r.by_check["read"] = [dataclasses.replace(f, message=f"{f.message} [on Dask worker {host}]")
                                  for f in r.by_check["read"]]
    return out


def _blame_the_worker(task: FileTask, res: FileResult) -> None:
    """A worker could not read a file the client can: say so (the mounts differ), rather than
    report the file as broken. `read` results are never reused, so the manifest stays clean."""
    try:
        with open(task.path, "rb") as f:
            f.read(1)
    except OSError:
        return                                     # the client cannot read it either: a real finding
    res.by_check["read"] = [dataclasses.replace(
        f, code="DG001", fix=None,
        message=f"a Dask worker cannot read this file but the client can: the workers' mounts or permissions "
                f"differ from the client's ({f.message})") for f in res.by_check["read"]]


def _plans_by_config(ds: Dataset) -> dict[str, dict]:
    """What of the plans a configuration folder's content depends on (DG209 staleness)."""
    if ds.preprocessed is None:
        return {}
    return {pc.folder: {"configuration": pc.conf,
                        "transpose_forward": pc.plans.get("transpose_forward"),
                        "intensity": pc.plans.get("foreground_intensity_properties_per_channel")}
            for pc in planned_configurations(ds.preprocessed)}


def run_dataset_check(check, view: DatasetView) -> tuple[list[Finding], bool]:
    """(findings, finished): an exception becomes DG001 for the dataset and the scan goes on;
    finished is False then (that DG001 is not cached)."""
    try:
        return list(check.run(view)), True
    except Exception as e:  # noqa: BLE001 - malformed input must never end a scan
        where = "preprocessed" if not view.has_raw else "raw"
        return [finding("DG001", where, f"dataset check '{check.name}' could not finish: "
                        f"{type(e).__name__}: {e}")], False


# kinds whose mtime (not only content) a dataset check reads: DG206 "stale .npy older than its .npz"
MTIME_KINDS = frozenset({"npz", "npy"})


def dataset_signature(view: DatasetView, vers: dict[str, int]) -> bytes:
    """A digest of everything dataset checks read, snapshots aside: the file list, each
    file's content hash (its stat where it was not hashed), which checks' results and facts
    it carries, any per-file findings, dataset.json, the plans, the roots and every check
    version. Kind, case and place of a file follow from its path, dataset.json and the
    configuration folders, all in the digest. Equal digests: equal inputs, same findings.

    ~0.1 s of CPU for 30,000 files; running the dataset checks on them costs ~1 s.
    """
    h = blake2b(digest_size=20)
    h.update(json_canonical({"dataguard": __version__, "versions": vers, "meta": view.meta, "groups": view.groups,
                             "plans": view.plans, "configs": view.config_names, "raw": view.raw_root,
                             "preprocessed": view.preprocessed_root, "has_raw": view.has_raw}))
    names: dict[tuple, str] = {}
    lines = []
    add = lines.append
    get = view.results.get
    for t in view.tasks:
        r = get(t.rel)
        if r is None:
            add(f"{t.rel}|-")
            continue
        by = r.by_check
        key = tuple(by)
        checks = names.get(key)
        if checks is None:
            checks = names[key] = ",".join(sorted(key))
        if r.blake3 is None:
            add(f"{t.rel}|{r.size}:{r.mtime_ns}:{r.inode}|{checks}")
        elif t.kind in MTIME_KINDS:
            add(f"{t.rel}|{r.blake3}:{r.mtime_ns}|{checks}")
        else:
            add(f"{t.rel}|{r.blake3}|{checks}")
        for fs in by.values():
            if fs:
                lines.extend(f"  {f.code}|{f.severity}|{f.path}|{f.message}" for f in fs)
    h.update("\n".join(lines).encode("utf-8", "surrogatepass"))
    return h.digest()


def _check_signature(common: bytes, check, snapshots: bytes | None) -> str:
    h = blake2b(common, digest_size=16)
    h.update(f"|{check.name}|{check.version}|".encode())
    if snapshots is not None:
        h.update(snapshots)
    return h.hexdigest()


def run_dataset_checks(names, view: DatasetView, man: Manifest, vers: dict[str, int],
                       snapshots_live: bool) -> tuple[list[Finding], int]:
    """Run (or reuse from the manifest) the dataset checks `names` on one dataset.

    Returns (findings, how many were reused). A check's findings are reused when its input
    signature is the recorded one; a check that raised is not recorded. snapshots_live:
    view.snapshots is the manifest's own dict (changes to it must be saved).
    """
    common = None
    snap_digest = None
    out: list[Finding] = []
    reused = 0
    for name in names:
        check = get_check(name)
        uses_snaps = bool(getattr(check, "uses_snapshots", False))
        if common is None:
            common = dataset_signature(view, vers)
        if uses_snaps and snap_digest is None:
            snap_digest = json_canonical(view.snapshots)
        sig = _check_signature(common, check, snap_digest if uses_snaps else None)
        if not (name == "raw-cases" and isinstance(view.meta.get("dataset"), dict)):
            # (raw-cases looks on disk for the files an explicit 'dataset' list names: not cached)
            hit = man.dataset_findings(name, check.version, sig)
            if hit is not None:
                out += hit
                reused += 1
                continue
        before = {k: dict(v) if isinstance(v, dict) else v for k, v in view.snapshots.items()} \
            if uses_snaps else None
        found, finished = run_dataset_check(check, view)
        out += found
        if uses_snaps and view.snapshots != before:
            snap_digest = json_canonical(view.snapshots)
            # it changed the snapshots: record against what it left (a fixed point, see registry)
            sig = _check_signature(common, check, snap_digest)
            if snapshots_live:
                man.dirty = True
        if finished:
            man.record_dataset_check(name, check.version, sig, found)
    for gone in [n for n in man.dataset_checks if n not in vers]:
        del man.dataset_checks[gone]
        man.dirty = True
    return out, reused


def _context_keys(tasks: list[FileTask]):
    """task -> task.context_key(), without formatting the same labels tuple 30,000 times.

    Checked against FileTask.context_key on the first task; falls back to it if they differ.
    """
    cache: dict = {}

    def key(t: FileTask) -> str:
        if t.roundtrip is not None or t.pair is not None:   # DG405's plans, DG406's label: digests
            return t.context_key()
        lab = cache.get(t.labels)
        if lab is None:
            lab = cache[t.labels] = str(t.labels)
        return f"{t.kind}|{t.where}|{t.case}|{lab}"
    if tasks and key(tasks[0]) != tasks[0].context_key():
        return FileTask.context_key
    return key


@dataclass(frozen=True)
class ScanOptions:
    """How to scan (everything but what): the keyword options of `scan`.

    manifest_dir: where the per-dataset manifests live: a folder for all, a function of the
    dataset, or None for this user's state folder (engine.manifest_home.dir_for).
    full: ignore recorded results and re-read every file a selected check covers.
    jobs: workers for the per-file checks (None: one per CPU).
    select/ignore: codes or prefixes; checks whose codes are all excluded do not run, and
    files no remaining check covers are not read.
    on_progress: `on_progress(done_bytes, total_bytes, current_rel)`.
    write_manifest: False leaves every file on disk as it was, the manifest included.
    executor: any concurrent.futures.Executor (a Dask client's, say); None: our own.
    cancel: a threading.Event; when set, the scan stops between files, records what it
    finished and returns a result with `cancelled=True` (no dataset-level checks).
    force_parallel: use the pool even for small work (tests, benchmarks).
    pool: "thread", or "auto" for a spawn pool on big scans (see engine.executors.choose_pool).
    """
    manifest_dir: Path | str | None = DEFAULT_DIR
    full: bool = False
    jobs: int | None = None
    select: list[str] | None = None
    ignore: list[str] | None = None
    on_progress: ProgressFn | None = None
    write_manifest: bool = True
    executor: Executor | None = None
    cancel: threading.Event | None = None
    force_parallel: bool = False
    pool: str = "thread"


def scan(targets: list[str] | None = None, *, datasets: list[Dataset] | None = None,
         options: ScanOptions | None = None, **kw) -> ScanResult:
    """Scan datasets and return every finding. Reads only what the manifest cannot vouch for.

    targets: paths or dataset ids as on the command line (None: the nnU-Net env vars);
    datasets: already discovered `Dataset`s instead. How to scan is a `ScanOptions`, given
    whole (`options=`) or field by field as keywords (`scan(t, full=True, jobs=2)`); keywords
    override the fields of `options`. An unknown keyword is a TypeError.
    The manifest is only rewritten when something in it changed.
    """
    opts = options if options is not None else ScanOptions()
    if kw:
        unknown = sorted(set(kw) - {f.name for f in dataclasses.fields(ScanOptions)})
        if unknown:
            raise TypeError(f"scan() got unexpected keyword argument(s): {', '.join(unknown)}")
        opts = dataclasses.replace(opts, **kw)
    try:
        return _scan(targets, datasets, opts)
    finally:
        gc_release()


class LazyViews(dict):
    """Dataset views that are only built when a face asks for them.

    A rescan answered by the stat index never decodes the manifest; the CLI's `scan`
    never needs views. `Workspace.cases()`, repair plans and split tables do: on first
    access the loader rebuilds them from the manifest (every file reused, nothing read).
    """
    def __init__(self, views: dict, loader: Callable[[], dict] | None):
        super().__init__(views)
        self._loader = loader

    def _load(self) -> None:
        if self._loader is not None:
            load, self._loader = self._loader, None
            self.update(load())

    def __getitem__(self, k):
        self._load()
        return super().__getitem__(k)

    def __contains__(self, k):
        self._load()
        return super().__contains__(k)

    def __iter__(self):
        self._load()
        return super().__iter__()

    def __len__(self):
        self._load()
        return super().__len__()

    def get(self, k, default=None):
        self._load()
        return super().get(k, default)

    def items(self):
        self._load()
        return super().items()

    def keys(self):
        self._load()
        return super().keys()

    def values(self):
        self._load()
        return super().values()


def _scan(targets, datasets, opts: ScanOptions) -> ScanResult:
    """Datasets the stat index vouches for are answered from it; the rest are scanned."""
    manifest_dir, full, select, ignore = opts.manifest_dir, opts.full, opts.select, opts.ignore
    write_manifest, cancel = opts.write_manifest, opts.cancel
    t0 = time.perf_counter()
    dsets = datasets if datasets is not None else discover(targets)
    hits: dict[str, object] = {}
    if not full and not (cancel is not None and cancel.is_set()):
        vers = versions()
        for ds in dsets:
            home = dir_for(manifest_dir, ds)
            key = stat_index.key_of(ds, vers, select, ignore, rule_digest(home, ds.name))
            hit = stat_index.try_rescan(ds, manifest_file(home, ds.name), key, write_manifest)
            if hit is not None:
                hits[ds.name] = hit
    rest = [ds for ds in dsets if ds.name not in hits]
    res = _full_scan(rest, opts) if rest else ScanResult(datasets=[], findings=[])
    state = _state_findings(dsets, select, ignore)     # never in the index: .dataguard is not walked
    if not hits:
        res.findings += state
        return res
    from_index = [ds for ds in dsets if ds.name in hits]
    findings = list(res.findings) + state
    stats = res.stats
    for name, hit in hits.items():
        findings += hit.findings
        stats.files += hit.files
        stats.reused += hit.files - len(hit.hashed)
        stats.checked += len(hit.hashed)
        stats.same_content += len(hit.hashed)
        stats.bytes_checked += hit.bytes_hashed
        stats.read += [f"{name}/{rel}" for rel in hit.hashed]
    stats.read.sort()
    stats.indexed = len(hits)
    stats.seconds = time.perf_counter() - t0

    def load_views() -> dict:
        return _full_scan(from_index, dataclasses.replace(
            opts, full=False, on_progress=None, write_manifest=False, cancel=None, force_parallel=False,
            pool="thread")).views

    order = {ds.name: i for i, ds in enumerate(dsets)}
    return ScanResult(datasets=sorted(rest + from_index, key=lambda d: order[d.name]),
                      findings=filter_findings(findings, select, ignore), stats=stats,
                      views=LazyViews(res.views, load_views), cancelled=res.cancelled)


def _state_findings(dsets, select, ignore) -> list[Finding]:
    """DG106 for each dataset folder whose `.dataguard/` is not this user's dataguard's."""
    out = []
    for ds in dsets:
        for part, root in ds.roots().items():
            out += [dataclasses.replace(f, dataset=ds.name) for f in foreign_state(Path(root), part)]
    return filter_findings(out, select, ignore)


def _full_scan(dsets, opts: ScanOptions) -> ScanResult:
    manifest_dir, full, jobs, select, ignore = opts.manifest_dir, opts.full, opts.jobs, opts.select, opts.ignore
    on_progress, write_manifest, executor, cancel = opts.on_progress, opts.write_manifest, opts.executor, opts.cancel
    force_parallel, pool = opts.force_parallel, opts.pool

    t0 = time.perf_counter()
    sel = Selection.of(select, ignore)
    vers = versions()
    stats = ScanStats()
    plan = []   # (dataset, files, manifest, per-task result or None)
    todo: list[FileTask] = []
    sizes: list[int] = []
    needed_by_kind: dict[tuple[str, str], tuple[str, ...]] = {}
    hash_all = sel.hash_all
    with gc_paused():       # ~10 small objects per file, none cyclic: no GC passes over them
        for ds in dsets:
            files = list_files(ds)
            man = Manifest.load(dir_for(manifest_dir, ds), ds.name)
            man.set_roots({k: str(v) for k, v in ds.roots().items()})
            slots: list[FileResult | None] = [None] * len(files.tasks)
            ctx = _context_keys(files.tasks)
            for i, (t, st) in enumerate(zip(files.tasks, files.stats)):
                needed = needed_by_kind.get((t.kind, t.where))
                if needed is None:
                    needed = needed_by_kind[(t.kind, t.where)] = sel.for_kind(t.kind, t.where)
                hit, task = man.plan(t, st, needed, vers, full=full, hash_all=hash_all, context=ctx(t))
                if hit is not None:
                    slots[i] = hit
                else:
                    todo.append(dataclasses.replace(task, dataset=ds.name))
                    sizes.append(st.st_size if st is not None else 0)
            plan.append((ds, files, man, slots))
    remote = on_cluster(executor)
    fresh_list = run_file_checks(todo, sizes, executor=executor, jobs=jobs, on_progress=on_progress,
                                 cancel=cancel, force_parallel=force_parallel, pool=pool,
                                 worker=remote_check_batch if remote else check_batch)
    if remote:
        for t, r in zip(todo, fresh_list):
            if r is not None and r.by_check.get("read"):
                _blame_the_worker(t, r)
    fresh: dict[tuple[str, str], FileResult] = {}
    for t, r, n in zip(todo, fresh_list, sizes):
        if r is not None:
            fresh[(t.dataset, t.rel)] = r
            stats.checked += 1
            stats.bytes_checked += n
            stats.read.append(f"{t.dataset}/{t.rel}")
    stats.read.sort()
    cancelled = cancel is not None and cancel.is_set()
    findings: list[Finding] = []
    views: dict[str, DatasetView] = {}
    with gc_paused():
        for ds, files, man, slots in plan:
            mine: list[Finding] = []
            results: dict[str, FileResult] = {}
            n_reused = 0
            for t, r in zip(files.tasks, slots):
                if r is None:
                    r = fresh.get((ds.name, t.rel))
                    if r is None:
                        continue           # cancelled before it was read
                    if r.vanished:
                        stats.vanished += 1
                        man.forget(t.rel)
                        continue
                    if r.same_content:
                        stats.same_content += 1
                    r = man.merge(t, r, vers)
                    if r.blake3 is not None or r.by_check:
                        man.record(t, r, vers)
                else:
                    n_reused += 1
                results[t.rel] = r
                for fs in r.by_check.values():
                    if fs:
                        mine += fs
            if not cancelled:
                for gone in [rel for rel in man.files if rel not in results]:
                    man.forget(gone)
            stats.files += len(results)
            stats.reused += n_reused
            groups, groups_key = groups_for(man.path.parent, ds.name, {t.case for t in files.tasks if t.case})
            view = DatasetView(
                name=ds.name, tasks=files.tasks, results=results, meta=files.meta, groups=groups,
                plans=_plans_by_config(ds), config_names=[c.name for c in ds.config_dirs],
                snapshots=man.snapshots if write_manifest else dict(man.snapshots),
                has_raw=ds.raw is not None, raw_root=str(ds.raw) if ds.raw is not None else None,
                preprocessed_root=str(ds.preprocessed) if ds.preprocessed is not None else None)
            views[ds.name] = view
            mine += files.findings
            if not cancelled and sel.dataset:
                found, n = run_dataset_checks(sel.dataset, view, man, vers, write_manifest)
                mine += found
                stats.dataset_checks_reused += n
            mine = [dataclasses.replace(f, dataset=ds.name) for f in fold_cascades(mine)]   # one root, one finding
            findings += mine
            if write_manifest:
                try:
                    man.save()
                    if not cancelled and not files.findings and len(results) == len(files.tasks):
                        stat_index.write(man.path, stat_index.key_of(ds, vers, select, ignore, groups_key),
                                         [(rel, r.size, r.mtime_ns, r.inode, r.blake3 or "")
                                          for rel, r in results.items()], mine,
                                         [summary(c) for c in view_cases(ds.name, view, mine, ds)])
                except OSError as e:        # a read-only or missing manifest folder: the scan is still a scan
                    stats.not_recorded.append(f"{man.path}: {e.strerror or e}")
    stats.seconds = time.perf_counter() - t0
    return ScanResult(datasets=dsets, findings=filter_findings(findings, select, ignore), stats=stats,
                      views=views, cancelled=cancelled)
