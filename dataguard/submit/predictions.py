"""Predictions as data: label maps in a folder or a zip, and the probability files of models.

Reads once, checks later: `load_prediction_set` opens every member (a zip member is read
to its end, so its CRC is checked), takes each label map's header facts, value counts and
integer-ness with the same streaming NIfTI reader the raw-data checks use, and each test
image's geometry from its header. The registered checks (DG601-DG606,
`checks/predictions.py`) then judge that record. `find_probabilities` finds nnU-Net
probability files whatever their naming (`case.npz`, `case.nii.gz.npz`).
"""
from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import FileInput, get
from ..checks.base import FileTask
from ..checks.consistency import ChannelFile, TrainingProfile, against_training, channel_contract, channel_of
from ..checks.raw import FloatLabelSummary, RawError, _read_nifti, geometry_from_affine
from ..checks.rawset import _geometry_problems
from ..errors import UsageError
from ..findings import finding
from ..spec import DatasetSpec, load_spec
from .members import MemberReader, data_ends, member_problem

PRED_ENDING = ".nii.gz"
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})\.nii\.gz$")


@dataclass
class PredictedCase:
    case: str
    member: str                         # file name (folder) or member name (zip)
    facts: dict | None = None           # shape, dtype, scaled, spacing, origin, direction
    counts: dict[int, int] = field(default_factory=dict)
    max_dev: float | None = None        # float labels: farthest value from an integer
    error: str | None = None


@dataclass
class PredictionSet:
    source: str
    is_zip: bool
    cases: dict[str, PredictedCase] = field(default_factory=dict)
    images: dict[str, dict] = field(default_factory=dict)        # test case -> geometry of its _0000 image
    image_errors: dict[str, str] = field(default_factory=dict)
    labels: dict[int, str] | None = None                          # declared labels
    spec: DatasetSpec | None = None                               # the dataset.json (regions, ignore)
    common: dict[int, float] = field(default_factory=dict)       # label -> share of training cases with it
    members: list[str] = field(default_factory=list)            # every name in the folder / zip
    duplicates: list[str] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)       # zip member -> its link target text
    archive_error: str | None = None


def test_images(images_dir: Path) -> dict[str, list[Path]]:
    """`case_0000.nii.gz`, `case_0001.nii.gz` ... -> {case: [channel files]}."""
    out: dict[str, list[Path]] = {}
    for p in sorted(Path(images_dir).iterdir()):
        m = _CHANNEL.match(p.name)
        if m and p.is_file():
            out.setdefault(m.group("case"), []).append(p)
    return out


def image_geometry(path: Path) -> dict:
    import nibabel as nib


    hdr = nib.load(str(path)).header
    return {"shape": [int(x) for x in hdr.get_data_shape()],
            **geometry_from_affine(hdr.get_best_affine(), hdr.get_zooms())}


def declared_labels(dataset_json: Path | None, spec: DatasetSpec | None = None) -> dict[int, str] | None:
    """value -> name of every declared label (regions flattened); `spec`: the file's, when read already."""
    if dataset_json is None:
        return None
    spec = spec or load_spec(dataset_json)
    if not spec.labels:
        raise UsageError(f"{dataset_json}: no usable labels ({'; '.join(spec.problems)})")
    out = {}
    for name, v in spec.labels.items():
        for x in (v if isinstance(v, tuple) else (v,)):
            out.setdefault(x, name)
    return dict(sorted(out.items()))


def read_label_map(stream, name: str) -> PredictedCase:
    """Header facts, value counts and integer-ness of one label map, streamed."""
    case = name.rsplit("/", 1)[-1][: -len(PRED_ENDING)]
    task = FileTask(path=name, rel=name, kind="label", where="raw", case=case)
    pc = PredictedCase(case=case, member=name)
    try:
        facts, summary = _read_nifti(task, stream, True)
    except RawError as e:
        pc.error = str(e)
        return pc
    pc.facts, pc.counts = facts, summary.counts()
    if isinstance(summary, FloatLabelSummary):
        pc.max_dev = summary.max_dev
    return pc


def load_prediction_set(source: Path, images_dir: Path, dataset_json: Path | None = None,
                        common: dict[int, float] | None = None, on_case=None) -> PredictionSet:
    """Read a prediction folder or zip against its test images (see the module docstring)."""
    source = Path(source)
    ps = PredictionSet(str(source), is_zip=source.is_file() and zipfile.is_zipfile(source))
    ps.spec = load_spec(dataset_json) if dataset_json is not None else None
    ps.labels = declared_labels(dataset_json, ps.spec)
    ps.common = dict(common or {})
    for case, files in test_images(images_dir).items():
        try:
            ps.images[case] = image_geometry(files[0])
        except Exception as e:                       # an unreadable test image is the raw checks' business
            ps.image_errors[case] = f"{type(e).__name__}: {e}"
    if ps.is_zip:
        _read_zip(ps, source, on_case)
    elif source.is_dir():
        for p in sorted(source.iterdir()):
            ps.members.append(p.name + ("/" if p.is_dir() else ""))
            if p.is_file() and p.name.endswith(PRED_ENDING):
                with open(p, "rb") as f:
                    ps.cases[p.name[: -len(PRED_ENDING)]] = read_label_map(f, p.name)
                if on_case:
                    on_case(p.name)
    elif source.is_file():
        ps.archive_error = "not a zip archive" if source.suffix == ".zip" else "neither a folder nor a zip"
    else:
        ps.archive_error = "does not exist"
    return ps


def _read_zip(ps: PredictionSet, path: Path, on_case) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except Exception as e:              # noqa: BLE001 - a hostile central directory fails in many ways
        ps.archive_error = f"unreadable zip: {e}"
        return
    seen: set[str] = set()
    with zf:
        ends = data_ends(zf)
        for info in zf.infolist():
            ps.members.append(info.filename)
            if info.filename in seen:
                ps.duplicates.append(info.filename)
                continue
            seen.add(info.filename)
            why = member_problem(info)
            if is_symlink(info):                      # DG606, not a case: there is no file to read
                ps.symlinks[info.filename] = f"(unreadable: {why})" if why else _link_target(zf, info)
                if on_case and info.filename.endswith(PRED_ENDING):
                    on_case(info.filename)
                continue
            if info.is_dir() or not info.filename.endswith(PRED_ENDING):
                continue
            case = info.filename.rsplit("/", 1)[-1][: -len(PRED_ENDING)]
            if why:
                pc = PredictedCase(case=case, member=info.filename, error=why)
            else:
                pc = _read_member(zf, info, ends.get(info.header_offset), case)
            if "/" not in info.filename:             # nested members are DG606, not cases
                ps.cases[pc.case] = pc
            if on_case:
                on_case(info.filename)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, end: int | None, case: str) -> PredictedCase:
    """A member streamed through the NIfTI reader in bounded pieces (submit.members): never held
    whole, never inflated past its declared size or what its header's shape can hold, read to
    its end so that its size and CRC are checked against what inflated."""
    try:
        with MemberReader(zf, info, end) as f:
            return read_label_map(f, info.filename)
    except RawError as e:
        return PredictedCase(case=case, member=info.filename, error=str(e))
    except Exception as e:              # noqa: BLE001 - a hostile member must be a finding, never exit 3
        return PredictedCase(case=case, member=info.filename, error=f"unreadable member: {type(e).__name__}: {e}")


def is_symlink(info: zipfile.ZipInfo) -> bool:
    """A member stored as a Unix symlink: its data is the link's target path, not a file."""
    return stat.S_ISLNK(info.external_attr >> 16)


def _link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = 512) -> str:
    """The target a symlink member names (at most `limit` bytes: a target is a path, not data)."""
    try:
        with MemberReader(zf, info) as f:
            raw = f.read(limit + 1)
    except Exception as e:              # noqa: BLE001 - an unreadable link is said, not raised
        return f"(unreadable: {e})"
    text = raw[:limit].decode("utf-8", errors="replace")
    return text + ("..." if len(raw) > limit else "")


# --- probability files (ensemble inputs) ------------------------------------------------------
@dataclass
class ProbabilityFile:
    case: str
    npz: Path
    pkl: Path | None


@dataclass
class ProbabilityInputs:
    """The probability folders of an ensemble, each as {case: ProbabilityFile}."""
    folders: dict[str, Path]                                    # model name -> folder
    files: dict[str, dict[str, ProbabilityFile]] = field(default_factory=dict)
    expected: set[str] | None = None                            # the test cases, when known


def find_probabilities(folder: Path) -> dict[str, ProbabilityFile]:
    """`case.npz` (nnU-Net) or `case.nii.gz.npz` (older scripts), with `case.pkl` or `case.nii.gz.pkl`."""
    out: dict[str, ProbabilityFile] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.npz")):
        case = p.name[: -len(".npz")]
        for ending in (".nii.gz", ".nii", ".mha", ".nrrd"):
            if case.endswith(ending):
                case = case[: -len(ending)]
        pkl = next((q for q in (folder / f"{case}.pkl", p.with_suffix(".pkl")) if q.is_file()), None)
        out.setdefault(case, ProbabilityFile(case, p, pkl))
    return out


def load_probability_inputs(folders: dict[str, Path], expected: set[str] | None = None) -> ProbabilityInputs:
    pi = ProbabilityInputs(folders=dict(folders), expected=expected)
    for name, folder in folders.items():
        pi.files[name] = find_probabilities(folder)
    return pi


def check_test_images(images_dir: Path, training: TrainingProfile | None = None) -> list:
    """The raw-data checks on test images: each file through the registered `raw-image` check,
    the channels of a case against each other (DG304 tolerances, DG307), and with `training`
    (the training data's profile: Workspace.training_profile) every image against what the
    model was trained on: orientation, spacing, intensity, duplicates (DG308-DG310)."""
    images_dir = Path(images_dir)
    check, out = get("raw-image"), []
    channels: list[ChannelFile] = []
    for case, files in test_images(images_dir).items():
        facts_by_file = []
        for p in files:
            task = FileTask(path=str(p), rel=f"imagesTs/{p.name}", kind="image", where="raw", case=case)
            with open(p, "rb") as f:
                found, facts = check.run(FileInput(task, f, None, p.stat().st_size))
            out += found
            if facts:
                facts_by_file.append((p, facts))
                got = next((channel_of(p.name, e) for e in (".nii.gz", ".nii", ".mha", ".nrrd", ".png", ".tif")
                            if p.name.endswith(e)), None)
                if got is not None:
                    channels.append(ChannelFile("Ts", case, got[1], task.rel, facts))
        for p, facts in facts_by_file[1:]:
            for problem in _geometry_problems(facts_by_file[0][1], facts):
                out.append(finding("DG304", f"imagesTs/{p.name}", f"{problem} (vs {files[0].name})", case=case))
    out += channel_contract(channels, training or TrainingProfile())
    if training is not None:
        out += against_training(channels, training, place=images_dir.name)
    return out
