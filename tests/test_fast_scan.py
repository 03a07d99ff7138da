"""What makes a scan cheaper must not change what it finds: `--select DG5` reads only the
files whose facts the split checks use, and value summaries count the same however the
bytes arrive."""
from __future__ import annotations

import itertools
import json

import nibabel as nib
import numpy as np
from conftest import make_tiny_pre
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dataguard
from dataguard.checks import Selection
from dataguard.checks.base import GATHER, ValueSummary


def test_select_dg5_checks_only_raw_labels_and_properties():
    sel = Selection.of(select=["DG5"])
    assert sel.for_kind("label", "raw") == ("raw-image",)       # labelsTr: the labels per case
    assert sel.for_kind("pkl", "config") == ("pkl",)            # class_locations: the same
    assert sel.for_kind("label", "gt") == ()                    # gt_segmentations: a copy nobody reads
    assert sel.for_kind("image", "raw") == ()
    every = Selection.of()
    assert every.for_kind("label", "gt") == ("junk", "empty", "raw-image")
    # raw training labels also go through DG405's round trip (label-roundtrip needs it there only)
    assert every.for_kind("label", "raw") == ("junk", "empty", "raw-image", "roundtrip-case")


def _dataset_with_gt(tmp_path):
    """10 cases, label 3 missing from every third, gt_segmentations beside, a split whose
    first validation fold lacks label 3 (DG504)."""
    cases = {f"case_{i}": (1, 2) if i % 3 == 0 else (1, 2, 3) for i in range(10)}
    ds = make_tiny_pre(tmp_path, case_labels=cases)
    gt = ds / "gt_segmentations"
    gt.mkdir()
    for i, case in enumerate(cases):
        nib.save(nib.Nifti1Image(np.full((8, 8, 4), i % 4, np.uint8), np.eye(4)), gt / f"{case}.nii.gz")
    names = sorted(cases)
    val0 = ["case_0", "case_3"]
    splits = [{"train": [c for c in names if c not in val0], "val": val0}]
    splits += [{"train": [c for c in names if c != v], "val": [v]} for v in ("case_1", "case_2", "case_4", "case_5")]
    (ds / "splits_final.json").write_text(json.dumps(splits))
    return ds


def test_select_dg5_finds_what_the_full_scan_finds_and_reads_only_pkl(tmp_path):
    ds = _dataset_with_gt(tmp_path)
    full = dataguard.scan([str(ds)], manifest_dir=tmp_path / "m-full", full=True)
    sel = dataguard.scan([str(ds)], manifest_dir=tmp_path / "m-sel", full=True, select=["DG5"])
    dg5 = [f for f in full.findings if f.code.startswith("DG5")]
    assert dg5 and sel.findings == dg5
    assert sel.stats.read and all(r.endswith(".pkl") for r in sel.stats.read), sel.stats.read
    # what the selected scan recorded does not stand in for checks it did not run
    later = dataguard.scan([str(ds)], manifest_dir=tmp_path / "m-sel")
    assert later.findings == full.findings


def test_select_dg5_of_preprocessed_data_imports_no_numpy(tmp_path):
    """Labels per case come from the .pkl files' class_locations, read by safe_pickle's light
    walk: a fresh process never imports numpy for them, nor decodes gt_segmentations."""
    import subprocess
    import sys

    ds = _dataset_with_gt(tmp_path)
    code = ("import sys, dataguard; r = dataguard.scan([sys.argv[1]], manifest_dir=sys.argv[2], full=True, "
            "select=['DG5']); assert r.findings; print(sorted(m for m in ('numpy', 'nibabel', 'blosc2') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(ds), str(tmp_path / "m")], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


_DTYPES = st.sampled_from(["i1", "u1", "i2", "<u2", ">i2", "<i4", "b1"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DTYPES, st.integers(0, 300_000), st.integers(0, 2 ** 32 - 1), st.sampled_from([3, 40, 41, 300, 70_000]),
       st.lists(st.floats(0, 1), max_size=12))
@example(">i2", 149992, 0, 41, [0.0625])          # a big-endian value split at an odd byte, once miscounted
def test_value_counts_do_not_depend_on_how_the_bytes_arrive(dtype, n, seed, span, cuts):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    info = np.iinfo(dt) if dt.kind in "iu" else None
    lo = 0 if info is None else max(info.min, -span // 2)
    hi = 1 if info is None else min(info.max, lo + span)
    a = rng.integers(lo, hi + 1, n).astype(dt)
    raw = a.tobytes()
    points = sorted({int(c * len(raw)) for c in cuts} | {0, len(raw)})
    whole = ValueSummary(dt, track_values=True, check_finite=False)
    whole.feed(raw)
    pieces = ValueSummary(dt, track_values=True, check_finite=False)
    for x, y in itertools.pairwise(points):
        pieces.feed(memoryview(raw)[x:y])
    assert whole.counts() == pieces.counts()
    vals, cnt = np.unique(a, return_counts=True)       # the other byte order too (it once came out swapped)
    assert whole.counts() == {int(v): int(c) for v, c in zip(vals, cnt)}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["<f4", ">f8", "<f2"]), st.integers(0, 200_000), st.integers(0, 2 ** 32 - 1),
       st.integers(0, 5), st.lists(st.integers(1, GATHER), max_size=8))
def test_non_finite_counts_do_not_depend_on_how_the_bytes_arrive(dtype, n, seed, bad, sizes):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n).astype(dtype)
    if n:
        a[rng.integers(0, n, bad)] = rng.choice([np.nan, np.inf, -np.inf], bad)
    raw = a.tobytes()
    s = ValueSummary(a.dtype, track_values=False, check_finite=True)
    pos = 0
    for size in sizes:
        s.feed(raw[pos:pos + size])
        pos += size
    s.feed(raw[pos:])
    assert s.nonfinite == int(np.count_nonzero(~np.isfinite(a)))
