"""DG313: a channel name that picks the wrong normalization (issue 30 item 2).

nnU-Net is the oracle for what a name maps to: its own `get_normalization_scheme`. The data
are real NIfTI files (nibabel), scanned by the real CLI in a subprocess: CT in Hounsfield units
(air at -1000 around the body), MR with an arbitrary scale per image.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from dataguard.checks.normalization import DEFAULT_SCHEME, NNUNET_SCHEMES, ct_like, hu_like, mr_like, scheme
from dataguard.demo.synthetic import write_raw_dataset

NAMES = ["CT", "ct", "Ct", "CT ", " CT", "CTA", "cta", "cardiac CT", "CT_arterial", "NCCT", "CECT", "MRI", "T2",
         "T1w", "FLAIR", "PET", "nonorm", "noNorm", "zscore", "ZScore", "rescale_to_0_1", "rgb_to_0_1", "image",
         "0", "ADC", "computed tomography", "ctx", "octopus"]


def test_scheme_is_nnunets_own_mapping():
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import (
        channel_name_to_normalization_mapping,
        get_normalization_scheme,
    )

    assert {k: v.__name__ for k, v in channel_name_to_normalization_mapping.items()} == NNUNET_SCHEMES
    for name in NAMES:
        assert scheme(name) == get_normalization_scheme(name).__name__, name
    assert get_normalization_scheme("CTA").__name__ == DEFAULT_SCHEME


def test_ct_like_names_are_the_ones_nnunet_does_not_treat_as_ct():
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    flagged = [n for n in NAMES if ct_like(n) and get_normalization_scheme(n).__name__ != "CTNormalization"]
    assert flagged == ["CT ", " CT", "CTA", "cta", "cardiac CT", "CT_arterial", "NCCT", "CECT"]
    assert not any(ct_like(n) for n in ("ctx", "octopus", "image", "MRI", "computed tomography"))
    assert mr_like("T2") and mr_like("FLAIR") and mr_like("PET") and not mr_like("CT") and not mr_like("image")


def _ct(rng, shape) -> np.ndarray:
    """A CT slab in HU: air outside an elliptic body of soft tissue with fat and a bone."""
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.65) ** 2 < 1
    img = np.full(shape, -1000.0)
    img[body] = 40.0
    img[body & ((x / 0.75) ** 2 + (y / 0.6) ** 2 > 0.8)] = -100.0           # subcutaneous fat
    img[(x ** 2 + (y + 0.4) ** 2) < 0.02] = 700.0                             # a vertebra
    return (img + rng.normal(0, 15, shape)).astype(np.int16)


def _mr(rng, shape, scale) -> np.ndarray:
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = ((x / 0.8) ** 2 + (y / 0.65) ** 2 < 1)[..., None] * np.ones(shape)
    return np.clip(scale * (body * 0.6 + rng.normal(0, 0.03, shape)), 0, None).astype(np.float32)


def make(root: Path, channel: str, kind: str, n: int = 6) -> Path:
    """A raw dataset of `n` real NIfTI cases (demo labels) whose images are `kind` ("ct", "mr"),
    channel 0 named `channel`."""
    import nibabel as nib

    ds = write_raw_dataset(root / "nnUNet_raw", 313, "Norm", n_cases=n, shape=(32, 32, 6))
    rng = np.random.default_rng(1)
    for i, p in enumerate(sorted((ds / "imagesTr").glob("*_0000.nii.gz"))):
        old = nib.load(p)
        shape = old.shape
        img = _ct(rng, shape) if kind == "ct" else _mr(rng, shape, scale=[300, 1200, 4000][i % 3])
        nib.save(nib.Nifti1Image(img, old.affine), p)
    meta = json.loads((ds / "dataset.json").read_text())
    meta["channel_names"] = {"0": channel}
    (ds / "dataset.json").write_text(json.dumps(meta))
    return ds


def scan(path: Path, *extra) -> list[dict]:
    import subprocess

    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "dataguard", "scan", str(path), "--format", "json", *extra],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)["findings"]


def dg313(findings) -> list[dict]:
    return [f for f in findings if f["code"] == "DG313"]


@pytest.mark.parametrize("name", ["CTA", "cardiac CT", "CT "])
def test_ct_like_name_gets_zscore_and_is_said(tmp_path, name):
    ds = make(tmp_path, name, "ct")
    [f] = dg313(scan(ds))
    assert f["severity"] == "warning" and f["path"] == "raw/dataset.json"
    assert f"nnU-Net normalizes channel 0 '{name}' with per-image z-score" in f["message"]
    assert "only 'CT' (any case) gets CT normalization" in f["message"]
    assert "(6 of its 6 training images are in HU)" in f["message"]
    assert '"CT"' in f["help"]


def test_mr_intensities_under_ct_are_said(tmp_path):
    ds = make(tmp_path, "CT", "mr")
    [f] = dg313(scan(ds))
    assert "gets CT normalization" in f["message"] and "none of its 6 training images is in Hounsfield" \
        in f["message"]


def test_hu_intensities_under_an_mr_name_are_said(tmp_path):
    ds = make(tmp_path, "T2", "ct")
    [f] = dg313(scan(ds))
    assert "channel 0 'T2' is an MR/PET name" in f["message"] and "6 of its 6" in f["message"]


@pytest.mark.parametrize("name,kind", [("CT", "ct"), ("ct", "ct"), ("T2", "mr"), ("MRI", "mr"), ("image", "ct"),
                                       ("zscore", "ct")])
def test_names_that_match_their_images_are_clean(tmp_path, name, kind):
    assert dg313(scan(make(tmp_path, name, kind))) == []


def test_signatures_decide_hu():
    assert hu_like([-1000.0, 30.0, 600.0]) and hu_like([-3024.0, -800.0, 900.0])
    assert not hu_like([0.0, 120.0, 900.0])            # MR magnitude
    assert not hu_like([-4050.0, 0.0, 4050.0])         # MR phase
    assert not hu_like([-3.1, 0.0, 3.1])               # phase in radians


def test_a_rescan_reuses_it_and_a_rename_updates_it(tmp_path):
    ds = make(tmp_path, "CTA", "ct")
    assert len(dg313(scan(ds))) == 1
    assert len(dg313(scan(ds))) == 1
    meta = json.loads((ds / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT"}
    (ds / "dataset.json").write_text(json.dumps(meta))
    assert dg313(scan(ds)) == []


def test_demo_and_real_project_have_none(real_project):
    found = scan(real_project / "nnUNet_raw") + scan(real_project / "nnUNet_preprocessed")
    assert [f for f in found if f["code"] in ("DG313", "DG507")] == []
