"""Issue 27, sections 2 (JSON, submission zips) and 4 (names on the screen), attacked as a stranger
would: a dataset.json of 2M labels, label values no label map can hold (1e308), a splits file naming
2M unknown cases, encrypted, method-99, zip64-lying and bomb members, 100k members, and names with
ESC, OSC 8 links, CR, rich markup and spreadsheet formulas.

Every file is built here. Each case runs through the CLI in this process under the audit hook
(nothing runs, nothing is written outside tmp_path) and is held to its finding, an exit code that
is never 3 and a time bound; the memory cases also run in a child process whose peak RSS is read
with getrusage (a wrapper process between, so that RUSAGE_CHILDREN holds that child alone).
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from audit import watch
from conftest import make_tiny_pre, write_case_npz

from dataguard import spec as spec_module
from dataguard.cli import main

ESC_NAME = "\x1b[31mred\x1b[0m"                       # SGR colour
OSC8_NAME = "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"   # OSC 8 hyperlink
CR_NAME = "ok\rEVIL"                                   # CR: the line is overwritten
MARKUP_NAME = "[red]x[/red]"                           # rich markup
LINK_MARKUP_NAME = "[link=http://evil]y[/link]"


# --- builders -------------------------------------------------------------------------------------
def nii_gz(arr, dtype=np.uint8) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(arr).astype(dtype), np.eye(4))
    img.set_data_dtype(dtype)
    return gzip.compress(img.to_bytes(), mtime=0)


def good_member() -> bytes:
    lab = np.zeros((4, 4, 2), np.uint8)
    lab[1, 1, 1] = 1
    return nii_gz(lab)


def raw_dataset(root: Path, labels: dict, cases=("c0", "c1")) -> Path:
    """nnUNet_raw/Dataset778_Raw: tiny real NIfTI cases (label 1 only) and this dataset.json."""
    ds = root / "nnUNet_raw" / "Dataset778_Raw"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    lab = np.zeros((4, 4, 2), np.uint8)
    lab[1:3, 1:3, :] = 1
    for i, c in enumerate(cases):
        (ds / "imagesTr" / f"{c}_0000.nii.gz").write_bytes(nii_gz(np.arange(32).reshape(4, 4, 2) + 7 * i, np.float32))
        (ds / "labelsTr" / f"{c}.nii.gz").write_bytes(nii_gz(lab))
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels,
                                                 "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return ds


def many_labels(n: int) -> dict:
    return {"background": 0, **{f"l{i}": i for i in range(1, n)}}


def imagesTs(root: Path) -> Path:
    images = root / "imagesTs"
    images.mkdir(parents=True, exist_ok=True)
    (images / "case_0_0000.nii.gz").write_bytes(nii_gz(np.zeros((4, 4, 2)), np.float32))
    return images


def handmade_zip(path: Path, members) -> Path:
    """A zip written field by field, so its headers can say what a stranger's zip says: members =
    [(name, stored bytes, method, crc, uncompressed size, flag bits, zip64)]; zip64 puts both sizes
    in a zip64 extra field (0xFFFFFFFF in the fixed fields) of the local and the central header."""
    out, central = bytearray(), bytearray()
    for name, payload, method, crc, usize, flags, z64 in members:
        nb, off, csize = name.encode(), len(out), len(payload)
        extra = struct.pack("<HHQQ", 1, 16, usize, csize) if z64 else b""
        fu, fc = (0xFFFFFFFF, 0xFFFFFFFF) if z64 else (usize, csize)
        ver = 45 if z64 else 20
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", ver, flags, method, 0, 0x21, crc, fc, fu,
                           len(nb), len(extra)) + nb + extra + payload
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", ver, ver, flags, method, 0, 0x21, crc, fc,
                               fu, len(nb), len(extra), 0, 0, 0, 0o644 << 16, off) + nb + extra
    cd = len(out)
    out += central + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), cd, 0)
    path.write_bytes(bytes(out))
    return path


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def deflate_bomb(blocks: int) -> tuple[bytes, int, int]:
    """(deflate stream, crc, size): a valid small .nii.gz followed by `blocks` x 16 MiB of zeros.
    After a full flush deflate keeps no history, so one compressed block repeated is the stream."""
    head, block = good_member(), bytes(16 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    z = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(blocks):
        crc = zlib.crc32(block, crc)
    return first + z * blocks + c.flush(), crc, len(head) + blocks * len(block)


def bzip2_bomb(blocks: int) -> tuple[bytes, int, int]:
    head, block = good_member(), bytes(16 << 20)
    c = bz2.BZ2Compressor(9)
    parts, crc = [c.compress(head)], zlib.crc32(head)
    for _ in range(blocks):
        parts.append(c.compress(block))
        crc = zlib.crc32(block, crc)
    return b"".join(parts) + c.flush(), crc, len(head) + blocks * len(block)


# --- running it ----------------------------------------------------------------------------------
def cli(capsys, tmp_path: Path, *argv) -> tuple[int, str, str, float]:
    """main(argv) in this process under the audit hook: (exit code, stdout, stderr, seconds)."""
    capsys.readouterr()
    t = time.monotonic()
    with watch(allow_writes=[tmp_path]) as events:
        code = main([str(a) for a in argv])
    seconds = time.monotonic() - t
    out, err = capsys.readouterr()
    assert events == [], events
    assert code != 3 and "internal error" not in err, err
    return code, out, err, seconds


_WRAPPER = """\
import json, resource, subprocess, sys, time
t = time.monotonic()
try:
    r = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))
    rc, out, err = r.returncode, r.stdout[-20000:], r.stderr[-5000:]
except subprocess.TimeoutExpired:
    rc, out, err = "timeout", "", ""
print(json.dumps({"rc": rc, "seconds": time.monotonic() - t, "out": out, "err": err,
                  "mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def child(cwd: Path, *argv, timeout: float = 150) -> dict:
    """`python -m dataguard argv` in a child: rc, seconds, out, err and its peak RSS in MB."""
    r = subprocess.run([sys.executable, "-c", _WRAPPER, str(timeout), sys.executable, "-m", "dataguard",
                        *[str(a) for a in argv]], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, "COLUMNS": "250"}, timeout=timeout + 60)
    got = json.loads(r.stdout)
    assert got["rc"] not in (3, "timeout"), got
    return got


def rows(out: str, code: str) -> list[str]:
    return [line for line in out.splitlines() if f" {code} " in line]


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    """One table row per line: a piped table is $COLUMNS wide."""
    monkeypatch.setenv("COLUMNS", "1000")


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """Each command once on clean inputs outside the audit hook: lazy imports (pandas, nibabel,
    rich tables) compile generated code the first time, which the hook would record."""
    root = tmp_path_factory.mktemp("warm")
    pre = make_tiny_pre(root, case_labels={f"case_{i}": (1, 2, 3) for i in range(5)})
    raw = raw_dataset(root, many_labels(3))
    images = imagesTs(root)
    z = root / "ok.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("case_0.nii.gz", good_member())
    for argv in (["splits", "show", pre, "--manifest-dir", root / "m"], ["scan", pre, "--manifest-dir", root / "m"],
                 ["scan", raw, "--format", "csv", "--manifest-dir", root / "m"],
                 ["check-submission", z, "--images", images]):
        assert main([str(a) for a in argv]) in (0, 1)
    return root


# === 2. JSON ======================================================================================
def test_a_dataset_json_of_200k_labels_is_parsed_once_and_is_one_dg404(warm, tmp_path, capsys, monkeypatch):
    ds = raw_dataset(tmp_path, many_labels(200_000))
    parsed = []                                                   # every parse of the big labels mapping
    real = spec_module._labels

    def counted(raw, *args):
        if isinstance(raw, dict) and len(raw) > 1000:
            parsed.append(1)
        return real(raw, *args)

    monkeypatch.setattr(spec_module, "_labels", counted)
    code, out, _, seconds = cli(capsys, tmp_path, "scan", ds, "--manifest-dir", tmp_path / "m")
    assert code == 0 and seconds < 30, seconds                    # before: 189 s (100k labels)
    assert len(parsed) == 1                                       # before: 4 parses per scan
    [row] = rows(out, "DG404")                                    # before: one DG404 per label
    assert "199998 of the 200000 labels" in row


def test_a_dataset_json_of_2m_labels_scans_in_bounded_time_and_memory(tmp_path):
    ds = raw_dataset(tmp_path, many_labels(2_000_000))
    assert (ds / "dataset.json").stat().st_size > 30e6
    got = child(tmp_path, "scan", ds, "--manifest-dir", tmp_path / "m")
    # before: past 150 s (exit 3 after 97 s in the issue) and 4.0 GB; after: ~9 s, ~600 MB
    assert got["rc"] == 0 and got["seconds"] < 60 and got["mb"] < 1500, got
    assert "1999998 of the 2000000 labels" in got["out"]


def test_a_label_value_no_label_map_can_hold_is_a_finding_never_a_crash(warm, tmp_path, capsys):
    pre = make_tiny_pre(tmp_path, case_labels={f"case_{i}": (1, 2, 3) for i in range(5)})
    doc = json.loads((pre / "dataset.json").read_text())
    doc["labels"].update({"huge": 1e308, "big": 10 ** 30, "digits": "9" * 5000, "region": [1, 1e300]})
    (pre / "dataset.json").write_text(json.dumps(doc))
    code, out, err, seconds = cli(capsys, tmp_path, "splits", "show", pre, "--manifest-dir", tmp_path / "m")
    assert code == 0 and seconds < 30                           # before: exit 3 (OverflowError)
    assert "huge" not in out and "big" not in out               # not a class: no column
    code, out, _, _ = cli(capsys, tmp_path, "scan", pre, "--manifest-dir", tmp_path / "m")
    found = "\n".join(rows(out, "DG211"))                          # the trainer's copy of dataset.json
    assert code == 1 and "labels.big is 1000000000000000000000000000000, beyond what a label map can hold" in found
    assert "labels.huge must be an integer" in found and "labels.region must be an integer" in found
    raw = raw_dataset(tmp_path, {"background": 0, "a": 1, "huge": 1e308, "big": 10 ** 30})
    code, out, _, _ = cli(capsys, tmp_path, "scan", raw, "--manifest-dir", tmp_path / "m")
    found = "\n".join(rows(out, "DG301"))
    assert code == 1 and "'huge': value 1e+308 is beyond what a label map can hold" in found
    assert "'big': value 1000000000000000000000000000000 is beyond" in found
    spec = spec_module.parse_spec(doc)
    assert set(spec.labels) == set(doc["labels"]) - {"huge", "big", "digits", "region"}
    assert spec.all_labels == [0, 1, 2, 3] and spec.class_names == {1: "myocardium", 2: "left_ventricle",
                                                                    3: "right_ventricle"}


def test_the_problems_of_many_labels_are_one_sentence():
    from dataguard.checks.metadata import dataset_problems

    labels = {"background": 0, **{f"l{i}": str(i) for i in range(1, 100_000)}}
    said = spec_module.parse_spec({"labels": labels, "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"})
    assert len(said.label_problems) == spec_module.MAX_SAID + 1
    assert said.label_problems[-1].startswith("99989 more labels have such problems: 'l11', 'l12'")
    dg211 = dataset_problems({"labels": labels, "channel_names": {"0": "CT"}})
    assert len(dg211) <= spec_module.MAX_SAID + 3 and "99989 more labels are not usable integers" in dg211[-1]


def put_splits(pre: Path, ghosts: int) -> None:
    cases = ["case_0", "case_1", "case_2"]
    (pre / "splits_final.json").write_text(json.dumps(
        [{"train": cases[1:] + [f"ghost_{i:07d}" for i in range(ghosts)], "val": cases[:1]},
         {"train": cases[:1], "val": cases[1:]}]))


def test_a_splits_file_naming_200k_unknown_cases_is_one_dg503(warm, tmp_path, capsys):
    pre = make_tiny_pre(tmp_path)
    put_splits(pre, 200_000)
    code, out, _, seconds = cli(capsys, tmp_path, "scan", pre, "--manifest-dir", tmp_path / "m")
    assert code == 1 and seconds < 30, seconds
    [row] = rows(out, "DG503")                                   # before: 200,000 rows
    assert "200000 case names in the splits do not exist" in row and "'ghost_0000000'" in row
    assert sum(p.stat().st_size for p in (tmp_path / "m").rglob("*") if p.is_file()) < 1e6


def test_a_splits_file_naming_2m_unknown_cases_in_bounded_memory(tmp_path):
    pre = make_tiny_pre(tmp_path)
    put_splits(pre, 2_000_000)
    assert (pre / "splits_final.json").stat().st_size > 20e6
    got = child(tmp_path, "scan", pre, "--manifest-dir", tmp_path / "m")
    # before: past 150 s, 4.0 GB and a 1.07 GB manifest; after: ~5 s, ~300 MB, 10 kB
    assert got["rc"] == 1 and got["seconds"] < 60 and got["mb"] < 1000, got
    assert "2000000 case names in the splits do not exist" in got["out"]
    assert sum(p.stat().st_size for p in (tmp_path / "m").rglob("*") if p.is_file()) < 1e6


def test_training_cases_never_validated_are_one_finding_past_a_few():
    from dataguard.checks.splits import _existence

    cases = {f"c{i:06d}" for i in range(100_000)}
    [f] = _existence([{"train": ["c000001"], "val": ["c000000"]}], cases)
    assert f.code == "DG503" and f.case is None
    assert f.message.startswith("99999 of the 100000 training cases are in no fold's validation set")
    few = _existence([{"train": ["c000001"], "val": ["c000000"]}], {"c000000", "c000001", "c000002"})
    assert [g.case for g in few] == ["c000001", "c000002"]       # a few: one finding each, as before


# === 2. submission zips ===========================================================================
def check(capsys, tmp_path: Path, archive: Path):
    images = imagesTs(tmp_path)
    return cli(capsys, tmp_path, "check-submission", archive, "--images", images)


def dg606(out: str) -> str:
    found = rows(out, "DG606")
    assert found, out
    return "\n".join(found)


def test_an_encrypted_member_is_dg606(warm, tmp_path, capsys):
    g = good_member()
    z = handmade_zip(tmp_path / "enc.zip", [("case_0.nii.gz", deflate(g), 8, zlib.crc32(g), len(g), 0x1, False)])
    code, out, _, seconds = check(capsys, tmp_path, z)            # before: exit 3 (RuntimeError)
    assert code == 1 and seconds < 30 and "encrypted (password-protected)" in dg606(out)


def test_compression_method_99_is_dg606(warm, tmp_path, capsys):
    g = good_member()
    z = handmade_zip(tmp_path / "aes.zip", [("case_0.nii.gz", deflate(g), 99, zlib.crc32(g), len(g), 0, False)])
    code, out, _, seconds = check(capsys, tmp_path, z)            # before: exit 3 (NotImplementedError)
    assert code == 1 and seconds < 30 and "compression method 99" in dg606(out)


def test_a_zip64_size_claim_of_1_tib_is_checked_against_what_inflates(warm, tmp_path, capsys):
    g = good_member()
    z = handmade_zip(tmp_path / "z64.zip", [("case_0.nii.gz", deflate(g), 8, zlib.crc32(g), 1 << 40, 0, True)])
    assert zipfile.ZipFile(z).infolist()[0].file_size == 1 << 40
    code, out, _, seconds = check(capsys, tmp_path, z)            # before: exit 0, "ok"
    assert code == 1 and seconds < 30
    assert f"declares {1 << 40} bytes but inflates to {len(g)}" in dg606(out)


@pytest.mark.parametrize("bomb, method, blocks, before", [
    (deflate_bomb, zipfile.ZIP_DEFLATED, 96, "3.1 GB"),        # 1.5 GiB in 1.5 MB
    (bzip2_bomb, zipfile.ZIP_BZIP2, 16, "~0.6 GB"),            # 256 MiB in a few hundred bytes
])
def test_a_member_that_inflates_past_its_nifti_is_stopped_in_bounded_memory(warm, tmp_path, capsys, bomb, method,
                                                                           blocks, before):
    payload, crc, size = bomb(blocks)
    z = handmade_zip(tmp_path / "bomb.zip", [("case_0.nii.gz", payload, method, crc, size, 0, True)])
    assert z.stat().st_size < 2e6
    got = child(tmp_path, "check-submission", z, "--images", imagesTs(tmp_path))
    assert got["rc"] == 1 and got["seconds"] < 30 and got["mb"] < 300, got      # before: exit 0 and `before`
    assert "stopped reading" in got["out"] and "(4, 4, 2) uint8" in got["out"]
    code, out, _, seconds = check(capsys, tmp_path, z)
    assert code == 1 and seconds < 30 and "more than a NIfTI of its header's shape" in dg606(out)


def test_100k_members_are_one_finding_in_bounded_time(warm, tmp_path, capsys):
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("case_0.nii.gz", good_member())
        for i in range(100_000):
            zf.writestr(f"extra_{i}.txt", b"")
    code, out, _, seconds = check(capsys, tmp_path, z)
    assert code == 1 and seconds < 30, seconds                    # before: 47 s, 100,000 rows
    [row] = rows(out, "DG606")
    assert "100000 extra files" in row and "'extra_0.txt'" in row


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_near_miss_a_good_member_passes_whatever_its_method(warm, tmp_path, capsys, method):
    z = tmp_path / "good.zip"
    with zipfile.ZipFile(z, "w", compression=method) as zf:
        zf.writestr("case_0.nii.gz", good_member())
    code, out, _, _ = check(capsys, tmp_path, z)
    assert code == 0 and "DG606" not in out, out


def test_the_member_reader_streams_in_bounded_pieces(tmp_path):
    """What check-submission relies on: a member larger than its NIfTI is never inflated past the
    bound, and a declared size smaller than what inflates stops at the declared size."""
    from dataguard.errors import RawError
    from dataguard.submit.members import HEAD_ROOM, MemberReader

    payload, crc, size = deflate_bomb(4)                           # 64 MiB of zeros after the NIfTI
    z = handmade_zip(tmp_path / "b.zip", [("case_0.nii.gz", payload, 8, crc, size, 0, True),
                                          ("x.nii.gz", payload, 8, crc, 1000, 0, False)])
    with zipfile.ZipFile(z) as zf:
        a, b = zf.infolist()
        reader = MemberReader(zf, a)
        with pytest.raises(RawError, match="stopped reading"):
            while reader.read(1 << 20):
                assert reader.tell() < 2 * HEAD_ROOM
        with pytest.raises(RawError, match="past its declared size"):
            MemberReader(zf, b).read(1 << 20)


# === 4. names on the screen =======================================================================
def hostile_pre(root: Path) -> Path:
    """A preprocessed dataset whose label names are escape sequences, a CR and rich markup, and
    whose splits_final.json names a case with an OSC 8 link in it."""
    cases = {f"case_{i}": (1, 2, 3, 4, 5) for i in range(3)}
    pre = make_tiny_pre(root, case_labels=cases)
    labels = {"background": 0, ESC_NAME: 1, OSC8_NAME: 2, CR_NAME: 3, MARKUP_NAME: 4, LINK_MARKUP_NAME: 5}
    doc = json.loads((pre / "dataset.json").read_text())
    doc["labels"] = labels
    (pre / "dataset.json").write_text(json.dumps(doc))
    (pre / "splits_final.json").write_text(json.dumps(
        [{"train": ["case_1", "case_2", "x" + OSC8_NAME], "val": ["case_0"]},
         {"train": ["case_0"], "val": ["case_1", "case_2"]}]))
    return pre


def no_terminal_codes(text: str) -> None:
    """No ESC, BEL or CR but csv.writer's own line ends."""
    text = text.replace("\r\n", "\n")
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text, repr(text[:2000])


def test_splits_show_prints_names_as_text(warm, tmp_path, capsys):
    pre = hostile_pre(tmp_path)
    code, out, err, seconds = cli(capsys, tmp_path, "splits", "show", pre, "--manifest-dir", tmp_path / "m")
    assert code == 0 and seconds < 30
    no_terminal_codes(out + err)                                  # before: ESC, OSC 8 and CR raw
    assert MARKUP_NAME in out and LINK_MARKUP_NAME in out          # before: rich markup, interpreted
    assert "\\x1b[31mred\\x1b[0m" in out and "ok\\rEVIL" in out
    [row] = rows(out, "DG503")
    assert "case 'x\\x1b]8;;http://x\\x1b\\link" in row


def test_scan_csv_escapes_names_and_defuses_formulas(warm, tmp_path, capsys):
    pre = make_tiny_pre(tmp_path)                               # cases hold labels 1-3
    doc = json.loads((pre / "dataset.json").read_text())
    doc["labels"].update({ESC_NAME: 4, OSC8_NAME: 5, CR_NAME: 6, "=HYPERLINK(\"http://x\")": 7})   # in no case: DG404
    (pre / "dataset.json").write_text(json.dumps(doc))
    write_case_npz(pre / "nnUNetPlans_3d_fullres", "=1+2\x1b]8;;mailto:x@y\x1b\\\rY")   # no .pkl: DG206
    code, out, _, seconds = cli(capsys, tmp_path, "scan", pre, "--format", "csv", "--manifest-dir", tmp_path / "m")
    assert code == 1 and seconds < 30
    no_terminal_codes(out)                                        # before: ESC, OSC 8 and CR raw (DG404)
    table = list(csv.DictReader(io.StringIO(out)))
    cases = [r["case"] for r in table if r["code"] == "DG206"]
    assert cases == ["'=1+2\\x1b]8;;mailto:x@y\\x1b\\\\rY"]          # before: =1+2... ran as a formula
    assert not [v for r in table for v in r.values() if v and v[0] in "=+-@\t\r"]
    unused = " ".join(r["message"] for r in table if r["code"] == "DG404")
    assert "'\\x1b[31mred\\x1b[0m'" in unused and "'ok\\rEVIL'" in unused and "\\x1b]8;;http://x" in unused


def test_logs_csv_defuses_label_names(tmp_path, capsys):
    from test_logs import healthy, results_tree

    root = results_tree(tmp_path, {0: healthy(5)})
    names = ["background", "=HYPERLINK(\"http://x\",\"y\")", "+1" + ESC_NAME, "-2", "@x"]
    (root / "nnUNetTrainer__nnUNetPlans__2d" / "dataset.json").write_text(json.dumps(
        {"labels": {n: i for i, n in enumerate(names)}, "channel_names": {"0": "MRI"}}))
    main(["logs", str(root)])                                    # warm: lazy imports outside the hook
    code, out, _, _ = cli(capsys, tmp_path, "logs", root, "--format", "csv")
    assert code == 0
    no_terminal_codes(out)
    labels = [r["label"] for r in csv.DictReader(io.StringIO(out))]
    assert labels == ["'=HYPERLINK(\"http://x\",\"y\")", "'+1\\x1b[31mred\\x1b[0m", "'-2", "'@x"], labels


def test_the_csv_cell_rule_every_cli_writer_shares():
    """evaluate.py and logs.py write their rows through render.csv_row (evaluate needs trained models:
    its CSV runs in test_evaluate.py); numbers stay numbers, names are text."""
    from dataguard.cli.render import csv_row

    assert csv_row(["=1+1", "+x", "-x", "@x", "\tx", "\rx", "a\x1bb", None, -0.5, 3, "plain"]) == [
        "'=1+1", "'+x", "'-x", "'@x", "\\tx", "\\rx", "a\\x1bb", "", -0.5, 3, "plain"]
