"""Scans and verifies on a real `distributed.LocalCluster` (processes, 2 workers): the same
findings and manifests as the local pool, one clear error when workers cannot see the data,
and identical findings when a worker is killed mid-scan."""
from __future__ import annotations

import json
import os
import signal

import pytest

import dataguard

distributed = pytest.importorskip("distributed")
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as lc, Client(lc) as client:
        yield lc, client


@pytest.fixture
def broken(real_project):
    cfg = real_project / "nnUNet_preprocessed" / "Dataset901_DemoCardiac" / "nnUNetPlans_2d"
    seg = cfg / "heart_002_seg.b2nd"
    seg.write_bytes(seg.read_bytes()[:-200])
    (cfg / "._heart_001.b2nd").write_bytes(APPLEDOUBLE)
    return real_project


def _files(manifest_dir):
    return {p.name: json.loads(p.read_text())["files"] for p in sorted(manifest_dir.glob("*.json"))}


def test_cluster_scan_equals_local_scan(broken, tmp_path, cluster):
    _, client = cluster
    local = dataguard.Workspace([str(broken)], manifest_dir=tmp_path / "local", jobs=2).scan(full=True)
    remote_ws = dataguard.Workspace([str(broken)], manifest_dir=tmp_path / "dask", executor=client)
    remote = remote_ws.scan(full=True)
    assert [f.to_dict() for f in remote.findings] == [f.to_dict() for f in local.findings]
    assert {"DG101", "DG203"} <= {f.code for f in remote.findings}
    assert _files(tmp_path / "dask") == _files(tmp_path / "local")
    assert sum(client.run(lambda: 1).values()) == 2                 # it really ran on 2 workers
    v = remote_ws.verify()
    assert v.findings == []


def test_workers_that_cannot_see_the_data_are_one_clear_error(broken, tmp_path, cluster):
    _, client = cluster
    from dataguard.errors import UsageError
    from dataguard.engine.executors import check_mounts

    check_mounts(client, [broken])                                   # the same machine: fine
    with pytest.raises(UsageError, match="cannot see"):
        check_mounts(client, [tmp_path / "not-mounted-on-workers"])


def test_a_worker_killed_mid_scan_changes_nothing(broken, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    from dataguard.engine import scanner

    monkeypatch.setattr(scanner, "batches", lambda order, sizes, *a, **k: [[i] for i in order])   # many tasks

    local = dataguard.Workspace([str(broken)], manifest_dir=tmp_path / "local", jobs=2).scan(full=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as lc, Client(lc) as client:
        pids = client.run(os.getpid)
        seen = []

        def kill_once(done, total, rel):
            seen.append(rel)
            if len(seen) == 5:                                       # a few files in: kill one worker
                os.kill(next(iter(pids.values())), signal.SIGKILL)

        ws = dataguard.Workspace([str(broken)], manifest_dir=tmp_path / "dask", executor=client)
        res = ws.scan(full=True, on_progress=kill_once)
    assert len(seen) > 50                                            # every file still came back, once
    assert [f.to_dict() for f in res.findings] == [f.to_dict() for f in local.findings]
    assert _files(tmp_path / "dask") == _files(tmp_path / "local")


def test_executor_option_and_install_hint(monkeypatch):
    from dataguard.errors import UsageError
    from dataguard.engine.executors import connect

    assert connect("local") is None
    monkeypatch.setenv("DATAGUARD_EXECUTOR", "local")
    assert connect(None) is None
    with pytest.raises(UsageError, match="dask://HOST:PORT"):
        connect("spark://x")
    with pytest.raises(UsageError, match="cannot reach"):
        connect("dask://127.0.0.1:9")



def test_a_file_only_the_client_can_read_is_blamed_on_the_worker(tmp_path):
    from dataguard.checks.base import FileResult, FileTask
    from dataguard.findings import finding
    from dataguard.engine.scanner import _blame_the_worker

    p = tmp_path / "case.npz"
    p.write_bytes(b"PK")
    task = FileTask(path=str(p), rel="preprocessed/x/case.npz", kind="npz", where="config", case="case")
    res = FileResult(rel=task.rel)
    res.by_check["read"] = [finding("DG201", task.rel, "cannot read: FileNotFoundError [on Dask worker w1]",
                                    case="case")]
    _blame_the_worker(task, res)
    f = res.by_check["read"][0]
    assert f.code == "DG001" and "client can" in f.message and "w1" in f.message
    gone = FileTask(path=str(tmp_path / "gone.npz"), rel="preprocessed/x/gone.npz", kind="npz", where="config")
    res2 = FileResult(rel=gone.rel)
    res2.by_check["read"] = [finding("DG201", gone.rel, "cannot read")]
    _blame_the_worker(gone, res2)
    assert res2.by_check["read"][0].code == "DG201"           # the client cannot read it either: a real finding


def _tree(root):
    """Every data file outside dataguard's own folders: relative path -> decoded content digest."""
    import hashlib

    import numpy as np

    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or "/.dataguard" in "/" + rel or rel.startswith("manifests"):
            continue
        if p.suffix == ".b2nd":
            import blosc2

            out[rel] = hashlib.sha256(np.ascontiguousarray(blosc2.open(str(p))[:]).tobytes()).hexdigest()
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_repair_through_the_cluster_gives_the_same_tree(real_project, tmp_path, cluster):
    import shutil

    _, client = cluster
    a, b = tmp_path / "local", tmp_path / "dask"
    for dst in (a, b):
        shutil.copytree(real_project, dst, symlinks=True)
        cfg = dst / "nnUNet_preprocessed/Dataset901_DemoCardiac/nnUNetPlans_2d"
        for case in ("heart_002", "heart_005"):                  # two cases to rebuild, in parallel
            seg = cfg / f"{case}_seg.b2nd"
            seg.write_bytes(seg.read_bytes()[:-200])
    ra = dataguard.Workspace([str(a)], manifest_dir=tmp_path / "ma", jobs=2).repair()
    rb = dataguard.Workspace([str(b)], manifest_dir=tmp_path / "mb", executor=client).repair()
    assert not ra.failed and not rb.failed
    assert sorted(o.action.case for r in rb.reports for o in r.outcomes if o.action.kind == "re-preprocess") == \
        ["heart_002", "heart_005"]
    assert rb.after.findings == ra.after.findings
    assert _tree(b) == _tree(a)

    def staged_here():
        from dataguard.repair import apply
        return len(apply._WORKER_PREPROCESSORS)
    assert sum(client.run(staged_here).values()) >= 1          # the rebuilds ran on the workers


def test_out_of_fold_reading_on_the_cluster_equals_threads(tmp_path, cluster):
    """`ensemble suggest` reading through Dask workers: each reduces its cases where the files
    are and sends back only counts and contested voxels; the result is the threads' exactly."""
    import numpy as np
    import SimpleITK as sitk

    from dataguard.evaluate.weights import load_oof, search

    rng = np.random.default_rng(2)
    gt = tmp_path / "gt"
    gt.mkdir()
    folds = {}
    for m in ("a", "b"):
        (tmp_path / m).mkdir()
        folds[m] = {0: tmp_path / m}
    for i in range(4):
        ref = rng.integers(0, 3, size=(6, 10, 10)).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(ref), str(gt / f"c{i}.nii.gz"))
        for m, noise in (("a", 0.2), ("b", 0.6)):
            logits = np.eye(3)[ref].transpose(3, 0, 1, 2) + rng.normal(0, noise, (3, *ref.shape))
            p = np.exp(logits) / np.exp(logits).sum(0)
            np.savez_compressed(tmp_path / m / f"c{i}.npz", probabilities=p.astype(np.float16))
    labels = {1: "x", 2: "y"}
    local = load_oof(folds, gt, labels, jobs=2)
    remote = load_oof(folds, gt, labels, jobs=2, executor=cluster[1].get_executor(pure=False))
    assert remote.cases == local.cases == [f"c{i}" for i in range(4)]
    for a, b in zip(local.reduced.counts(), remote.reduced.counts()):
        assert np.array_equal(a, b)
    assert local.reduced.contested == remote.reduced.contested > 0
    s1, s2 = search(local, step=0.25), search(remote, step=0.25)
    assert s1.weights == s2.weights and s1.chosen == s2.chosen
