"""One file that triggers each DG1xx/DG2xx code, and a near miss that must not."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

import dataguard
from conftest import codes, write_b2nd, write_case_npz, write_pkl

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)


def scan(ds, tmp_path, **kw):
    return dataguard.scan([str(ds)], manifest_dir=tmp_path / "manifests", **kw)


def cfg(ds):
    return ds / "nnUNetPlans_3d_fullres"


def test_healthy_dataset_is_clean(tiny_pre, tmp_path):
    r = scan(tiny_pre, tmp_path)
    assert r.findings == []
    assert r.stats.files == 3 * 2 + 3


# DG101 -----------------------------------------------------------------------
def test_dg101_appledouble_by_name_and_magic(tiny_pre, tmp_path):
    (cfg(tiny_pre) / "._case_0.npz").write_bytes(APPLEDOUBLE)
    [f] = codes(scan(tiny_pre, tmp_path), "DG101")
    assert f.path == "preprocessed/nnUNetPlans_3d_fullres/._case_0.npz"
    assert f.severity == dataguard.Severity.ERROR and str(f.fix) == "quarantine"
    # the fake case must not also show up as a broken case
    assert codes(scan(tiny_pre, tmp_path)) == ["DG101"]


def test_dg101_recognised_by_magic_under_an_ordinary_name(tiny_pre, tmp_path):
    (cfg(tiny_pre) / "case_0.npz").write_bytes(APPLEDOUBLE)
    assert "DG101" in codes(scan(tiny_pre, tmp_path))


def test_dg101_near_miss_name_containing_dot_underscore(tiny_pre, tmp_path):
    # "a._b" is not a resource fork; a real case whose name merely contains "._"
    write_case_npz(cfg(tiny_pre), "a._b")
    write_pkl(cfg(tiny_pre), "a._b")
    assert "DG101" not in codes(scan(tiny_pre, tmp_path))


# DG102 -----------------------------------------------------------------------
def test_dg102_ds_store_is_error_in_config_folder_warning_elsewhere(tiny_pre, tmp_path):
    (cfg(tiny_pre) / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tiny_pre / "Thumbs.db").write_bytes(b"x")
    found = {f.path: f for f in codes(scan(tiny_pre, tmp_path), "DG102")}
    assert found["preprocessed/nnUNetPlans_3d_fullres/.DS_Store"].severity == dataguard.Severity.ERROR
    assert found["preprocessed/Thumbs.db"].severity == dataguard.Severity.WARNING


def test_dg102_near_miss_similar_name(tiny_pre, tmp_path):
    (tiny_pre / "DS_Store_notes.json").write_text("{}")
    assert "DG102" not in codes(scan(tiny_pre, tmp_path))


# DG103 -----------------------------------------------------------------------
def test_dg103_zero_byte_data_file(tiny_pre, tmp_path):
    (cfg(tiny_pre) / "case_1.npz").write_bytes(b"")
    [f] = codes(scan(tiny_pre, tmp_path), "DG103")
    assert f.case == "case_1" and str(f.fix) == "re-preprocess"


def test_dg103_near_miss_empty_json_is_not_a_data_file(tiny_pre, tmp_path):
    (tiny_pre / "notes.json").write_bytes(b"")
    assert "DG103" not in codes(scan(tiny_pre, tmp_path))


# DG104 -----------------------------------------------------------------------
def test_dg104_leftover_tmp_file(tiny_pre, tmp_path):
    (cfg(tiny_pre) / "case_0.npz.tmp").write_bytes(b"partial")
    [f] = codes(scan(tiny_pre, tmp_path), "DG104")
    assert f.path.endswith("case_0.npz.tmp")


def test_dg104_mixed_npz_and_b2nd_folder(tiny_pre, tmp_path):
    arr = np.zeros((1, 4, 8, 8), np.float32)
    write_b2nd(cfg(tiny_pre) / "case_9.b2nd", arr)
    write_b2nd(cfg(tiny_pre) / "case_9_seg.b2nd", arr.astype(np.int16))
    write_pkl(cfg(tiny_pre), "case_9")
    r = scan(tiny_pre, tmp_path)
    [f] = codes(r, "DG104")
    assert "mixes" in f.message


def test_dg104_near_miss_plans_json_is_expected(tiny_pre, tmp_path):
    (tiny_pre / "nnUNetResEncUNetMPlans.json").write_text('{"configurations": {}}')
    (tiny_pre / "splits_final.json").write_text("[]")
    assert "DG104" not in codes(scan(tiny_pre, tmp_path))


# DG201 -----------------------------------------------------------------------
def _corrupt_member(npz, member="data.npy", at=0.5, payload=bytes(range(7, 71))):
    with zipfile.ZipFile(npz) as zf:
        zi = zf.getinfo(member)
    with open(npz, "r+b") as f:
        f.seek(zi.header_offset + 26)
        n, e = (int.from_bytes(f.read(2), "little") for _ in range(2))
        f.seek(zi.header_offset + 30 + n + e + int(zi.compress_size * at))
        f.write(payload)


def test_dg201_deflate_stream_corruption(tiny_pre, tmp_path):
    big = np.random.default_rng(1).normal(size=(1, 8, 32, 32)).astype(np.float32)
    npz = write_case_npz(cfg(tiny_pre), "case_0", data=big, seg=np.zeros((1, 8, 32, 32), np.int8))
    _corrupt_member(npz)
    [f] = codes(scan(tiny_pre, tmp_path), "DG201")
    assert f.message.startswith("data.npy:")


def test_dg201_crc_mismatch_in_stored_member(tiny_pre, tmp_path):
    p = cfg(tiny_pre) / "case_0.npz"
    np.savez(p, data=np.ones((1, 4, 8, 8), np.float32), seg=np.zeros((1, 4, 8, 8), np.int8))
    _corrupt_member(p, at=0.9, payload=b"\x01\x02\x03\x04")
    [f] = codes(scan(tiny_pre, tmp_path), "DG201")
    assert "CRC mismatch" in f.message


def test_dg201_truncated_npz(tiny_pre, tmp_path):
    p = cfg(tiny_pre) / "case_2.npz"
    p.write_bytes(p.read_bytes()[:-100])
    assert "DG201" in codes(scan(tiny_pre, tmp_path))


def test_dg201_absurd_header_shape_does_not_allocate(tiny_pre, tmp_path):
    p = cfg(tiny_pre) / "case_1.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6, 10**6)}
    with open(p, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(64))
    np.save(cfg(tiny_pre) / "case_1_seg.npy", np.zeros((1, 4, 8, 8), np.int8))
    [f] = codes(scan(tiny_pre, tmp_path), "DG201")
    assert "header says shape" in f.message


def test_dg201_near_miss_uncompressed_npz_is_fine(tiny_pre, tmp_path):
    np.savez(cfg(tiny_pre) / "case_0.npz", data=np.ones((1, 4, 8, 8), np.float32),
             seg=np.zeros((1, 4, 8, 8), np.int8))
    assert scan(tiny_pre, tmp_path).findings == []


# DG202 -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, needle", [
    ({"seg": None, "drop": "seg"}, "missing array 'seg'"),
    ({"data": np.full((1, 4, 8, 8), np.nan, np.float32)}, "non-finite"),
    ({"seg": np.zeros((1, 4, 8, 9), np.int8)}, "does not match"),
])
def test_dg202_wrong_content(tiny_pre, tmp_path, kwargs, needle):
    p = cfg(tiny_pre) / "case_0.npz"
    if kwargs.get("drop") == "seg":
        np.savez_compressed(p, data=np.zeros((1, 4, 8, 8), np.float32))
    else:
        write_case_npz(cfg(tiny_pre), "case_0", **kwargs)
    [f] = codes(scan(tiny_pre, tmp_path), "DG202")
    assert needle in f.message


def test_dg202_object_array(tiny_pre, tmp_path):
    p = cfg(tiny_pre) / "case_0.npz"
    np.savez_compressed(p, data=np.array([{"a": 1}], dtype=object), seg=np.zeros((1, 4, 8, 8), np.int8))
    [f] = codes(scan(tiny_pre, tmp_path), "DG202")
    assert "object array" in f.message


def test_dg202_near_miss_extra_channel_is_fine(tiny_pre, tmp_path):
    data = np.zeros((2, 4, 8, 8), np.float32)   # two input channels, seg keeps one
    write_case_npz(cfg(tiny_pre), "case_0", data=data)
    assert scan(tiny_pre, tmp_path).findings == []


# DG203 -----------------------------------------------------------------------
@pytest.fixture
def b2nd_ds(tiny_pre):
    c = cfg(tiny_pre)
    for i in range(3):
        (c / f"case_{i}.npz").unlink()
        write_b2nd(c / f"case_{i}.b2nd", np.random.default_rng(i).normal(size=(1, 4, 8, 8)).astype(np.float32))
        write_b2nd(c / f"case_{i}_seg.b2nd", (np.arange(256).reshape(1, 4, 8, 8) % 4).astype(np.int16))
    return tiny_pre


def test_b2nd_healthy(b2nd_ds, tmp_path):
    assert scan(b2nd_ds, tmp_path).findings == []


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_dg203_truncated_b2nd(b2nd_ds, tmp_path, cut):
    p = cfg(b2nd_ds) / "case_1.b2nd"
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * cut)])
    [f] = codes(scan(b2nd_ds, tmp_path), "DG203")
    assert f.case == "case_1"


def test_dg203_random_bytes(b2nd_ds, tmp_path):
    (cfg(b2nd_ds) / "case_2_seg.b2nd").write_bytes(os.urandom(3000))
    assert "DG203" in codes(scan(b2nd_ds, tmp_path))


def test_dg202_nan_in_b2nd(b2nd_ds, tmp_path):
    write_b2nd(cfg(b2nd_ds) / "case_0.b2nd", np.full((1, 4, 8, 8), np.inf, np.float32))
    assert codes(scan(b2nd_ds, tmp_path)) == ["DG202"]


# DG204 / DG205 -----------------------------------------------------------------
def test_dg204_missing_keys(tiny_pre, tmp_path):
    write_pkl(cfg(tiny_pre), "case_0", {"spacing": [1, 1, 1]})
    [f] = codes(scan(tiny_pre, tmp_path), "DG204")
    assert "class_locations" in f.message


def test_dg204_truncated_pickle(tiny_pre, tmp_path):
    p = cfg(tiny_pre) / "case_0.pkl"
    p.write_bytes(p.read_bytes()[:40])
    assert codes(scan(tiny_pre, tmp_path)) == ["DG204"]


class Evil:
    def __reduce__(self):
        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_dg205_code_execution_pickle_is_reported_and_never_run(tiny_pre, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (cfg(tiny_pre) / "case_0.pkl").write_bytes(pickle.dumps({"x": Evil()}))
    [f] = codes(scan(tiny_pre, tmp_path), "DG205")
    assert "system" in f.message and str(f.fix) == "quarantine"
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()


def test_dg205_near_miss_numpy_scalars_and_arrays_are_plain_data(tiny_pre, tmp_path):
    obj = dict(__import__("conftest").props(), extra=np.int64(3), arr=np.arange(5, dtype=np.uint16))
    write_pkl(cfg(tiny_pre), "case_0", obj)
    assert scan(tiny_pre, tmp_path).findings == []


# DG206 -----------------------------------------------------------------------
def test_dg206_missing_pkl_and_orphan_pkl(tiny_pre, tmp_path):
    (cfg(tiny_pre) / "case_0.pkl").unlink()
    (cfg(tiny_pre) / "case_1.npz").unlink()
    msgs = sorted(f.message for f in codes(scan(tiny_pre, tmp_path), "DG206"))
    assert msgs == ["incomplete case: .pkl without any data file",
                    "incomplete case: data without its .pkl properties"]


def test_dg206_b2nd_without_seg(b2nd_ds, tmp_path):
    (cfg(b2nd_ds) / "case_2_seg.b2nd").unlink()
    [f] = codes(scan(b2nd_ds, tmp_path), "DG206")
    assert ".b2nd without _seg.b2nd" in f.message


def test_dg206_stale_npy_and_near_miss_fresh_npy(tiny_pre, tmp_path):
    c = cfg(tiny_pre)
    with np.load(c / "case_0.npz") as z:
        for i in (0, 1):
            np.save(c / f"case_{i}.npy", z["data"])
            np.save(c / f"case_{i}_seg.npy", z["seg"])
    npz_t = (c / "case_0.npz").stat().st_mtime_ns
    os.utime(c / "case_0.npy", ns=(npz_t - 10**12, npz_t - 10**12))
    # case_1's npy pair is newer than its npz: what nnU-Net's unpacking produces
    [f] = codes(scan(tiny_pre, tmp_path), "DG206")
    assert f.case == "case_0" and "stale" in f.message


# DG210 -----------------------------------------------------------------------
def test_dg210_undeclared_label_value(tiny_pre, tmp_path):
    seg = np.zeros((1, 4, 8, 8), np.int8)
    seg[0, 0, 0, 0] = 7
    write_case_npz(cfg(tiny_pre), "case_0", seg=seg)
    [f] = codes(scan(tiny_pre, tmp_path), "DG210")
    assert "[7]" in f.message


def test_dg210_near_miss_minus_one_marker_is_allowed(tiny_pre, tmp_path):
    seg = np.full((1, 4, 8, 8), -1, np.int8)
    seg[0, 1] = 3
    write_case_npz(cfg(tiny_pre), "case_0", seg=seg)
    assert scan(tiny_pre, tmp_path).findings == []


def test_dg210_int16_b2nd_segmentation(b2nd_ds, tmp_path):
    seg = np.zeros((1, 4, 8, 8), np.int16)
    seg[0, 2, 3, 3] = 300
    write_b2nd(cfg(b2nd_ds) / "case_1_seg.b2nd", seg)
    [f] = codes(scan(b2nd_ds, tmp_path), "DG210")
    assert "300" in f.message


def test_light_unpickler_judges_exactly_like_numpy(tmp_path):
    """The numpy-free stand-ins give the same findings and facts as loading with numpy."""
    import pickle

    from dataguard.checks import pickles, safe_pickle
    from conftest import props
    from dataguard.checks.base import FileTask

    base = props()
    variants = [
        base,
        {**base, "spacing": np.array([1.0, 0.5, 2.0])},                     # 1-D float64 array
        {**base, "spacing": np.array([1.0, -0.5, 2.0], dtype=">f4")},        # big-endian, negative
        {**base, "spacing": np.zeros(100)},                                   # long: numpy decides
        {**base, "shape_before_cropping": np.array([4, 8, 8], np.int32)},
        {**base, "class_locations": {1: np.zeros((0, 4), np.int64), 2: np.ones((7, 4), np.int16)}},
        {**base, "class_locations": {np.int64(1): np.zeros((3, 4), np.int64), (1, 2): np.zeros((2, 4))}},
        {**base, "bbox_used_for_cropping": np.array([[0, 4], [0, 8], [0, 8]])},
    ]
    task = FileTask("x.pkl", "preprocessed/c/x.pkl", "pkl", "config", "x")
    for v in variants:
        for proto in (4, 5):
            data = pickle.dumps(v, protocol=proto)
            light = pickles.check_pkl(task, data)
            real_props = safe_pickle.loads_numpy(data)
            real = pickles._judge(task, real_props)
            assert [f.code for f in light[0]] == [f.code for f in real[0]], v
            assert light[1] == real[1], v
