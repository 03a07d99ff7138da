"""Small files must not crash, hang or blow up a reader (issue 27, section 2).

Each test builds its hostile file itself (a sparse 2.2 GB `.pkl` or fingerprint, a blosc2 frame
of a few hundred bytes declaring gigabytes, a crafted `.nii.gz`), scans it through the CLI in a
child process under the audit hook (a clean twin is scanned first, outside the watch, so lazy
imports are not recorded), and asserts the finding that names the limit, a time bound and, for
the memory cases, the child's peak RSS.
"""
from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import LABELS, PLANS, make_tiny_pre, props, write_pkl

CFG = "nnUNetPlans_3d_fullres"
SPARSE = 2_200_000_000
HERE = Path(__file__).parent

CHILD = r"""
import io, json, resource, sys, time
from contextlib import redirect_stdout
sys.path.insert(0, sys.argv[1])
from audit import watch
from dataguard.cli import main

def scan(ds, m):
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["scan", ds, "--manifest-dir", m, "--format", "json", "--no-progress", "-j", "1",
                   "--fail-on", "never"])
    return rc, buf.getvalue()

tests, warm, target, mwarm, m, result = sys.argv[1:7]
scan(warm, mwarm)
t = time.monotonic()
with watch(allow_writes=[m]) as events:
    rc, out = scan(target, m)
seconds = time.monotonic() - t
# VmHWM: this process's own high-water mark since exec (ru_maxrss would count the parent's at fork)
try:
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
with open(result, "w") as f:
    json.dump({"rc": rc, "seconds": seconds, "events": events, "out": out, "peak_mb": peak / 1024}, f)
"""


def scan_child(tmp_path: Path, warm: Path, target: Path, timeout: float = 150) -> dict:
    """Scan `warm`, then `target` under the audit hook, in a fresh interpreter: its result, the
    target's findings, seconds and the child's peak RSS in MB."""
    result = tmp_path / "result.json"
    try:
        subprocess.run([sys.executable, "-c", CHILD, str(HERE), str(warm), str(target), str(tmp_path / "m0"),
                        str(tmp_path / "m"), str(result)], timeout=timeout, check=True,
                       capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the scan ran past {timeout} s")
    except subprocess.CalledProcessError as e:
        pytest.fail(f"the scan child failed ({e.returncode}): {e.stderr[-2000:]}")
    r = json.loads(result.read_text())
    assert r["events"] == [], r["events"]
    assert r["rc"] in (0, 1), r            # never 3 (internal error)
    r["findings"] = json.loads(r["out"])["findings"]
    return r


def at(r: dict, code: str, path: str) -> list[dict]:
    return [f for f in r["findings"] if f["code"] == code and f["path"] == path]


def no_dg001(r: dict) -> None:
    assert not [f for f in r["findings"] if f["code"] == "DG001"], r["findings"]


def sparse(path: Path, size: int = SPARSE) -> None:
    """`path` keeps its bytes and grows to `size` with a hole: gigabytes that take no disk."""
    with open(path, "r+b") as f:
        f.truncate(size)


# --- whole-file reads: a sparse .pkl, fingerprint or plans is not read whole ---------------------------
@pytest.mark.parametrize("name,code,limit", [
    (f"{CFG}/case_0.pkl", "DG204", "64 MB limit"),
    ("dataset_fingerprint.json", "DG211", "32 MB limit"),
    ("nnUNetPlans.json", "DG211", "32 MB limit"),
])
def test_sparse_metadata_is_a_finding_naming_the_limit(name, code, limit, tmp_path):
    warm = make_tiny_pre(tmp_path / "warm")
    ds = make_tiny_pre(tmp_path / "hostile")
    sparse(ds / name)
    r = scan_child(tmp_path, warm, ds)
    no_dg001(r)
    [f] = at(r, code, f"preprocessed/{name}")
    assert limit in f["message"] and str(SPARSE) in f["message"], f
    assert r["peak_mb"] < 400, r["peak_mb"]              # was 4.2 GB: read whole, then decoded
    assert r["seconds"] < 60, r["seconds"]               # hashing the hole: ~2 s


# --- .b2nd: chunks bounded by the declared shape, decompressed in bounded pieces -----------------------
def b2nd_dataset(root: Path) -> Path:
    """make_tiny_pre in the blosc2 layout (nnU-Net >= 2.6): case.b2nd + case_seg.b2nd + case.pkl."""
    import blosc2

    ds = make_tiny_pre(root)
    for p in (ds / CFG).glob("*.npz"):
        p.unlink()
    for i in range(3):
        blosc2.asarray(np.random.default_rng(i).normal(size=(1, 4, 8, 8)).astype(np.float32),
                       urlpath=str(ds / CFG / f"case_{i}.b2nd"), mode="w", chunks=(1, 1, 8, 8))
        blosc2.asarray((np.arange(256).reshape(1, 4, 8, 8) % 4).astype(np.int16),
                       urlpath=str(ds / CFG / f"case_{i}_seg.b2nd"), mode="w", chunks=(1, 1, 8, 8))
    return ds


def test_b2nd_chunk_bigger_than_its_array_is_dg203(tmp_path):
    """A 278-byte frame: a (1, 4, 8, 8) array in one all-zeros chunk of 2.1 GB."""
    import blosc2

    warm, ds = b2nd_dataset(tmp_path / "warm"), b2nd_dataset(tmp_path / "hostile")
    p = ds / CFG / "case_0.b2nd"
    p.unlink()
    blosc2.zeros((1, 4, 8, 8), dtype=np.float32, chunks=(1, 1024, 1024, 500), blocks=(1, 64, 64, 50),
                 urlpath=str(p), mode="w")
    assert p.stat().st_size < 1024
    r = scan_child(tmp_path, warm, ds)
    no_dg001(r)
    [f] = at(r, "DG203", f"preprocessed/{CFG}/case_0.b2nd")
    assert "chunks (1, 1024, 1024, 500) larger than the shape (1, 4, 8, 8)" in f["message"], f
    assert r["peak_mb"] < 400, r["peak_mb"]             # was 2.06 GB
    assert r["seconds"] < 30, r["seconds"]


def test_b2nd_large_chunk_is_decompressed_in_pieces(tmp_path):
    """A valid 512 MB chunk (one voxel of foreground, so no special chunk): summarised a few
    blocks at a time, never expanded whole; its voxel counts are exact."""
    import blosc2

    warm, ds = b2nd_dataset(tmp_path / "warm"), b2nd_dataset(tmp_path / "hostile")
    p = ds / CFG / "case_0_seg.b2nd"
    p.unlink()
    shape = (1, 512, 1024, 1024)
    a = blosc2.zeros(shape, dtype=np.uint8, chunks=shape, blocks=(1, 8, 256, 256), urlpath=str(p), mode="w")
    a[0, 3, 5, 7] = 1
    del a
    assert p.stat().st_size < 1 << 20
    r = scan_child(tmp_path, warm, ds)
    no_dg001(r)
    assert not [f for f in r["findings"] if f["path"].endswith("case_0_seg.b2nd")], r["findings"]
    assert r["peak_mb"] < 300, r["peak_mb"]             # the chunk alone is 512 MB
    assert r["seconds"] < 60, r["seconds"]
    from dataguard.checks.b2nd import check_b2nd
    from dataguard.checks.base import FileTask

    _, facts = check_b2nd(FileTask(str(p), f"preprocessed/{CFG}/case_0_seg.b2nd", "b2nd", "config", "case_0",
                                   labels=(0, 1, 2, 3)))
    assert facts["label_voxels"] == {"0": 512 * 1024 * 1024 - 1, "1": 1}


def test_b2nd_special_chunks_are_counted_not_expanded(tmp_path):
    """A 278-byte frame declares a 16 GB all-background segmentation (blosc2 writes all-zero chunks
    as 32-byte special chunks, and a frame of them stores hardly more than their count): its
    counts come from the chunk headers, never from 16 GB of decompressed zeros (2.6 s before)."""
    import time

    import blosc2

    from dataguard.checks.b2nd import check_b2nd
    from dataguard.checks.base import FileTask

    p = tmp_path / "case_0_seg.b2nd"
    shape = (1, 2048, 2048, 2000)
    blosc2.zeros(shape, dtype=np.int16, chunks=(1, 64, 128, 192), blocks=(1, 32, 32, 64), urlpath=str(p), mode="w")
    assert p.stat().st_size < 1024
    task = FileTask(str(p), f"preprocessed/{CFG}/case_0_seg.b2nd", "b2nd", "config", "case_0", labels=(0, 1))
    t = time.monotonic()
    found, facts = check_b2nd(task)
    assert time.monotonic() - t < 1.5                   # 5,632 chunk headers: 0.25 s
    ext = 1 * 2048 * 2048 * 2112                        # whole chunks: 2000 rounded up to 192s
    assert found == [] and facts["label_voxels"] == {"0": ext}


@pytest.mark.parametrize("make,role,want", [
    (lambda b, p: b.zeros((1, 4, 8, 8), dtype=np.int16, chunks=(1, 1, 8, 8), urlpath=p, mode="w"), "seg", {"0": 256}),
    (lambda b, p: b.full((1, 4, 8, 8), 2, dtype=np.int16, chunks=(1, 1, 8, 8), urlpath=p, mode="w"), "seg", {"2": 256}),
    (lambda b, p: b.asarray(np.full((1, 4, 8, 8), 3, np.uint8), chunks=(1, 1, 8, 8), urlpath=p, mode="w"), "seg",
     {"3": 256}),
    (lambda b, p: b.full((1, 4, 8, 8), np.nan, dtype=np.float32, chunks=(1, 2, 8, 8), urlpath=p, mode="w"), "data",
     256),
    (lambda b, p: b.asarray(np.full((1, 4, 8, 8), np.inf, np.float64), chunks=(1, 4, 8, 8), urlpath=p, mode="w"),
     "data", 256),
])
def test_b2nd_special_chunks_summarise_as_their_values(make, role, want, tmp_path):
    import blosc2

    from dataguard.checks.b2nd import check_b2nd
    from dataguard.checks.base import FileTask

    name = "case_0_seg.b2nd" if role == "seg" else "case_0.b2nd"
    p = tmp_path / name
    make(blosc2, str(p))
    found, facts = check_b2nd(FileTask(str(p), f"preprocessed/{CFG}/{name}", "b2nd", "config", "case_0",
                                       labels=(0, 1, 2, 3)))
    if role == "seg":
        assert found == [] and facts["label_voxels"] == want
    else:
        [f] = found
        assert f.code == "DG202" and f"holds {want} non-finite" in f.message


def test_b2nd_layout_agrees_with_what_nnunet_writes():
    """comp_blosc2_params (nnU-Net 2.8) never gives a layout dataguard refuses."""
    pytest.importorskip("nnunetv2")
    import random
    from types import SimpleNamespace

    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

    from dataguard.checks.b2nd import layout_problem

    rng = random.Random(0)
    for _ in range(500):
        image = (rng.randint(1, 3), *[rng.randint(1, 600) for _ in range(3)])
        patch = [rng.randint(8, 256) for _ in range(rng.choice((2, 3)))]
        item = rng.choice((1, 2, 4))
        blocks, chunks = comp_blosc2_params(image, patch, item)
        schunk = SimpleNamespace(typesize=item, chunksize=int(np.prod(chunks)) * item,
                                 blocksize=int(np.prod(blocks)) * item,
                                 nchunks=int(np.prod([-(-s // c) for s, c in zip(image, chunks)])))
        assert layout_problem(image, tuple(chunks), tuple(blocks), item, schunk, 1 << 20) is None, (image, patch)


# --- NIfTI --------------------------------------------------------------------------------------------
def nifti_bytes(arr, *, offset=None, dim1=None, pixdim1=None) -> bytes:
    """A single-file NIfTI-1 of `arr`, with header fields overwritten as asked."""
    import nibabel as nib

    bio = io.BytesIO()
    nib.Nifti1Image(arr, np.eye(4)).to_file_map({"image": nib.FileHolder(fileobj=bio),
                                                 "header": nib.FileHolder(fileobj=bio)})
    raw = bytearray(bio.getvalue())
    if offset is not None:
        struct.pack_into("<f", raw, 108, float(offset))
    if dim1 is not None:
        struct.pack_into("<h", raw, 42, dim1)
    if pixdim1 is not None:
        struct.pack_into("<f", raw, 80, pixdim1)
    return bytes(raw)


def raw_dataset(root: Path, image: bytes | None = None) -> Path:
    """nnUNet_raw/Dataset778_Raw with two healthy cases; case_0's image replaced by `image`."""
    r = root / "nnUNet_raw" / "Dataset778_Raw"
    (r / "imagesTr").mkdir(parents=True)
    (r / "labelsTr").mkdir()
    (r / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS,
                                                "numTraining": 2, "file_ending": ".nii.gz"}))
    lab = (np.arange(8 * 8 * 4).reshape(8, 8, 4) % 4).astype(np.uint8)
    for i in range(2):
        (r / "imagesTr" / f"case_{i}_0000.nii.gz").write_bytes(
            gzip.compress(nifti_bytes(lab.astype(np.float32) * 100 + i)))
        (r / "labelsTr" / f"case_{i}.nii.gz").write_bytes(gzip.compress(nifti_bytes(lab)))
    if image is not None:
        (r / "imagesTr" / "case_0_0000.nii.gz").write_bytes(image)
    return r


def image_of(root: Path, image: bytes) -> tuple[Path, Path]:
    return raw_dataset(root / "warm"), raw_dataset(root / "hostile", image)


IMAGE = "raw/imagesTr/case_0_0000.nii.gz"
VOXELS = (np.arange(8 * 8 * 4).reshape(8, 8, 4) % 4).astype(np.float32) * 100


def gz_with_zeros(head: bytes, zeros: int, tail: bytes) -> bytes:
    """gzip of head + `zeros` zero bytes + tail, compressed a MB at a time (~1 KB per MB)."""
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    out, block = [c.compress(head)], bytes(1 << 20)
    while zeros:
        n = min(zeros, len(block))
        out.append(c.compress(block[:n]))
        zeros -= n
    out += [c.compress(tail), c.flush()]
    return b"".join(out)


def test_nifti_far_vox_offset_reads_in_linear_time(tmp_path):
    """0.6 MB of .nii.gz: vox_offset 6e8, the voxels after 6e8 bytes of zeros. It ran past 2 minutes
    (the bytes up to the offset were gathered with `bytes +=`); it reads, and is fine."""
    head = nifti_bytes(VOXELS, offset=6e8)[:352]
    gz = gz_with_zeros(head, 600_000_000 - 352, VOXELS.tobytes())
    assert len(gz) < 1 << 20
    warm, ds = image_of(tmp_path, gz)
    r = scan_child(tmp_path, warm, ds, timeout=120)
    no_dg001(r)
    assert not at(r, "DG302", IMAGE), r["findings"]
    assert r["seconds"] < 30, r["seconds"]
    assert r["peak_mb"] < 400, r["peak_mb"]             # was 760 MB when killed


def test_nifti_vox_offset_beyond_the_stream_is_dg302(tmp_path):
    head = nifti_bytes(VOXELS, offset=6e8)[:352]
    warm, ds = image_of(tmp_path, gzip.compress(head + np.random.default_rng(1).bytes(1 << 20), 1))
    r = scan_child(tmp_path, warm, ds)
    [f] = at(r, "DG302", IMAGE)
    assert "vox_offset 600000000 lies beyond the end of the voxel stream" in f["message"], f
    assert r["seconds"] < 30


@pytest.mark.parametrize("offset,ok", [(352, True), (0, True), (-100, False), (100, False)])
def test_nifti_vox_offset_inside_the_header(offset, ok):
    """nibabel refuses a single-file vox_offset inside the header (negative included); 0 it reads."""
    from dataguard.checks.base import FileTask
    from dataguard.checks.raw import check_image

    data = gzip.compress(nifti_bytes(VOXELS, offset=offset))
    found, _ = check_image(FileTask("/x", IMAGE, "image", "raw", "case_0"), io.BytesIO(data))
    bad = [f for f in found if f.code == "DG302"]
    assert (not bad) if ok else (bad and f"vox_offset {offset} lies inside" in bad[0].message), found


def bgzip_like(data: bytes, members: int = 2000) -> bytes:
    step = -(-len(data) // (members - 1))
    parts = [gzip.compress(data[i:i + step]) for i in range(0, len(data), step)]
    parts += [gzip.compress(b"")] * (members - len(parts))        # bgzip's empty end-of-file members
    return b"".join(parts)


def test_nifti_of_2000_gzip_members_reads_like_one(tmp_path):
    """bgzip style: many gzip members back to back (nibabel and SimpleITK read them): it was a
    DG001 RecursionError; it reads, with the same facts as the single-member file."""
    from dataguard.checks.base import FileTask
    from dataguard.checks.raw import check_image

    data = nifti_bytes(VOXELS + 0.5)
    many = bgzip_like(data)
    task = FileTask("/x", IMAGE, "image", "raw", "case_0")
    assert check_image(task, io.BytesIO(many)) == check_image(task, io.BytesIO(gzip.compress(data)))
    # zero padding between members is skipped, as gzip does
    padded = gzip.compress(data[:200]) + bytes(4096) + gzip.compress(data[200:]) + bytes(100)
    assert check_image(task, io.BytesIO(padded)) == check_image(task, io.BytesIO(gzip.compress(data)))
    warm, ds = image_of(tmp_path, many)
    r = scan_child(tmp_path, warm, ds)
    no_dg001(r)
    assert not [f for f in r["findings"] if f["path"] == IMAGE], r["findings"]
    assert r["seconds"] < 30


def test_nifti_negative_dimension_is_dg302(tmp_path):
    arr = np.random.default_rng(0).normal(size=(48, 8, 4)).astype(np.float32)
    warm, ds = image_of(tmp_path, gzip.compress(nifti_bytes(arr, dim1=-48)))
    r = scan_child(tmp_path, warm, ds)
    no_dg001(r)
    [f] = at(r, "DG302", IMAGE)
    assert "dim[1] = -48 is negative" in f["message"], f
    assert r["seconds"] < 30


# --- numbers nnU-Net cannot use -----------------------------------------------------------------------
def test_nifti_absurd_spacing_is_dg306(tmp_path):
    warm, ds = image_of(tmp_path, gzip.compress(nifti_bytes(VOXELS, pixdim1=1e30)))
    r = scan_child(tmp_path, warm, ds)
    [f] = at(r, "DG306", IMAGE)
    assert "implausible spacing (1.0000000150474662e+30, 1.0, 1.0)" in f["message"], f
    assert r["seconds"] < 30


@pytest.mark.parametrize("spacing", ["1" + "0" * 400, "1e300", "1e-300", "-1.0", "0"])
def test_plans_spacing_no_float_can_hold_is_dg211(spacing, tmp_path):
    """A JSON int of 400 digits (json reads it; float() overflows) was exit 3 (OverflowError)."""
    warm = make_tiny_pre(tmp_path / "warm")
    ds = make_tiny_pre(tmp_path / "hostile")
    text = json.dumps(PLANS).replace('"spacing": [1.0, 1.0, 1.0]', f'"spacing": [{spacing}, 1.0, 1.0]')
    (ds / "nnUNetPlans.json").write_text(text)
    r = scan_child(tmp_path, warm, ds)
    no_dg001(r)
    [f] = at(r, "DG211", "preprocessed/nnUNetPlans.json")
    assert "configurations.3d_fullres.spacing must be a list of positive numbers" in f["message"], f


def test_pkl_spacing_no_float_can_hold_is_dg204(tmp_path):
    warm = make_tiny_pre(tmp_path / "warm")
    ds = make_tiny_pre(tmp_path / "hostile")
    p = props()
    p["spacing"] = (2 ** 33554432, 1.0, 1.0)
    write_pkl(ds / CFG, "case_0", p)
    assert len(pickle.dumps(p)) > 4 << 20
    r = scan_child(tmp_path, warm, ds)
    no_dg001(r)
    [f] = at(r, "DG204", f"preprocessed/{CFG}/case_0.pkl")
    assert "'spacing' must be 2-3 positive finite numbers" in f["message"], f


def test_spacing_predicates():
    from dataguard.checks.metadata import as_float, is_num, is_spacing

    assert is_num(3) and is_num(1.5) and not is_num(10 ** 400) and not is_num(float("nan")) and not is_num(True)
    assert as_float(2 ** 33554432) is None and as_float(np.float32(2.5)) == 2.5
    assert is_spacing(0.7) and is_spacing(np.float64(3.0)) and is_spacing(1)
    assert not any(is_spacing(x) for x in (0, -1.0, 1e300, 1e-300, float("inf"), 2 ** 33554432, "1.0", None, True))


def test_doctor_and_train_read_plans_and_fingerprint_bounded(tmp_path):
    """The other readers of the fingerprint, plans and dataset.json (doctor's estimates, the train
    gate, the log reader) refuse a sparse 2.2 GB file at once (EFBIG) instead of reading it whole."""
    import errno
    import time

    from dataguard.doctor import resources
    from dataguard.doctor.report import training_check
    from dataguard.train.logs import label_names_for

    ds = make_tiny_pre(tmp_path)
    for name in ("dataset_fingerprint.json", "nnUNetPlans.json", "dataset.json"):
        sparse(ds / name)
    t = time.monotonic()
    with pytest.raises(OSError) as e:
        resources.fingerprint_cases(ds)
    assert e.value.errno == errno.EFBIG
    with pytest.raises(OSError):
        resources.preprocess_estimate(ds, "3d_fullres")
    assert training_check(ds, "3d_fullres") == []
    log = ds / "fold_0" / "training_log.txt"
    log.parent.mkdir()
    assert label_names_for(log) == ([], "Dataset777_Tiny")          # log.parent.parent holds the sparse file
    assert time.monotonic() - t < 5


def test_real_blosc2_files_in_nnunets_layouts_have_no_dg203(tmp_path):
    """The frames blosc2 itself writes with the chunks and blocks nnU-Net picks: a chunk that is
    not a whole number of blocks is stored padded to whole blocks (frame chunk bytes > the
    chunk's), which is not a damaged frame (nnU-Net 2.8's own preprocessing wrote such files)."""
    pytest.importorskip("nnunetv2")
    import random

    import blosc2
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

    from dataguard.checks.b2nd import check_b2nd
    from dataguard.checks.base import FileTask

    rng = random.Random(1)
    padded = 0
    for i in range(40):
        image = (1, rng.randint(1, 14), rng.randint(40, 130), rng.randint(40, 130))
        patch = [rng.randint(32, 96) for _ in range(2)]
        for dtype in (np.float32, np.int16):
            arr = np.random.default_rng(i).normal(size=image).astype(dtype)
            blocks, chunks = comp_blosc2_params(image, patch, arr.itemsize)
            name = f"case_{i}_{arr.itemsize}.b2nd"
            b = blosc2.asarray(np.ascontiguousarray(arr), urlpath=str(tmp_path / name), mode="w",
                               chunks=chunks, blocks=blocks)
            padded += b.schunk.chunksize != int(np.prod(chunks)) * arr.itemsize
            found, _ = check_b2nd(FileTask(str(tmp_path / name), f"preprocessed/{CFG}/{name}", "b2nd", "config",
                                           f"case_{i}"), (tmp_path / name).read_bytes())
            assert found == [], (image, chunks, blocks, [f.message for f in found])
    assert padded, "no layout with a padded chunk was tried"
