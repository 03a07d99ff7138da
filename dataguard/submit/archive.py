"""A submission archive that is verified before it leaves, and the manifest that says what made it.

`build_archive` writes a flat zip of `case.nii.gz` members (stored, not re-compressed: the
members are gzip already), optionally casting DG601-castable float label maps to uint8,
then re-opens the zip and runs every prediction check on it (CRC, readable NIfTI, dtype,
values, geometry, case count). Only a zip that passes is renamed into place; a failing one
is deleted, so a broken upload never exists on disk.
"""
from __future__ import annotations

import json
import platform
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import set_checks
from ..checks.predictions import castable_cases
from ..errors import SubmissionError  # noqa: F401 - defined in errors
from ..findings import Finding, Severity
from ..fsio import atomic_write_text, blake3_file, commit
from .predictions import load_prediction_set


def run_checks(obj, scope: str = "predictions") -> list[Finding]:

    out: list[Finding] = []
    for c in set_checks(scope):
        out += c.run(obj)
    return sorted(out, key=lambda f: (-int(f.severity), f.code, f.case or "", f.path))


def cast_member(data: bytes) -> bytes:
    """A float label map cast to uint8 (values rounded; the caller checked they are within 1e-3)."""
    import nibabel as nib
    import numpy as np

    img = nib.Nifti1Image.from_bytes(_gunzip(data))
    arr = np.rint(np.asanyarray(img.dataobj)).astype(np.uint8)
    hdr = img.header.copy()
    hdr.set_data_dtype(np.uint8)
    hdr.set_slope_inter(1.0, 0.0)
    out = nib.Nifti1Image(arr, img.affine, hdr)
    out.set_qform(*img.get_qform(coded=True))
    out.set_sform(*img.get_sform(coded=True))
    return _gzip(out.to_bytes())


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=6, mtime=0)


@dataclass
class ArchiveReport:
    path: Path
    members: dict[str, str] = field(default_factory=dict)        # member -> blake3
    cast: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)        # warnings left on the verified zip


def build_archive(ps, out_zip: Path, images_dir: Path, dataset_json: Path | None, *, fix_dtype: bool = False,
                  common: dict[int, float] | None = None, on_member=None) -> ArchiveReport:
    """Write `out_zip` from a checked PredictionSet of a folder; verify it; keep it only if it passes."""
    import blake3


    out_zip = Path(out_zip)
    tmp = out_zip.with_name(out_zip.name + ".partial")
    report = ArchiveReport(out_zip)
    castable = castable_cases(ps)
    src = Path(ps.source)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for case in sorted(ps.cases):
                pc = ps.cases[case]
                data = (src / pc.member).read_bytes()
                if fix_dtype and case in castable:
                    data = cast_member(data)
                    report.cast.append(case)
                name = f"{case}.nii.gz"
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
                report.members[name] = blake3.blake3(data).hexdigest()
                if on_member:
                    on_member(name)
        again = load_prediction_set(tmp, images_dir, dataset_json, common)
        again.source = str(out_zip)
        found = run_checks(again)
        errors = [f for f in found if f.severity >= Severity.ERROR]
        if len(again.cases) != len(report.members):
            errors.append(Finding(str(out_zip), "DG606", Severity.ERROR,
                                  f"{len(again.cases)} readable members, {len(report.members)} written"))
        if errors:
            raise SubmissionError("the written archive failed verification and was deleted:\n"
                                  + "\n".join(f"  {f.code} {f.case or ''} {f.message}" for f in errors))
        commit(tmp, out_zip)                      # fsync, rename, fsync the folder
        report.findings = found
        return report
    finally:
        if tmp.exists():
            tmp.unlink()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("dataguard", "nnunetv2", "torch", "nibabel", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def write_manifest(report: ArchiveReport, *, models: list[dict] | None = None, weights: dict | None = None,
                   postprocess: str | None = None, training_manifest: Path | None = None,
                   source: str | None = None, checkpoint: str | None = None,
                   include_unfinished: bool | None = None) -> Path:
    """`OUT.zip.manifest.json`: which cases (blake3), models, checkpoints, weights, versions and
    training data made this upload."""
    doc = {
        "schema": "dataguard-submission/1",
        "archive": report.path.name,
        "archive_blake3": blake3_file(report.path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": report.members,
        "cast_to_uint8": report.cast,
        "source": source,
        "models": models or [],
        "checkpoint": checkpoint,                   # checkpoint_<this>.pth of every fold (None: not predicted here)
        "include_unfinished": include_unfinished,   # --include-unfinished: unfinished folds taken on purpose
        "weights": weights,
        "postprocess": postprocess,
        "versions": versions(),
        "training_data": _training(training_manifest),
        "warnings": [f.to_dict() for f in report.findings],
    }
    path = report.path.with_name(report.path.name + ".manifest.json")
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def _training(manifest: Path | None) -> dict | None:
    """The scan manifest of the training data: where, its blake3, and what it recorded."""
    if manifest is None or not Path(manifest).is_file():
        return None
    import blake3

    data = Path(manifest).read_bytes()
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    files = doc.get("files", {}) if isinstance(doc, dict) else {}
    return {"manifest": str(manifest), "manifest_blake3": blake3.blake3(data).hexdigest(),
            "dataset": doc.get("dataset") if isinstance(doc, dict) else None, "files": len(files)}
