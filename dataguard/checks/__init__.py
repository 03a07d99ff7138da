"""The built-in checks, registered in one place (see registry.py for the protocol).

Per-file checks run in any executor (threads, a spawn pool, Dask); their family
modules import numpy/blosc2/nibabel only when a file of their kind is checked.
Dataset checks run in the main process on recorded per-file results and read no data.
`--select/--ignore`, `dataguard explain` and the manifest's per-check versions all
derive from this registry.
"""
from __future__ import annotations

import errno

from ..findings import Fix, finding
from ..fsio import read_open
from .b2nd import check_b2nd
from .files import empty_findings, junk_findings
from .metadata import METADATA_LIMIT, check_metadata_file
from .npz import check_npy, check_npz
from .pickles import check_pkl
from .raw import check_image
from .roundtrip import check_roundtrip
from .label_audit import check_audit_case
from .registry import (
    DatasetCheck,
    FileCheck,
    FileInput,
    Selection,
    SetCheck,
    all_checks,
    dataset_checks,
    file_checks,
    get,
    register,
    set_checks,
    unregister,
    versions,
    wanted,
)

VERIFY_CODES = ("DG701", "DG702", "DG703")
SCAN_CODES = ("DG001",)      # any check that raises: reported by the scanner, never by a check
DATA_KINDS = frozenset({"npz", "npy", "b2nd", "pkl", "image", "label"})
PKL_LIMIT = 64 << 20         # nnU-Net's .pkl: ~1 MB (class_locations); beyond this it is not read


def bounded_bytes(inp: FileInput, limit: int) -> bytes | None:
    """The whole file, read from the stream the scanner opened (the bytes it hashed), when it
    holds at most `limit` bytes; None when it holds more (fsio.read_open reads no more than
    limit + 1 bytes, whatever the file claims: a sparse 2 GB file reads as gigabytes of zeros)."""
    if inp.data is not None:
        return inp.data if len(inp.data) <= limit else None
    try:
        return read_open(inp.src, limit, inp.size)
    except OSError as e:
        if e.errno == errno.EFBIG:
            return None
        raise


def _too_large(inp: FileInput, limit: int) -> str:
    return (f"{max(inp.size, limit + 1)} bytes, larger than the {limit >> 20} MB limit dataguard reads "
            f"for such a file: not read")


# --- per-file checks: thin adapters, the work lives in the family modules ----------------------
def _junk(inp: FileInput):

    return junk_findings(inp.task, inp.src.read(4)), {}


def _empty(inp: FileInput):

    return empty_findings(inp.task, inp.size), {}


def _npz(inp: FileInput):

    return check_npz(inp.task, inp.src)


def _npy(inp: FileInput):

    return check_npy(inp.task, inp.src, inp.size)


def _b2nd(inp: FileInput):

    return check_b2nd(inp.task, inp.data, inp.size)


def _pkl(inp: FileInput):

    data = bounded_bytes(inp, PKL_LIMIT)
    if data is None:
        return [finding("DG204", inp.task.rel, f"properties unreadable: {_too_large(inp, PKL_LIMIT)} "
                        f"(nnU-Net writes about 1 MB)", case=inp.task.case, fix=Fix.REPREPROCESS)], {}
    return check_pkl(inp.task, data)


def _image(inp: FileInput):

    return check_image(inp.task, inp.src, inp.scratch)


def _metadata(inp: FileInput):

    data = bounded_bytes(inp, METADATA_LIMIT)
    if data is None:
        # nnU-Net's metadata files only (DG211); any other JSON is no check's business
        return check_metadata_file(inp.task, None, _too_large(inp, METADATA_LIMIT))
    return check_metadata_file(inp.task, data)


def _roundtrip(inp: FileInput):

    return check_roundtrip(inp.task, inp.src, inp.data)


def _audit_case(inp: FileInput):

    return check_audit_case(inp.task, inp.src, inp.scratch)


def _dataset(module: str, fn: str):
    """A dataset check function imported on first run (keeps `import dataguard.checks` light)."""
    def run(view):
        import importlib

        return getattr(importlib.import_module(f".{module}", __name__), fn)(view)
    run.__name__ = f"{module}.{fn}"
    return run


# Bump a check's version when what it reports changes: the manifest then re-runs that check
# (and only it) on the files it covers. v2 of npz/npy/b2nd records per-label voxel counts;
# v2 of pkl checks value types (DG204); splits v2 adds DG505, v3 rewords it; dataset-json v2
# adds DG311/DG312 and the file_ending mismatch, raw-cases v3 the conversion-mistake roots.
for _c in (
    FileCheck("junk", ("DG101", "DG102", "DG104"), "stray files by name and magic: AppleDouble, "
              "OS junk, unexpected files", _junk, gate=True),
    FileCheck("empty", ("DG103",), "empty data files", _empty, kinds=DATA_KINDS, gate=True),
    FileCheck("npz", ("DG201", "DG202", "DG210"), "legacy .npz: every zip member inflated and "
              "CRC-checked, keys, dtypes, shapes, values", _npz, kinds=frozenset({"npz"}), version=2),
    FileCheck("npy", ("DG201", "DG202", "DG210"), "unpacked legacy .npy: header vs size, values",
              _npy, kinds=frozenset({"npy"}), version=2),
    FileCheck("b2nd", ("DG202", "DG203", "DG210"), "blosc2 .b2nd: every chunk decompressed, values "
              "summarised", _b2nd, kinds=frozenset({"b2nd"}), version=2),
    FileCheck("pkl", ("DG204", "DG205"), ".pkl properties via safe_pickle (never "
              "executed), keys and value types", _pkl, kinds=frozenset({"pkl"}), version=3),
    FileCheck("raw-image", ("DG302", "DG306", "DG401", "DG402", "DG403"), "raw images/labels: gzip "
              "verified to the end, header, voxels streamed, label dtype and values; of images the "
              "axis codes, voxel hash and intensity percentiles (for DG307-DG310)", _image,
              kinds=frozenset({"image", "label"}), version=2),
    # no codes of its own: it runs for label-roundtrip (DG405), on raw labels only (needs_where)
    FileCheck("roundtrip-case", (), "raw training labels: each label's round trip through every "
              "planned configuration's target spacing with nnU-Net's own resampling (Dice, components)",
              _roundtrip, kinds=frozenset({"label"})),
    # no codes of its own: it runs for label-audit (DG406), on raw training images' channel 0
    FileCheck("audit-case", (), "raw training cases: the label audit's figures of each label (volume, "
              "pieces, position, intensity, outline, empty slices) from channel 0, kept on a strided grid "
              "while raw-image inflates it, and the label", _audit_case, kinds=frozenset({"image"})),
    FileCheck("metadata", ("DG211",), "preprocessed nnUNetPlans*.json, dataset.json and "
              "dataset_fingerprint.json: parse and types", _metadata, kinds=frozenset({"json"})),
    DatasetCheck("stray-folders", ("DG102",), "a __MACOSX folder as one finding (its files folded into it)",
                 _dataset("files", "stray_folders")),
    DatasetCheck("dataset-json", ("DG301", "DG311", "DG312"), "raw dataset.json keys, labels, channels; "
                 "nnU-Net v1 files; regions and the ignore label", _dataset("rawset", "dataset_json"), version=2),
    DatasetCheck("raw-cases", ("DG303", "DG305"), "every case has its channels and label; numTraining",
                 _dataset("rawset", "case_files"), version=3),
    DatasetCheck("raw-geometry", ("DG304",), "channels and label agree in shape/spacing/origin/"
                 "direction", _dataset("rawset", "geometry"), needs=("raw-image",)),
    DatasetCheck("consistency", ("DG307", "DG308", "DG309", "DG310"), "across cases and against the "
                 "training data: channel contract, orientation, test spacing and intensity, duplicates",
                 _dataset("consistency", "check_consistency"), needs=("raw-image",),
                 needs_kinds=frozenset({"image"}), needs_where=frozenset({"raw"})),
    DatasetCheck("normalization", ("DG313",), "a channel name picks the normalization nnU-Net applies: "
                 "CT-like names that are not 'CT', 'CT' over non-HU images, HU images under an MR/PET name",
                 _dataset("normalization", "check_normalization"), needs=("raw-image",),
                 needs_kinds=frozenset({"image"}), needs_where=frozenset({"raw"})),
    DatasetCheck("unused-labels", ("DG404",), "every declared label occurs somewhere",
                 _dataset("rawset", "unused_labels"), needs=("raw-image", "pkl"),
                 needs_kinds=frozenset({"label", "pkl"}), needs_where=frozenset({"raw", "config"})),
    DatasetCheck("label-roundtrip", ("DG405",), "a configuration that cannot represent a label: mean "
                 "round-trip Dice below 0.9 or components lost", _dataset("roundtrip", "check_roundtrip_findings"),
                 needs=("roundtrip-case",), needs_kinds=frozenset({"label"}), needs_where=frozenset({"raw"})),
    DatasetCheck("mirroring", ("DG314",), "labels that are mirror images of each other (kidney left/right): "
                 "confused by nnU-Net's mirroring; read again from the raw training cases, within bounds",
                 _dataset("mirroring", "check_mirroring"), needs=("raw-image",),
                 needs_kinds=frozenset({"image", "label"}), needs_where=frozenset({"raw"})),
    DatasetCheck("label-audit", ("DG406",), "annotations unlike the same label in the other cases (volume, "
                 "pieces, position, intensity, outline, empty slices, a missing label): a question, never an "
                 "error; figures computed while the scan reads each training case, within bounds",
                 _dataset("label_audit", "check_label_audit"), needs=("raw-image", "audit-case"),
                 needs_kinds=frozenset({"image", "label"}), needs_where=frozenset({"raw"})),
    DatasetCheck("metadata-presence", ("DG211",), "the preprocessed dataset has its dataset.json and "
                 "plans", _dataset("metadata", "metadata_presence")),
    DatasetCheck("case-completeness", ("DG104", "DG206"), "each case has all its files; one data "
                 "format per folder", _dataset("cases", "case_completeness")),
    DatasetCheck("raw-coverage", ("DG207", "DG208"), "raw training cases vs preprocessed cases",
                 _dataset("rawset", "raw_coverage"), version=2),
    DatasetCheck("staleness", ("DG209",), "raw or plans changed after preprocessing (by content hash)",
                 _dataset("cases", "staleness"), needs_hashes=True, uses_snapshots=True),
    DatasetCheck("splits", ("DG501", "DG502", "DG503", "DG504", "DG505", "DG506", "DG507"), "splits_final.json: "
                 "structure, leakage, unknown/unvalidated cases, labels per fold, patients on both sides of a "
                 "fold; nnU-Net's default split before it exists, or too few cases for it",
                 _dataset("splits", "check_splits"), version=6,
                 needs=("raw-image", "pkl"), needs_kinds=frozenset({"label", "pkl"}),
                 needs_where=frozenset({"raw", "config"})),
    # predictions and submissions: over a PredictionSet / ProbabilityInputs, never in a scan
    SetCheck("prediction-dtype", ("DG601",), "label maps are stored as integers",
             _dataset("predictions", "dtype")),
    SetCheck("prediction-values", ("DG602",), "label map values are declared labels",
             _dataset("predictions", "values")),
    SetCheck("prediction-geometry", ("DG603",), "label maps match their test image's geometry",
             _dataset("predictions", "geometry")),
    SetCheck("prediction-cases", ("DG604",), "one prediction per test case, no other",
             _dataset("predictions", "case_set")),
    SetCheck("prediction-content", ("DG605",), "no empty prediction; labels most training cases have are present",
             _dataset("predictions", "content")),
    SetCheck("submission-archive", ("DG606",), "a flat archive of case.nii.gz members, all readable",
             _dataset("predictions", "archive")),
    SetCheck("probability-files", ("DG607",), "every ensemble member has probabilities for every case",
             _dataset("predictions", "probability_files"), scope="probabilities"),
    SetCheck("evaluation-case-set", ("DG802",), "a validation folder holds exactly its fold's validation cases",
             _dataset("predictions", "evaluation_case_sets"), scope="evaluation"),
    SetCheck("ensemble-weights", ("DG803",), "no weight for a model whose out-of-fold Dice for the label is ~0",
             _dataset("predictions", "weights_on_useless_models"), scope="weights"),
):
    register(_c)
del _c


def all_codes() -> set[str]:
    return {code for c in all_checks() for code in c.codes} | set(VERIFY_CODES) | set(SCAN_CODES)


__all__ = ["DatasetCheck", "FileCheck", "FileInput", "Selection", "SetCheck", "all_checks", "all_codes",
           "dataset_checks", "file_checks", "get", "register", "set_checks", "unregister", "versions", "wanted",
           "VERIFY_CODES", "DATA_KINDS", "PKL_LIMIT", "bounded_bytes"]
