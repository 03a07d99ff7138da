"""Hostile environments and names: a manifest folder nobody can write, file names made of
rich markup and terminal escapes. A scan is still a scan, and a name is only ever text."""
from __future__ import annotations

import io
import json
import os

import pytest

import dataguard.cli
from conftest import make_tiny_pre, mounted_tmpfs

CFG = "nnUNetPlans_3d_fullres"
EVIL = "._[bold red]EVIL[link=http:x]click.b2nd"


def _with_a_finding(tmp_path):
    ds = make_tiny_pre(tmp_path)
    (ds / CFG / "._case_0.npz").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)   # DG101, an error
    return ds


@pytest.fixture
def read_only_dir(tmp_path):
    """A real read-only file system (tmpfs remounted ro): root's permission bits do not stop root."""
    yield from mounted_tmpfs(tmp_path / "ro", read_only=True)


def _scan(args, capsys):
    capsys.readouterr()
    rc = dataguard.cli.main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("where", ["under-a-file", "read-only-fs"])
def test_scan_prints_findings_when_the_manifest_cannot_be_written(tmp_path, capsys, where, request):
    ds = _with_a_finding(tmp_path)
    if where == "under-a-file":
        (tmp_path / "afile").write_text("x")
        man, why = tmp_path / "afile" / "sub", "Not a directory"
    else:
        man, why = request.getfixturevalue("read_only_dir") / "manifests", "Read-only file system"
    for fmt in ("json", "table"):
        rc, out, err = _scan(["scan", str(ds), "--manifest-dir", str(man), "--format", fmt, "--no-progress"], capsys)
        assert rc == 1, err                                   # by the findings, never 3
        assert "internal error" not in err
        assert "DG101" in out
        assert f"manifest not written ({man / 'Dataset777_Tiny.json'}: {why})" in err, err
        if fmt == "json":
            assert [f["code"] for f in json.loads(out)["findings"]] == ["DG101"]
    rc, _, err = _scan(["scan", str(ds), "--manifest-dir", str(man), "--no-progress", "--fail-on", "never"], capsys)
    assert rc == 0 and "manifest not written" in err


def test_progress_bar_shows_a_markup_file_name_literally():
    from rich.console import Console

    from dataguard.cli.progress import ByteProgress

    bar = ByteProgress("checking")
    buf = io.StringIO()
    bar._progress.live.console = Console(file=buf, force_terminal=True, width=120, color_system="truecolor")
    with bar:
        bar.update(10, 100, f"preprocessed/{CFG}/{EVIL}")
        bar._progress.refresh()
    text = buf.getvalue()
    assert "[bold red]EVIL" in text or "EVIL[link=http:x]click" in text, text
    assert "\x1b]8;" not in text                               # no OSC 8 hyperlink reached the terminal


def test_scan_of_a_markup_name_with_progress_in_a_terminal(tmp_path):
    """The whole CLI in a pseudo-terminal: the findings table and the progress bar."""
    import pty
    import sys

    ds = make_tiny_pre(tmp_path)
    (ds / CFG / EVIL).write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    (ds / CFG / "esc\x1b]8;;http:x\x07name.npz").write_bytes(b"")
    out = bytearray()
    pid, fd = pty.fork()
    if pid == 0:                                               # pragma: no cover - the child
        os.environ["COLUMNS"] = "200"
        os.execv(sys.executable, [sys.executable, "-m", "dataguard", "scan", str(ds), "--manifest-dir",
                                  str(tmp_path / "m")])
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace")
    assert "\x1b]8;" not in text, text                         # neither the bar nor the table linked anything
    assert "EVIL[link=http:x]click" in text.replace("\r\n", "").replace("\n", "") or "[bold red]" in text, text
    assert "esc\\x1b]8;;http:x\\x07name.npz" in text.replace("\r\n", "").replace("\n", ""), text


def test_errors_and_notes_show_control_characters_as_escapes(tmp_path, capsys):
    rc = dataguard.cli.main(["scan", str(tmp_path / "no\x1b[31mwhere"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "\x1b" not in err and "no\\x1b[31mwhere" in err, err
