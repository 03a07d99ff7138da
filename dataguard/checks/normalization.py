"""DG313: a channel name that picks a normalization its images contradict.

nnU-Net picks each channel's normalization from its name in `channel_names`, case-insensitively
(`nnunetv2/preprocessing/normalization/map_channel_name_to_normalization.py`:
`mapping.get(name.casefold())`): `ct` -> CTNormalization (one clip range and mean/std from the
whole dataset's foreground), `nonorm`, `zscore`, `rescale_to_0_1`, `rgb_to_0_1`, and any other
name -> per-image z-score, silently. The rules, on the intensity percentiles (p1, p50, p99 of a
fixed stride of voxels) the raw-image check recorded while it decoded each training image:

- CT-like name that is not `ct`: a word `ct` in it (`cardiac CT`, `CT ` with a space, `CT_art`)
  or a CT acronym (`CTA`, `NCCT`, `CECT`, ...): nnU-Net z-scores it per image. Name alone.
- `ct` over images not in Hounsfield units: every training image's p1 >= 0 (a CT in HU has air
  at -1000 and fat below 0 in far more than 1% of its voxels); MR or PET intensities, whose scale
  differs per image, normalized with one dataset-wide range.
- HU under an MR or PET name: at least 90% of the training images HU-like: p1 in [-3100, -500]
  (air, or the -1024/-2048/-3024 nnU-Net's CTs pad with), p50 in [-1100, 500] and p99 in
  [0, 3100]. An MR phase image (about -4096..4095) or magnitude (>= 0) is neither.

Reads no image: the facts are in the manifest; nothing without them (a preprocessed-only
dataset gets the name rule only).
"""
from __future__ import annotations

import re

from ..findings import Finding, finding
from ..spec import parse_spec
from .cases import DatasetView
from .consistency import raw_channels

# nnU-Net's own table (checked against nnunetv2 in tests/test_normalization.py)
NNUNET_SCHEMES = {"ct": "CTNormalization", "nonorm": "NoNormalization", "zscore": "ZScoreNormalization",
                  "rescale_to_0_1": "RescaleTo01Normalization", "rgb_to_0_1": "RGBTo01Normalization"}
DEFAULT_SCHEME = "ZScoreNormalization"
CT_WORDS = frozenset({"ct", "cta", "ctp", "ctv", "cect", "ncct", "ldct", "hrct", "mdct", "dect", "ctac", "4dct"})
MR_WORDS = frozenset({"mr", "mri", "t1", "t2", "t1w", "t2w", "t1c", "t1ce", "t1gd", "t1post", "t1pre", "flair",
                      "dwi", "adc", "pd", "pdw", "swi", "bold", "cine", "lge", "dce", "t2star", "mprage",
                      "pet", "suv"})
HU_P1 = (-3100.0, -500.0)
HU_P50 = (-1100.0, 500.0)
HU_P99 = (0.0, 3100.0)
HU_SHARE = 0.9
SOURCE = "nnunetv2/preprocessing/normalization/map_channel_name_to_normalization.py"


def scheme(name: str) -> str:
    """The normalization nnU-Net picks for a channel name (its own rule: casefold, else z-score)."""
    return NNUNET_SCHEMES.get(name.casefold(), DEFAULT_SCHEME)


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^0-9a-z]+", name.casefold()) if w]


def ct_like(name: str) -> bool:
    return any(w in CT_WORDS for w in _words(name))


def mr_like(name: str) -> bool:
    words = _words(name)
    return bool(words) and not ct_like(name) and any(w in MR_WORDS for w in words)


def hu_like(sig) -> bool:
    p1, p50, p99 = sig
    return HU_P1[0] <= p1 <= HU_P1[1] and HU_P50[0] <= p50 <= HU_P50[1] and HU_P99[0] <= p99 <= HU_P99[1]


def check_normalization(view: DatasetView) -> list[Finding]:
    """DG313 per channel of the dataset's channel_names."""
    spec = parse_spec(view.meta or {})
    if not spec.channels:
        return []
    where = "raw/dataset.json" if view.has_raw else "preprocessed/dataset.json"
    sigs: dict[int, list[list[float]]] = {}
    if view.has_raw:
        for f in raw_channels(view, spec.ending):
            sig = f.facts.get("signature")
            if f.split == "Tr" and sig and len(sig) == 3:
                sigs.setdefault(f.channel, []).append(sig)
    out = []
    for c, name in sorted(spec.channels.items()):
        got = _channel(c, name, sigs.get(c, []))
        if got:
            out.append(finding("DG313", where, got[0], help=got[1]))
    return out


def _channel(c: int, name: str, sigs: list[list[float]]) -> tuple[str, str] | None:
    said = f"channel {c} '{name}'"
    cite = "nnU-Net maps 'CT' (any case) alone to CT normalization"
    if name.casefold() == "ct":
        if not sigs or min(s[0] for s in sigs) < 0:
            return None
        top = max(s[2] for s in sigs)
        return (f"{said} gets CT normalization (one clip range and mean/std from the whole dataset), but "
                f"none of its {len(sigs)} training images is in Hounsfield units: no value below 0 in "
                f"any (1st percentiles >= 0, 99th up to {top:.4g}); MR or PET intensities, whose scale "
                f"differs per image",
                "name the channel after its modality (e.g. 'T2', 'PET': per-image z-score) in "
                "dataset.json and preprocess again; or convert the CT to HU")
    if ct_like(name):
        hu = sum(hu_like(s) for s in sigs)
        seen = f" ({hu} of its {len(sigs)} training images are in HU)" if sigs else ""
        return (f"nnU-Net normalizes {said} with per-image z-score: only 'CT' (any case) gets CT "
                f"normalization{seen}",
                f"rename it \"CT\" in dataset.json's channel_names (or \"zscore\" if per-image z-score is "
                f"meant) and preprocess again")
    if mr_like(name) and sigs:
        hu = [s for s in sigs if hu_like(s)]
        if len(hu) >= HU_SHARE * len(sigs):
            p1 = sorted(s[0] for s in hu)[len(hu) // 2]
            return (f"{said} is an MR/PET name (per-image z-score), but {len(hu)} of its {len(sigs)} "
                    f"training images are CT in Hounsfield units (1st percentile {p1:.4g}: air); "
                    f"{cite}",
                    "if it is a CT, name it \"CT\" in dataset.json and preprocess again; else check "
                    "the channel order and the files")
    return None
