"""Carry out a repair plan: stage, verify, then swap — journalled, locked, undoable.

Per rebuilt case: the new files are written to a staging folder on the same
filesystem, checked with the scanner's own per-file checks, then the old files are
moved to quarantine and the new ones renamed into place. A SIGKILL at any moment
leaves the case old (in place or in quarantine, where `restore` finds it) or new and
valid; a crash between the two halves leaves the case missing, which the next
`repair` sees (DG206/DG207) and rebuilds. A step that fails (an unreadable file, a move
the OS refuses) puts back at once what its action had moved, so a case is repaired whole
or left as it was. Before the first move every folder the plan writes is probed: a
read-only dataset is refused up front, with nothing changed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..checks.base import FileTask
from ..checks.consistency import profile, raw_channels
from ..checks.files import check_file, config_file_kind
from ..engine.layout import Dataset
from ..engine.walk import declared_labels, load_dataset_json
from ..engine.own_state import ensure_safe
from ..errors import UnsafeState
from ..errors import RepairError, NotWritableError  # noqa: F401 - defined in errors
from ..findings import Severity, display
from ..fsio import NOFOLLOW, OutsideError, check_parents, makedirs_inside, read_json, resolve_display
from ..nnunet.preprocess_case import CasePreprocessor
from ..spec import parse_spec
from ..splits import folds as sp
from ..splits.context import context_from_result
from ..engine.journal import DG_DIR, Journal, blake3_file, new_run_id
from ..engine.lock import DatasetLock
from .plan import Action

Log = Callable[[str], None]


@dataclass
class Outcome:
    action: Action
    ok: bool
    detail: str
    touched: list[str] = field(default_factory=list)


@dataclass
class RepairReport:
    run_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    cancelled: bool = False

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def _roots(ds: Dataset) -> dict[str, Path]:
    return {k: Path(v) for k, v in ds.roots().items()}


def _split(target: str) -> tuple[str, str]:
    part, _, rel = target.partition("/")
    return part, rel


def apply_plan(actions: list[Action], datasets: list[Dataset], *, run_id: str | None = None,
               log: Log = lambda m: None, scan_result=None, on_event=None, cancel=None,
               executor=None) -> RepairReport:
    """Apply every non-blocked action; one lock per dataset folder for the whole run.

    scan_result: the ScanResult the plan came from (splits are rebuilt from its label
    facts, no second scan). on_event(dict) hears each action start and end; cancel (a
    threading.Event) stops between actions, leaving finished ones journalled.
    executor (e.g. a Dask client's): the re-preprocessing of cases runs there in parallel,
    each into its own staging folder; verification, the journal and the swap stay here,
    one action at a time, so atomicity and undo never depend on a worker.
    """
    run_id = run_id or new_run_id()
    report = RepairReport(run_id)
    by_name = {d.name: d for d in datasets}
    todo = [a for a in actions if not a.blocked]
    for name in sorted({a.dataset for a in todo}):      # before any change: .dataguard must be ours
        for root in _roots(by_name[name]).values():
            ensure_safe(root)
    check_writable(todo, by_name)
    with contextlib.ExitStack() as stack:
        for name in sorted({a.dataset for a in todo}):
            for root in _roots(by_name[name]).values():
                stack.enter_context(DatasetLock(root))
                # staging left by a killed run: our own scratch, safe to drop under the lock
                _drop_scratch(root / DG_DIR / "tmp")
        preprocessors: dict[tuple[str, str], object] = {}
        staged_remotely = _stage_remotely(todo, by_name, run_id, executor) if executor is not None else {}
        emit = on_event or (lambda e: None)
        for i, a in enumerate(todo):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                emit({"event": "cancelled", "index": i, "total": len(todo), "action": a, "detail": ""})
                break
            emit({"event": "started", "index": i, "total": len(todo), "action": a, "detail": a.describe()})
            ds = by_name[a.dataset]
            journals = {part: Journal(root, run_id) for part, root in _roots(ds).items()}
            try:
                if a.kind == "quarantine":
                    out = _quarantine(a, ds, journals)
                elif a.kind == "re-preprocess":
                    out = _rebuild(a, ds, journals, preprocessors, log, staged_remotely.get(id(a)))
                elif a.kind == "cast":
                    out = _cast(a, journals)
                elif a.kind == "reorient":
                    out = _reorient(a, ds, journals, scan_result)
                else:
                    out = _splits(a, ds, journals, scan_result)
            except Exception as e:  # one failed action must not stop the others
                out = _rolled_back(a, journals, f"{type(e).__name__}: {e}")
            report.outcomes.append(out)
            emit({"event": "done" if out.ok else "failed", "index": i, "total": len(todo), "action": a,
                  "detail": out.detail})
            log(f"{'done' if out.ok else 'FAILED'}: {a.kind} {a.target}: {out.detail}")
        for j in {j.staging for ds in datasets for j in
                  (Journal(r, run_id) for r in _roots(ds).values())}:
            _drop_scratch(j)                           # our own scratch space, never user data
    return report


def _drop_scratch(folder: Path) -> None:
    """Remove dataguard's own staging folder: only a real folder (lstat), never through a link
    (rmtree's fd-based walk does not follow links inside it either)."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return
    except OSError:
        return
    shutil.rmtree(folder, ignore_errors=True)


def _rolled_back(a: Action, journals: dict[str, Journal], reason: str) -> Outcome:
    """A step failed half-way: put back what this action moved, so its case is whole again."""
    back, problems = 0, []
    for part, j in journals.items():
        try:
            n, p = j.roll_back(reason)
        except Exception as e:  # the journal itself failed: leave the rest for `restore`
            n, p = 0, [f"{part}: rollback stopped ({type(e).__name__}: {e}); `dataguard restore` undoes the rest"]
        back += n
        problems += p
    if back or problems:
        reason += f"; rolled back: {back} file(s) put back in place"
    if problems:
        reason += "; rollback incomplete: " + "; ".join(problems[:3])
    return Outcome(a, False, reason)


def check_writable(todo: list[Action], by_name: dict[str, Dataset]) -> None:
    """Refuse before the first change when a folder the plan writes cannot be written.

    Root ignores file modes, so only writing tells: a tiny file is created and removed in
    `.dataguard/` of every dataset folder (where the lock and journal go) and in every folder
    an action moves files out of or into. NotWritableError names the first that fails.
    """
    folders: dict[Path, Path] = {}
    for name in sorted({a.dataset for a in todo}):
        for root in _roots(by_name[name]).values():
            folders[root / DG_DIR] = root
    created = [f for f in folders if not os.path.lexists(f)]
    for a in todo:
        roots = list(_roots(by_name[a.dataset]).values())
        for f in _folders_written(a, by_name[a.dataset]):
            folders[f] = next((r for r in roots if f == r or r in f.parents), f)
    try:
        for folder, root in folders.items():
            _probe(folder, root)
    except NotWritableError:
        for f in created:                  # the empty .dataguard/ we just made: refused means untouched
            with contextlib.suppress(OSError):
                f.rmdir()
        raise


def _folders_written(a: Action, ds: Dataset) -> list[Path]:
    """The existing folders an action moves files out of or into (its target's, its files', gt)."""
    roots = _roots(ds)
    out = []
    for t in [a.target, *a.files]:
        part, rel = _split(t)
        if part in roots:
            out.append(_existing(roots[part], (roots[part] / rel).parent))
    if a.kind == "re-preprocess" and "preprocessed" in roots and (roots["preprocessed"] / "gt_segmentations").is_dir():
        out.append(roots["preprocessed"] / "gt_segmentations")
    return out


def _existing(root: Path, folder: Path) -> Path:
    """folder, or its nearest existing parent inside root (where the first mkdir would go)."""
    while folder != root and not folder.is_dir() and root in folder.parents:
        folder = folder.parent
    return folder


def _probe(folder: Path, root: Path) -> None:
    """Create and remove a tiny file: the one test read-only mounts, ACLs and root all answer
    truly. Only in a real folder inside the dataset: a linked folder on the way is refused."""
    probe = folder / f".dataguard-probe-{os.urandom(6).hex()}.tmp"
    try:
        if folder != root:
            rel = folder.relative_to(root).as_posix()
            check_parents(root, rel + "/probe")
            if rel == DG_DIR:
                makedirs_inside(root, DG_DIR)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600))
        os.unlink(probe)
    except OutsideError as e:
        raise UnsafeState(f"cannot repair: {e.filename}: {e.strerror}; nothing was changed") from None
    except (OSError, ValueError) as e:
        raise NotWritableError(f"cannot repair: {folder}: {e.strerror or e}; nothing was changed") from None


def _quarantine(a: Action, ds: Dataset, journals: dict[str, Journal]) -> Outcome:
    part, shown = _split(a.target)
    j = journals[part]
    # the finding's path is escaped for the screen: the real name is found by listing
    rel = resolve_display(j.root, shown)
    if a.findings and a.findings[0].code == "DG208":       # orphan case: every file of it
        folder = j.root / rel.rsplit("/", 1)[0]
        files = [p for p in sorted(folder.iterdir()) if config_file_kind(p.name)[1] == a.case]
        rels = [p.relative_to(j.root).as_posix() for p in files]
    elif stat.S_ISDIR(os.lstat(j.root / rel).st_mode):     # a __MACOSX folder: every file in it
        rels = sorted(_files_below(j.root, rel))
    else:
        rels = [rel]
    moved = []
    for r in rels:
        if os.path.lexists(j.root / r):
            j.quarantine_file(r, reason=a.codes)
            moved.append(f"{part}/{display(r)}")
    return Outcome(a, True, f"{len(moved)} file(s) moved to {j.quarantine.relative_to(j.root)}", moved)


def _files_below(root: Path, rel: str) -> list[str]:
    """Relative paths of everything but folders below root/rel: files, links and special files
    themselves (lstat; no link is followed into)."""
    out, stack = [], [rel]
    while stack:
        d = stack.pop()
        with os.scandir(root / d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(f"{d}/{e.name}")
                else:
                    out.append(f"{d}/{e.name}")
    return out


def case_files(folder: Path, case: str) -> list[Path]:
    """Every file of one case in a configuration folder (data, seg, unpacked arrays, properties)."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if not p.is_symlink() and p.is_file()
            and not p.name.startswith("._") and config_file_kind(p.name)[1] == case]


def _verify_staged(files: list[Path], case: str, labels) -> list[str]:
    problems = []
    for p in files:
        kind, _ = config_file_kind(p.name)
        r = check_file(FileTask(str(p), p.name, kind, "config", case, labels))
        problems += [f"{f.code} {f.message}" for f in r.findings if f.severity >= Severity.WARNING]
    return problems


_WORKER_PREPROCESSORS: dict = {}


def stage_case(raw: str, preprocessed: str, config: str, case: str, staged_base: str) -> list[str]:
    """Re-preprocess one case into its staging folder (runs on any worker that sees the paths)."""
    key = (raw, preprocessed, config)
    if key not in _WORKER_PREPROCESSORS:
        _WORKER_PREPROCESSORS[key] = CasePreprocessor(Path(raw), Path(preprocessed), config)
    return [str(p) for p in _WORKER_PREPROCESSORS[key].run(case, Path(staged_base))]


def _stage_remotely(todo: list[Action], by_name: dict, run_id: str, executor) -> dict:
    """Submit every case rebuild at once; {id(action): future of its staged files}."""
    out = {}
    for a in todo:
        if a.kind != "re-preprocess":
            continue
        ds = by_name[a.dataset]
        staged_base = Journal(ds.preprocessed, run_id).staging / a.config / a.case
        out[id(a)] = executor.submit(stage_case, str(ds.raw), str(ds.preprocessed), a.config, a.case,
                                     str(staged_base))
    return out


def _rebuild(a: Action, ds: Dataset, journals: dict[str, Journal], cache: dict, log: Log,
             remote=None) -> Outcome:

    j = journals["preprocessed"]
    key = (a.dataset, a.config)
    if key not in cache:
        log(f"loading nnunetv2 and the plans for {a.config} ...")
        cache[key] = CasePreprocessor(ds.raw, ds.preprocessed, a.config)
    pp = cache[key]
    if a.case not in pp.files:
        return Outcome(a, False, f"case {a.case} is not a training case of the raw dataset")
    staged_base = j.staging / a.config / a.case
    staged = [Path(p) for p in remote.result()] if remote is not None else pp.run(a.case, staged_base)
    problems = _verify_staged(staged, a.case, declared_labels(load_dataset_json(ds)))
    if problems:
        return Outcome(a, False, "rebuilt files fail verification, nothing swapped: " + "; ".join(problems[:3]))
    folder = ds.preprocessed / a.config
    touched = []
    j.write(op="rebuild-begin", config=a.config, case=a.case,
            old=[p.name for p in case_files(folder, a.case)], new=[p.name for p in staged])
    for old in case_files(folder, a.case):
        rel = old.relative_to(j.root).as_posix()
        j.quarantine_file(rel, reason=a.codes)
        touched.append(f"preprocessed/{rel}")
    for new in staged:
        rel = f"{a.config}/{new.name}"
        j.place_file(new, rel)
        touched.append(f"preprocessed/{rel}")
    touched += _refresh_gt(a, ds, j, pp)
    j.write(op="rebuild-done", config=a.config, case=a.case)
    return Outcome(a, True, f"rebuilt {len(staged)} file(s) with nnunetv2 ({pp.layout} layout)", touched)


def _refresh_gt(a: Action, ds: Dataset, j: Journal, pp) -> list[str]:
    """gt_segmentations/<case> must be the raw label, byte for byte (nnU-Net copies it)."""
    _, label = pp.inputs(a.case)
    src = Path(label)
    dst_rel = f"gt_segmentations/{src.name}"
    dst = j.root / dst_rel
    if not (j.root / "gt_segmentations").is_dir():
        return []
    if dst.exists() and blake3_file(dst) == blake3_file(src):
        return []
    staged = j.staging / "gt_segmentations" / src.name
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, staged)
    if dst.exists() or dst.is_symlink():
        j.quarantine_file(dst_rel, reason=a.codes)
    j.place_file(staged, dst_rel)
    return [f"preprocessed/{dst_rel}"]


def _cast(a: Action, journals: dict[str, Journal]) -> Outcome:
    import nibabel as nib
    import numpy as np

    part, rel = _split(a.target)
    j = journals[part]
    src = j.root / rel
    img = nib.load(str(src))
    values = np.asanyarray(img.dataobj, dtype=np.float64)
    rounded = np.rint(values)
    dev = float(np.max(np.abs(values - rounded))) if values.size else 0.0
    if dev > 1e-3 or (rounded.size and rounded.min() < 0):
        return Outcome(a, False, f"values are up to {dev:.3g} from integers (or negative): not cast")
    dtype = np.uint8 if rounded.max(initial=0) <= 255 else np.uint16
    hdr = img.header.copy()
    hdr.set_data_dtype(dtype)
    hdr.set_slope_inter(1.0, 0.0)
    out = type(img)(rounded.astype(dtype), img.affine, header=hdr)
    staged = j.staging / rel
    staged.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(staged))
    j.quarantine_file(rel, reason=a.codes)
    j.place_file(staged, rel)
    return Outcome(a, True, f"cast to {np.dtype(dtype).name} (max deviation was {dev:.2g})", [a.target])


def _reorient(a: Action, ds: Dataset, journals: dict[str, Journal], scan_result) -> Outcome:
    """DG308: rewrite a training case's channels and label in the training majority's axis
    order (nibabel's as_reoriented: voxels permuted/flipped, affine updated, the world
    position of every voxel unchanged); originals to quarantine, so restore undoes it."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    if scan_result is None or ds.name not in getattr(scan_result, "views", {}):
        raise RepairError("reorienting needs the scan the plan came from (scan_result)")
    view = scan_result.views[ds.name]
    target = profile([f for f in raw_channels(view, parse_spec(view.meta or {}).ending) if f.split == "Tr"],
                     {}).axcodes
    if target is None:
        return Outcome(a, False, "the training data has no majority orientation to reorient to")
    j = journals["raw"]
    rels = [r.split("/", 1)[1] for r in a.files if r.startswith("raw/")]
    done = []
    for rel in rels:
        src = j.root / rel
        img = nib.load(str(src))
        moved = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(target))))
        staged = j.staging / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        nib.save(moved, str(staged))
        done.append((staged, rel))
    for staged, rel in done:                       # all written first: a failure leaves the case whole
        j.quarantine_file(rel, reason=a.codes)
        j.place_file(staged, rel)
    return Outcome(a, True, f"{len(done)} file(s) reoriented to {target}; its preprocessed data is now stale "
                   f"(DG209): re-preprocess the case", [f"raw/{r}" for _, r in done])


def _splits(a: Action, ds: Dataset, journals: dict[str, Journal], scan_result) -> Outcome:

    j = journals["preprocessed"]
    if scan_result is None or ds.name not in getattr(scan_result, "views", {}):
        raise RepairError("regenerating splits needs the scan the plan came from (scan_result)")
    labels = context_from_result(scan_result, ds).case_labels
    new = sp.rebalance(labels, folds=_current_folds(ds.preprocessed / "splits_final.json"))
    swept = sp.quarantine_leftovers(j.root / "splits_final.json", journal=j)
    sp.write_splits(j.root / "splits_final.json", new, journal=j, reason=a.codes)
    detail = f"stratified {len(new)}-fold splits written"
    if swept:
        detail += f"; {len(swept)} leftover temp file(s) of an interrupted splits write moved to quarantine"
    return Outcome(a, True, detail, [a.target] + [f"preprocessed/{n}" for n in swept])


def _current_folds(path: Path) -> int:

    try:
        data = read_json(path)
        if isinstance(data, list) and 2 <= len(data) <= 20:
            return len(data)
    except (OSError, ValueError):
        pass
    return 5
