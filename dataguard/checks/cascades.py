"""One root cause, one finding: the cascades a conversion mistake sets off, folded into it.

A single mistake made while converting a dataset by hand is seen by several checks at
once. A label saved as `labelsTr/case_0000.nii.gz` is "a training case without label"
(DG303), "a label without image" (DG303) and "a split names a case that does not exist"
(DG503); a `__MACOSX/` folder is one DG101 per file in it; a `file_ending` of `.nii` next
to `.nii.gz` files makes every file "unexpected" (DG104) and the dataset empty (DG305).
Each of those findings is true, but read together they hide the one thing to do. So the
check that sees the cause reports it as a *root* finding (built here, by the functions
below, with the fix in its `help` line), and `fold` drops what the root explains and says
how much that was: "(explains 3 other findings)".

Why a separate pass over a dataset's findings, and not each check minding the others:
checks stay independent pure functions (one may run without another under `--select`, or
come from the manifest), and the rule "what this root explains" lives in one place next
to the words that mark the root. A finding is only ever folded into a root of the same
dataset's list, so nothing is hidden unless the finding that explains it is there.

The roots (code, first words of the message):
- DG311 `V1`: an nnU-Net v1 dataset.json; explains every DG301 and DG404 (the v1 keys and
  labels read as v2 keys).
- DG303 `LABEL_SUFFIX`: a label named `{case}_0000{ending}`; explains its case's "no label"
  DG303, DG207 and DG503.
- DG303 `DOT_CHANNEL`: an image named `{case}.0000{ending}`; explains its case's "label has
  no image" DG303, DG207 and DG503, and the DG305 that only those names cause.
- DG301 `ENDING_MISMATCH`: `file_ending` unlike every image's ending; explains the DG104 of
  each file with the real ending and the DG305 of a dataset with no case.
- DG102 `MACOSX`: a `__MACOSX/` folder; explains the DG101/DG102/DG104 of each file in it.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ..findings import Finding, Fix, Severity, finding

V1 = "dataset.json is an nnU-Net v1 file"
LABEL_SUFFIX = "label is named with a channel suffix"
DOT_CHANNEL = "image name has a dot before the channel number"
ENDING_MISMATCH = "'file_ending' is"
MACOSX = "macOS zip artefact folder"
NO_LABEL = "training case has no label in labelsTr"            # case_files' DG303 words
NO_IMAGE = "label has no image"                                 # case_files' DG303 words
UNEXPECTED = "unexpected file"                                  # files.junk_findings' DG104 words
DUE_TO_DOTS = "images named with a dot before the channel number"   # DG305 that a DOT_CHANNEL explains

_EXPLAINS = re.compile(r" \(explains (\d+) other findings?\)$")
_ENDING = re.compile(r"but the images and labels end in '([^']+)'")
_RAW_IMAGE_DIRS = ("raw/imagesTr/", "raw/labelsTr/", "raw/imagesTs/")


# --- the root findings: built here, so the words that mark them are in one place ----------------
def v1_dataset_json(rel: str) -> Finding:
    """DG311: `rel` is an nnU-Net v1 dataset.json."""
    return finding("DG311", rel, f"{V1} ('modality', labels keyed by value, 'training' list): "
                                 "nnU-Net v2 reads none of it",
                   help="run nnUNetv2_convert_old_nnUNet_dataset INPUT_FOLDER OUTPUT_DATASET_NAME "
                        "(a new DatasetXXX_Name: it refuses an existing one)")


def label_with_channel_suffix(rel: str, case: str, ending: str) -> Finding:
    """DG303: labelsTr/{case}_XXXX{ending} next to imagesTr/{case}_XXXX{ending}."""
    name = rel.rsplit("/", 1)[-1]
    return finding("DG303", rel, f"{LABEL_SUFFIX} ({name}): labels are named {{case}}{ending}, so "
                                 f"nnU-Net finds no label for case '{case}'", case=case,
                   help=f"mv labelsTr/{name} labelsTr/{case}{ending}")


def image_with_dot_channel(rel: str, case: str, channel: str, ending: str) -> Finding:
    """DG303: imagesTr/{case}.XXXX{ending} (a dot where nnU-Net needs `_`, nnU-Net #2187)."""
    folder, name = rel.split("/")[1], rel.rsplit("/", 1)[-1]
    return finding("DG303", rel, f"{DOT_CHANNEL} ({name}): nnU-Net needs {case}_{channel}{ending} and "
                                 f"takes this file for no case", case=case,
                   help=f"mv {folder}/{name} {folder}/{case}_{channel}{ending}")


def ending_mismatch(rel: str, declared: str, actual: str, n: int) -> Finding:
    """DG301: dataset.json's file_ending matches no image or label; `n` files end in `actual`."""
    return finding("DG301", rel, f"{ENDING_MISMATCH} '{declared}' but the images and labels end in "
                                 f"'{actual}' ({n} file{'s' if n != 1 else ''}): nnU-Net finds no case",
                   help=f"set \"file_ending\": \"{actual}\" in dataset.json")


def macosx_folder(rel: str, n: int) -> Finding:
    """DG102: a `__MACOSX` folder (what macOS's zip leaves behind) holding `n` files."""
    return finding("DG102", rel, f"{MACOSX} '__MACOSX' ({n} file{'s' if n != 1 else ''} of resource "
                                 f"forks and metadata, no data)",
                   severity=Severity.WARNING, fix=Fix.QUARANTINE,   # nnU-Net lists files only, never it
                   help="delete the folder, or run dataguard repair: it quarantines every file in it")


# --- folding ------------------------------------------------------------------------------------
def _kind(f: Finding) -> str | None:
    if f.code == "DG311":
        return "v1"
    if f.code == "DG303" and f.message.startswith(LABEL_SUFFIX):
        return "label-suffix"
    if f.code == "DG303" and f.message.startswith(DOT_CHANNEL):
        return "dot"
    if f.code == "DG301" and f.message.startswith(ENDING_MISMATCH) and _ENDING.search(f.message):
        return "ending"
    if f.code == "DG102" and f.message.startswith(MACOSX):
        return "macosx"
    return None


def _explains(kind: str, root: Finding, f: Finding) -> bool:
    """Is `f` one of the findings `root` (of that kind) causes?"""
    if kind == "v1":
        return f.code in ("DG301", "DG404")
    if kind == "label-suffix":
        return f.case == root.case and (f.code in ("DG207", "DG503")
                                        or (f.code == "DG303" and f.message == NO_LABEL))
    if kind == "dot":
        return (f.case == root.case and (f.code in ("DG207", "DG503")
                                         or (f.code == "DG303" and f.message.startswith(NO_IMAGE)))
                ) or (f.code == "DG305" and DUE_TO_DOTS in f.message)
    if kind == "ending":
        actual = _ENDING.search(root.message).group(1)
        name = f.path.rsplit("/", 1)[-1]
        in_image_dir = f.path.startswith(_RAW_IMAGE_DIRS) and f.path.count("/") == 2
        return f.code == "DG305" or (f.code == "DG104" and f.message.startswith(UNEXPECTED)
                                     and in_image_dir and name.endswith(actual))
    if kind == "macosx":
        return f.code in ("DG101", "DG102", "DG104") and f.path.startswith(root.path + "/")
    return False


def explained_count(f: Finding) -> int:
    """How many other findings `f` explains (0 for a finding fold did not touch)."""
    m = _EXPLAINS.search(f.message)
    return int(m.group(1)) if m else 0


def fold(findings: list[Finding]) -> list[Finding]:
    """The findings of one dataset with every cascade folded into its root finding.

    A finding a root explains is dropped and counted on the first root that explains it; a
    root's message then ends in "(explains N other findings)", and it takes the highest
    severity of what it explains (folding never makes a dataset pass a gate it failed).
    Roots are never folded into each other. Pure and idempotent: fold(fold(x)) == fold(x);
    order is kept.
    """
    roots = [(i, k, f) for i, f in enumerate(findings) if (k := _kind(f)) is not None]
    if not roots:
        return list(findings)
    root_at = {i for i, _, _ in roots}
    counts = {i: 0 for i in root_at}
    worst = {i: f.severity for i, _, f in roots}
    dropped = set()
    for j, f in enumerate(findings):
        if j in root_at:
            continue
        for i, kind, root in roots:
            if _explains(kind, root, f):
                counts[i] += 1
                worst[i] = max(worst[i], f.severity)
                dropped.add(j)
                break
    out = []
    for j, f in enumerate(findings):
        if j in dropped:
            continue
        if counts.get(j):
            n = explained_count(f) + counts[j]
            base = _EXPLAINS.sub("", f.message)
            f = replace(f, message=f"{base} (explains {n} other finding{'s' if n != 1 else ''})",
                        severity=worst[j])
        out.append(f)
    return out
