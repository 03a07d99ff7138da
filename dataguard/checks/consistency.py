"""Consistency across cases and between training and test images: DG307-DG310.

nnU-Net checks each case on its own. What costs a submission is between cases: a few flipped
training cases, test images in another orientation, channels in the wrong order, test data
with another spacing or intensity scale, and the same image twice (leakage). Everything here
works on the facts the raw-image check recorded while it decoded each file anyway (axis
codes, voxel hash, intensity percentiles, spacing: `signature.py`), so a rescan costs nothing
new and the manifest keeps them.

- DG307: a channel file with more than one component or dimension, a case whose two channels
  are the same image, or whose channels look swapped (channel a's intensity signature sits
  where the other cases have channel b's, and b's where they have a's).
- DG308: orientation (axis codes) unlike the training majority: warning for a training case,
  error for a test image.
- DG309: a test image unlike the training data: spacing that makes the resampled array grow,
  intensities outside every training case's range, a CT not in HU.
- DG310: the same voxels twice, within imagesTr or across imagesTr and the test images.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..findings import Finding, Fix, Severity, finding
from ..spec import parse_spec
from .cases import DatasetView

GROWTH_WARN = 2.0          # DG309: resampling to the training spacing multiplies the voxels by more
SWAP_MIN_CASES = 4         # DG307: cases needed before channel signatures say anything
SWAP_RATIO = 0.25          # swapped when the crossed distance is below this share of the straight one
SWAP_MIN_DISTANCE = 1.0    # ... and the straight one is at least this many typical spreads
CT_MEDIAN_HU = (-1100.0, 500.0)
REORIENT = ("reorient it to the training orientation, image and label together: nibabel "
            "as_closest_canonical, or SimpleITK DICOMOrient(img, '{codes}')")


@dataclass
class ChannelFile:
    split: str               # "Tr" or "Ts" (or a test folder's name)
    case: str
    channel: int
    rel: str
    facts: dict


@dataclass
class TrainingProfile:
    """What training saw, per channel: orientation majority, spacings, intensity ranges, hashes."""
    axcodes: str | None = None
    axcodes_share: float = 0.0
    spacing: list[float] | None = None                   # median per axis (the file's axis order)
    ranges: dict[int, tuple[float, float]] = field(default_factory=dict)     # channel -> (min p1, max p99)
    medians: dict[int, list[float]] = field(default_factory=dict)           # channel -> median signature
    spread: dict[int, float] = field(default_factory=dict)                  # channel -> median (p99 - p1)
    hashes: dict[str, ChannelFile] = field(default_factory=dict)
    channel_names: dict[int, str] = field(default_factory=dict)


def _median(values) -> float:
    """The median (the statistics module costs 10 ms of import at every CLI start)."""
    v = sorted(values)
    n = len(v)
    return float(v[n // 2]) if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def channel_of(name: str, ending: str) -> tuple[str, int] | None:
    """("case", 0) for "case_0000<ending>"; None for anything else."""
    if not name.endswith(ending):
        return None
    stem = name[: -len(ending)]
    if len(stem) < 6 or stem[-5] != "_" or not stem[-4:].isdigit():
        return None
    return stem[:-5], int(stem[-4:])


def raw_channels(view: DatasetView, ending: str) -> list[ChannelFile]:
    """Every raw image channel file with its decoded facts (imagesTr and imagesTs)."""
    out = []
    for t in view.tasks:
        if t.where != "raw" or t.kind != "image":
            continue
        parts = t.rel.split("/")
        if len(parts) != 3 or parts[1] not in ("imagesTr", "imagesTs"):
            continue
        r = view.results.get(t.rel)
        got = channel_of(parts[2], ending)
        if r is None or got is None or "shape" not in r.facts:
            continue
        out.append(ChannelFile(parts[1][-2:], got[0], got[1], t.rel, r.facts))
    return out


def profile(train: list[ChannelFile], channel_names: dict[int, str]) -> TrainingProfile:
    p = TrainingProfile(channel_names=dict(channel_names))
    codes = Counter(f.facts.get("axcodes") for f in train if f.channel == 0 and f.facts.get("axcodes"))
    if codes:
        p.axcodes, n = codes.most_common(1)[0]
        p.axcodes_share = n / sum(codes.values())
    spacings = [f.facts["spacing"] for f in train if f.channel == 0 and len(f.facts.get("spacing") or []) >= 2]
    if spacings:
        dims = min(len(s) for s in spacings)
        p.spacing = [_median(s[i] for s in spacings) for i in range(dims)]
    by_channel: dict[int, list[list[float]]] = defaultdict(list)
    for f in train:
        if f.facts.get("signature"):
            by_channel[f.channel].append(f.facts["signature"])
    for c, sigs in by_channel.items():
        p.ranges[c] = (min(s[0] for s in sigs), max(s[2] for s in sigs))
        p.medians[c] = [_median(s[i] for s in sigs) for i in range(3)]
        p.spread[c] = max(_median(s[2] - s[0] for s in sigs), 1e-6)
    for f in train:
        if f.facts.get("voxel_hash"):
            p.hashes.setdefault(f.facts["voxel_hash"], f)
    return p


def _distance(sig: list[float], p: TrainingProfile, c: int) -> float:
    m, s = p.medians[c], p.spread[c]
    return sum(abs(a - b) for a, b in zip(sig, m)) / (3 * s)


def check_consistency(view: DatasetView) -> list[Finding]:
    """DG307-DG310 over a raw dataset's imagesTr and imagesTs."""
    if not view.has_raw:
        return []
    spec = parse_spec(view.meta or {})
    files = raw_channels(view, spec.ending)
    train = [f for f in files if f.split == "Tr"]
    test = [f for f in files if f.split == "Ts"]
    prof = profile(train, spec.channels)
    out = channel_contract(train, prof) + orientation(train, prof, training=True)
    out += duplicates_within(train)
    out += against_training(test, prof)
    return out


def channel_contract(files: list[ChannelFile], prof: TrainingProfile) -> list[Finding]:
    """DG307: one component per channel file; no case with two identical or swapped channels."""
    out = []
    for f in files:
        shape = f.facts.get("shape") or []
        comps = f.facts.get("components") or 1
        if comps > 1 or (len(shape) > 3 and math.prod(shape[3:]) > 1):
            what = f"{comps} components per voxel (an RGB(A) image?)" if comps > 1 else \
                f"shape {tuple(shape)}: a {len(shape)}D image where nnU-Net expects one 3D (or 2D) volume"
            out.append(finding("DG307", f.rel, f"channel {f.channel} holds {what}", case=f.case,
                               help="save each channel as its own single-component file "
                                    f"({f.case}_0000, {f.case}_0001, ...) as channel_names lists them"))
    cases: dict[str, dict[int, ChannelFile]] = defaultdict(dict)
    for f in files:
        cases[f.case][f.channel] = f
    names = prof.channel_names
    enough = all(len([f for f in files if f.channel == c and f.facts.get("signature")]) >= SWAP_MIN_CASES
                 for c in prof.medians) and len(prof.medians) >= 2
    for case, chans in sorted(cases.items()):
        by_hash: dict[str, int] = {}
        for c, f in sorted(chans.items()):
            h = f.facts.get("voxel_hash")
            if h and h in by_hash:
                out.append(finding("DG307", f.rel, f"channel {c} is the same image as channel {by_hash[h]} "
                                   f"(identical voxels)", case=case,
                                   help="one modality was saved under two channel numbers: re-export the "
                                        "missing channel"))
            elif h:
                by_hash[h] = c
        if not enough:
            continue
        done = set()
        for a in sorted(chans):
            for b in sorted(chans):
                if a >= b or (a, b) in done or a not in prof.medians or b not in prof.medians:
                    continue
                sa, sb = chans[a].facts.get("signature"), chans[b].facts.get("signature")
                if not sa or not sb:
                    continue
                straight = _distance(sa, prof, a) + _distance(sb, prof, b)
                crossed = _distance(sa, prof, b) + _distance(sb, prof, a)
                if straight >= 2 * SWAP_MIN_DISTANCE and crossed < SWAP_RATIO * straight:
                    done.add((a, b))
                    na, nb = names.get(a, str(a)), names.get(b, str(b))
                    out.append(finding(
                        "DG307", chans[a].rel,
                        f"channels {a} ({na}) and {b} ({nb}) look swapped: channel {a}'s intensities "
                        f"(median {sa[1]:.4g}) are where the other cases have {nb} (median "
                        f"{prof.medians[b][1]:.4g}), and channel {b}'s where they have {na}", case=case,
                        help=f"swap the files: mv {case}_{a:04d} -> {case}_{b:04d} and back"))
    return out


def orientation(files: list[ChannelFile], prof: TrainingProfile, training: bool) -> list[Finding]:
    """DG308: channel 0 of each case against the training majority's axis codes."""
    if prof.axcodes is None:
        return []
    out = []
    for f in files:
        codes = f.facts.get("axcodes")
        if f.channel != 0 or not codes or codes == prof.axcodes:
            continue
        who = "training case" if training else "test image"
        out.append(finding(
            "DG308", f.rel, f"{who} oriented {codes}, the training data {prof.axcodes} "
            f"({prof.axcodes_share:.0%} of training cases): nnU-Net uses only the spacing, so this array is "
            f"mirrored or permuted against the others", case=f.case,
            severity=Severity.WARNING if training else Severity.ERROR,
            fix=Fix.REORIENT if training and f.rel.endswith((".nii.gz", ".nii")) else None,
            help=("dataguard repair reorients it, image and label together (undo: dataguard restore); or "
                  if training else "") + REORIENT.format(codes=prof.axcodes)))
    return out


def duplicates_within(files: list[ChannelFile]) -> list[Finding]:
    """DG310: two training cases with the same voxels (any channel)."""
    first: dict[str, ChannelFile] = {}
    out, seen = [], set()
    for f in sorted(files, key=lambda f: (f.case, f.channel)):
        h = f.facts.get("voxel_hash")
        if not h:
            continue
        other = first.get(h)
        if other is None:
            first[h] = f
        elif other.case != f.case and (other.case, f.case) not in seen:
            seen.add((other.case, f.case))
            out.append(_duplicate(f, other, "imagesTr"))
    return out


def _duplicate(f: ChannelFile, other: ChannelFile, where: str) -> Finding:
    return finding("DG310", f.rel, f"the same image as {other.rel} (identical voxels, {where}): cross-validation "
                   f"or the test score would see a case it trained on", case=f.case,
                   help=f"remove one copy; if they are one patient's scans, keep them in one fold")


def against_training(test: list[ChannelFile], prof: TrainingProfile, place: str = "imagesTs") -> list[Finding]:
    """DG308 (error), DG309 and DG310 for test images, against the training profile."""
    out = orientation(test, prof, training=False)
    for f in test:
        h = f.facts.get("voxel_hash")
        if h and h in prof.hashes:
            out.append(_duplicate(f, prof.hashes[h], f"imagesTr and {place}"))
        out += _unlike_training(f, prof)
    return out


def _unlike_training(f: ChannelFile, prof: TrainingProfile) -> list[Finding]:
    out = []
    sp = f.facts.get("spacing") or []
    if f.channel == 0 and prof.spacing and len(sp) >= len(prof.spacing) and all(x > 0 for x in sp):
        growth = math.prod(t / s for t, s in zip(prof.spacing, sp))
        finest = max(t / s for t, s in zip(prof.spacing, sp))
        if growth > GROWTH_WARN or finest > GROWTH_WARN:
            n = math.prod((f.facts.get("shape") or [0])[:len(prof.spacing)])
            out.append(finding(
                "DG309", f.rel, f"spacing {_fmt(sp)} is finer than the training data's {_fmt(prof.spacing)}: "
                f"resampled to it, this image grows x{growth:.1f} ({n:,} -> {int(n * growth):,} voxels)",
                case=f.case, help="resample the test images to the training spacing first, or expect the "
                                  "memory and time this factor costs (dataguard doctor sizes -npp/-nps)"))
    sig = f.facts.get("signature")
    rng = prof.ranges.get(f.channel)
    name = prof.channel_names.get(f.channel, "")
    if sig and name.strip().upper() == "CT" and not (CT_MEDIAN_HU[0] <= sig[1] <= CT_MEDIAN_HU[1]):
        out.append(finding("DG309", f.rel, f"CT median {sig[1]:.4g}: not in Hounsfield units (a CT's median "
                           f"lies between {CT_MEDIAN_HU[0]:g} and {CT_MEDIAN_HU[1]:g} HU)", case=f.case,
                           help="apply the rescale slope/intercept (or undo a normalisation) so the "
                                "test CT is in HU like the training data"))
    elif sig and rng and not (rng[0] <= sig[1] <= rng[1]):
        out.append(finding("DG309", f.rel, f"channel {f.channel} ({name or '?'}) median {sig[1]:.4g} lies outside "
                           f"every training case's intensities ({rng[0]:.4g} to {rng[1]:.4g}): another modality "
                           f"or another scaling than the model saw", case=f.case,
                           help="check the channel order and the intensity scaling of this test image"))
    return out


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"


def summary(view: DatasetView) -> dict | None:
    """What the report's consistency section shows of one raw dataset: orientation counts
    (and who is in the minority), each case's per-channel intensity percentiles, and test
    images' spacing against training's (with the growth). None without raw images."""
    if not view.has_raw:
        return None
    spec = parse_spec(view.meta or {})
    files = raw_channels(view, spec.ending)
    if not files:
        return None
    train = [f for f in files if f.split == "Tr"]
    prof = profile(train, spec.channels)
    orient: dict[str, list[str]] = defaultdict(list)
    for f in train:
        if f.channel == 0:
            orient[f.facts.get("axcodes") or "?"].append(f.case)
    channels: dict[int, list[dict]] = defaultdict(list)
    for f in files:
        sig = f.facts.get("signature")
        if sig:
            channels[f.channel].append({"case": f.case, "split": f.split, "p1": sig[0], "p50": sig[1], "p99": sig[2]})
    spacing = []
    for f in files:
        if f.split != "Ts" or f.channel != 0 or not prof.spacing:
            continue
        sp = f.facts.get("spacing") or []
        growth = math.prod(t / s for t, s in zip(prof.spacing, sp)) if sp and all(x > 0 for x in sp) else None
        spacing.append({"case": f.case, "spacing": sp, "growth": growth})
    return {"dataset": view.name, "majority": prof.axcodes, "orientation": dict(orient),
            "channel_names": dict(spec.channels), "channels": dict(channels),
            "training_spacing": prof.spacing, "test_spacing": spacing}
