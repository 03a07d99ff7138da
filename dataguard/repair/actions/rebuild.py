"""re-preprocess: rebuild one (configuration, case) from raw with nnunetv2, staged, verified,
then swapped in (old files to quarantine; gt_segmentations refreshed)."""
from __future__ import annotations

import os
from pathlib import Path

from ...checks.base import FileTask
from ...checks.files import check_file, config_file_kind
from ...engine.journal import Journal, blake3_file, matches
from ...engine.walk import declared_labels, load_dataset_json
from ...findings import ActionKind, Severity
from ...fsio import copy_verified
from ...nnunet.preprocess_case import CasePreprocessor
from . import quarantine
from .base import ApplyContext, Outcome, no_payload

KIND = ActionKind.REPREPROCESS
ORDER = 2
prepare = no_payload
files = quarantine.files          # the case's current files in its configuration folder


def describe(a) -> str:
    return f"rebuild case {a.case} in {a.config} from raw (old files to quarantine)"


def case_files(folder: Path, case: str) -> list[Path]:
    """Every file of one case in a configuration folder (data, seg, unpacked arrays, properties)."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if not p.is_symlink() and p.is_file()
            and not p.name.startswith("._") and config_file_kind(p.name)[1] == case]


def _verify_staged(staged: list[Path], case: str, labels) -> list[str]:
    problems = []
    for p in staged:
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


def submit(a, ds, run_id: str, executor):
    """Stage this case's rebuild on an executor; the future of its staged files."""
    staged_base = Journal(ds.preprocessed, run_id).staging / a.config / a.case
    return executor.submit(stage_case, str(ds.raw), str(ds.preprocessed), a.config, a.case, str(staged_base))


def run(a, ctx: ApplyContext) -> Outcome:
    ds, j, cache, remote = ctx.ds, ctx.journals["preprocessed"], ctx.cache, ctx.staged
    key = (a.dataset, a.config)
    if key not in cache:
        ctx.log(f"loading nnunetv2 and the plans for {a.config} ...")
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
    touched += _refresh_gt(a, j, pp)
    j.write(op="rebuild-done", config=a.config, case=a.case)
    return Outcome(a, True, f"rebuilt {len(staged)} file(s) with nnunetv2 ({pp.layout} layout)", touched)


def _refresh_gt(a, j: Journal, pp) -> list[str]:
    """gt_segmentations/<case> must be the raw label, byte for byte (nnU-Net copies it)."""
    _, label = pp.inputs(a.case)
    src = Path(label)
    dst_rel = f"gt_segmentations/{src.name}"
    dst = j.root / dst_rel
    if not (j.root / "gt_segmentations").is_dir():
        return []
    if matches(dst, {"blake3": blake3_file(src)}):
        return []
    staged = j.staging / "gt_segmentations" / src.name
    staged.parent.mkdir(parents=True, exist_ok=True)
    copy_verified(src, staged)              # into our private staging folder, verified by blake3
    if os.path.lexists(dst):
        j.quarantine_file(dst_rel, reason=a.codes)
    j.place_file(staged, dst_rel)
    return [f"preprocessed/{dst_rel}"]
