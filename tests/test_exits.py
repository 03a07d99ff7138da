"""Exit codes a shell sees: 141 when the reader of stdout leaves (`| head -1`), for every
command and whatever the size of the output; 130 and one line when Ctrl-C stops a scan.

Real pipelines (`bash -c 'set -o pipefail; dataguard ... | head -1'`) and a real SIGINT sent
to the process group of a running scan, as a terminal sends it to every process of the job.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import conftest
from conftest import make_tiny_pre

SIGPIPE_EXIT = 141
DG = f"{shlex.quote(sys.executable)} -m dataguard"


def piped(args: str, cwd: Path, env: dict | None = None, reader: str = "head -1") -> subprocess.CompletedProcess:
    """`dataguard ARGS | READER` in bash with pipefail: the status is dataguard's (head exits 0)."""
    return subprocess.run(["bash", "-c", f"set -o pipefail; {DG} {args} | {reader} >/dev/null"], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)


@pytest.fixture
def broken(tmp_path) -> Path:
    """A preprocessed dataset with an error finding (a .DS_Store among the cases): scan exits 1."""
    ds = make_tiny_pre(tmp_path)
    (ds / "nnUNetPlans_3d_fullres" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    return ds


def _assert_quiet_141(proc, what):
    assert proc.returncode == SIGPIPE_EXIT, f"{what}: exit {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("fmt", ["", "--format json", "--format csv"])
def test_scan_into_head_is_141_not_findings(broken, tmp_path, fmt):
    # the whole output is a few KB: it fits the pipe buffer, so no write ever fails
    args = f"scan {broken} {fmt} --no-progress --manifest-dir {tmp_path / 'm'}"
    alone = subprocess.run(["bash", "-c", f"{DG} {args} >/dev/null"], cwd=tmp_path, capture_output=True)
    assert alone.returncode == 1                   # findings: the code head must not inherit
    _assert_quiet_141(piped(args, tmp_path), f"scan {fmt} | head -1")


def test_reader_that_reads_everything_keeps_the_exit_code(broken, tmp_path):
    proc = piped(f"scan {broken} --no-progress --manifest-dir {tmp_path / 'm'}", tmp_path, reader="cat")
    assert proc.returncode == 1, proc.stderr       # `| cat`, `| less`: the reader stayed, findings it is
    ok = piped("explain DG201", tmp_path, reader="cat")
    assert ok.returncode == 0, ok.stderr


def test_every_table_command_into_head_is_141(broken, tmp_path):
    from test_logs import healthy, results_tree

    m = f"--manifest-dir {tmp_path / 'm'}"
    results = results_tree(tmp_path / "results", {0: healthy(), 1: healthy()})
    fixed = subprocess.run(["bash", "-c", f"{DG} repair {broken} --yes --no-progress {m}"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert fixed.returncode in (0, 1), fixed.stderr
    wrong = []
    env = {"nnUNet_preprocessed": str(broken.parent), "nnUNet_raw": str(tmp_path / "raw")}
    for args in ("doctor -d 777", f"logs {results}", f"quarantine list {broken} {m}", "explain",
                 "explain DG201 DG101", f"repair {broken} --dry-run {m}",
                 f"restore {broken} {m}", "--help", "scan --help"):
        proc = piped(args, tmp_path, env)
        if proc.returncode != SIGPIPE_EXIT or "Traceback" in proc.stderr or "Exception ignored" in proc.stderr:
            wrong.append(f"{args} | head -1: exit {proc.returncode}: {proc.stderr[-500:]}")
    assert not wrong, "\n".join(wrong)


# --- Ctrl-C -------------------------------------------------------------------------------------
def _big_dataset(root: Path, cases: int = 400) -> Path:
    """~250 MB of arrays to decode: the scan takes its spawn pool of workers (engine.executors)."""
    import conftest

    data = np.random.default_rng(0).normal(size=(1, 32, 64, 64)).astype(np.float32)
    seg = (np.arange(32 * 64 * 64).reshape(1, 32, 64, 64) % 4).astype(np.int8)

    def stored(folder, case, **_):
        np.savez(folder / f"{case}.npz", data=data, seg=seg)        # stored: quick to write, CRC'd on read

    real = conftest.write_case_npz
    conftest.write_case_npz = stored
    try:
        return make_tiny_pre(root, case_labels={f"case_{i:04d}": (1, 2, 3) for i in range(cases)})
    finally:
        conftest.write_case_npz = real


def _workers(pid: int) -> list[int]:
    """The spawn workers (and other children) of `pid`, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmd:
            out.append(int(d))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir() or sys.platform != "linux", reason="reads /proc for the workers")
@pytest.mark.parametrize("delay", [0.15, 0.6])       # workers importing; workers checking files
def test_ctrl_c_during_a_scan_is_one_line_and_130(tmp_path, delay):
    ds = _big_dataset(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "dataguard", "scan", str(ds), "--no-progress",
                             "--manifest-dir", str(tmp_path / "m")], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=conftest.interruptible)
    start = time.monotonic()
    while not _workers(proc.pid) and proc.poll() is None and time.monotonic() - start < 120:
        time.sleep(0.01)
    assert _workers(proc.pid), "the scan never started its worker processes"
    time.sleep(delay)
    assert proc.poll() is None, "the scan ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)           # what Ctrl-C in a terminal does: the whole job
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines() == ["dataguard: interrupted"], err
