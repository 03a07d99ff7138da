"""Small fixes, one test (or a few) each: `splits show` before the first training, piped
tables as wide as $COLUMNS, one epoch numbering, the report's words for a missing CV, one
repair command from the gate, one manifest schema, the version, a closed stdout, and one
exception hierarchy."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import held_out, make_tiny_pre
from dataguard.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cardiac(n=8):
    """n cases c0.. with labels 1 and 2; label 3 missing from every 4th case."""
    return {f"c{i}": (1, 2) if i % 4 == 3 else (1, 2, 3) for i in range(n)}


@pytest.fixture
def folds_ds(tmp_path):
    """8 hand-made preprocessed cases, no splits_final.json yet."""
    return make_tiny_pre(tmp_path, "Dataset778_Folds", cardiac(8), channel="MRI")


# --- 1. `splits show` without splits_final.json ------------------------------------------------
def test_splits_show_without_a_file_shows_nnunets_default_split(folds_ds, tmp_path, capsys, monkeypatch):
    from dataguard.splits.folds import nnunet_default_split

    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, err = run(capsys, "splits", "show", str(folds_ds), "--manifest-dir", str(tmp_path / "m"))
    assert code == 0, err
    assert "nnU-Net's default split (not written yet)" in out
    assert "KFold(shuffle=True, random_state=12345)" in out and "DG505" in out
    assert not (folds_ds / "splits_final.json").exists()                 # shown, not written
    code, out, err = run(capsys, "splits", "show", str(folds_ds), "--format", "json",
                         "--manifest-dir", str(tmp_path / "m"))
    doc = json.loads(out)
    assert code == 0 and doc["written"] is False and "not written yet" in doc["title"]
    expected = nnunet_default_split(sorted(cardiac(8)))
    assert [f["n_val"] for f in doc["folds"]] == [len(f["val"]) for f in expected]
    assert "DG505" in [f["code"] for f in doc["findings"]]


def test_splits_show_with_a_file_says_it_is_written(folds_ds, tmp_path, capsys):
    from dataguard.splits.folds import nnunet_default_split

    (folds_ds / "splits_final.json").write_text(json.dumps(nnunet_default_split(sorted(cardiac(8)))))
    code, out, _ = run(capsys, "splits", "show", str(folds_ds), "--format", "json",
                       "--manifest-dir", str(tmp_path / "m"))
    doc = json.loads(out)
    assert code == 0 and doc["written"] is True and doc["about"] is None
    assert "DG505" not in [f["code"] for f in doc["findings"]]


# --- 2. piped tables follow $COLUMNS ----------------------------------------------------------
@pytest.fixture
def cluttered(tmp_path):
    """A dataset whose findings make long table rows (junk files: DG1xx)."""
    ds = make_tiny_pre(tmp_path)
    cfg = ds / "nnUNetPlans_3d_fullres"
    (cfg / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (cfg / "._case_0.npz").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40))
    return ds


@pytest.mark.parametrize("columns, width", [(None, 80), ("120", 120), ("50", 50)])
def test_piped_tables_are_as_wide_as_columns(cluttered, tmp_path, capsys, monkeypatch, columns, width):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = run(capsys, "scan", str(cluttered), "--manifest-dir", str(tmp_path / "m"), "--no-progress")
    lines = out.splitlines()
    assert code == 1 and "DG10" in out and "\x1b[" not in out
    assert max(len(line) for line in lines) == width          # the table fills the width, never more


def test_one_console_helper_makes_every_plain_console():
    """No command builds its own wide Console: tables to a pipe all come from common.plain_console."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "dataguard").rglob("*.py")
                 if "width=200" in p.read_text("utf-8")]
    assert offenders == []


# --- 3. one epoch numbering -------------------------------------------------------------------
LABELS3 = ["myocardium", "left_ventricle", "right_ventricle"]


def training_events(rows):
    """The events the trainer emits for these per-epoch pseudo Dice rows (best from RunMonitor)."""
    from dataguard.train.monitor import RunMonitor

    mon = RunMonitor(LABELS3)
    events = [{"event": "start", "labels": LABELS3, "num_epochs": len(rows), "start_epoch": 0, "iterations": 2,
               "val_iterations": 1, "history": {}}]
    for i in range(len(rows)):
        v = mon.judge(rows[:i + 1])
        events.append({"event": "epoch", "epoch": v.epoch, "num_epochs": len(rows), "dice": v.dice, "ema": v.ema,
                       "best_epoch": v.best_epoch, "best_ema": v.best_ema, "epoch_seconds": 1.0, "collapses": []})
    return events + [{"event": "trained", "stop": None, "epochs": len(rows)}]


def test_view_and_summary_name_the_same_epochs(tmp_path, capsys, monkeypatch):
    import io
    import re

    from dataguard.cli.logs import render_runs
    from dataguard.train.summary import run_from_events
    from dataguard.cli.live_view import LiveView

    rows = [[0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.6, 0.7, 0.6], [0.9, 0.9, 0.9]]     # best EMA: the last epoch
    events = training_events(rows)
    buf = io.StringIO()
    view = LiveView("Dataset901 2d fold 1", live=False, file=buf)
    for ev in events:
        view(ev)
    last_line = [line for line in buf.getvalue().splitlines() if line.startswith("epoch ")][-1]
    view_epoch, view_best = re.search(r"^epoch (\d+)/\d+ .*\(best \S+ at (\d+)\)", last_line).groups()
    run = run_from_events(events, tmp_path, "Dataset901_DemoCardiac")
    monkeypatch.setenv("COLUMNS", "200")
    render_runs([run])
    summary = capsys.readouterr().out
    summary_best = re.search(r"best EMA \S+ at epoch (\d+)", summary).group(1)
    assert view_best == summary_best == str(run.best_epoch) == "3"
    assert view_epoch == str(run.epochs[-1]) == "3"                     # nnU-Net's "Epoch 3", the 4th
    assert f"{len(rows)} epochs" in summary                              # a count stays a count


# --- 4. the report says why there is no cross-validation --------------------------------------
def report_html(ds, tmp_path, capsys) -> str:
    out = tmp_path / "report.html"
    code, _, err = run(capsys, "report", str(ds), "-o", str(out), "--no-images", "--manifest-dir", str(tmp_path / "m"))
    assert code in (0, 1), err
    return out.read_text("utf-8")


def test_report_without_trained_models_says_so_in_words(tiny_pre, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    html = report_html(tiny_pre, tmp_path, capsys)
    assert "cross-validation of Dataset777_Tiny not shown: no trained models under " \
           "$nnUNet_results/Dataset777_Tiny yet (run `dataguard train Dataset777_Tiny" in html
    assert "Errno" not in html and "No such file" not in html


def test_report_with_models_but_no_splits_file_says_so_in_words(tiny_pre, tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    fold = results / "Dataset777_Tiny/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0"
    (fold / "validation").mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_bytes(b"")          # a finished fold (unfinished ones are skipped)
    monkeypatch.setenv("nnUNet_results", str(results))
    html = report_html(tiny_pre, tmp_path, capsys)
    assert "no splits_final.json in $nnUNet_preprocessed/Dataset777_Tiny: nnU-Net writes it at the first" in html
    assert "Errno" not in html and "No such file" not in html


# --- 5. the gate names one repair command -----------------------------------------------------
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)


def test_fixes_for_gathers_every_repairable_code_into_one_command():
    from dataguard.findings import Fix, finding
    from dataguard.train.preflight import fixes_for

    found = [finding("DG102", "a", "x", fix=Fix.QUARANTINE), finding("DG101", "b", "y", fix=Fix.QUARANTINE),
             finding("DG101", "c", "z", fix=Fix.QUARANTINE), finding("DG504", "s", "w", fix=Fix.REGENERATE_SPLITS)]
    assert fixes_for(found, "Dataset901_X") == ["dataguard repair -d Dataset901_X --select DG101,DG102",
                                                "dataguard splits rebalance -d Dataset901_X"]


@pytest.mark.nnunet
def test_gate_names_one_repair_command_for_two_codes(real_project):
    from conftest import dataguard_cli, train_env

    cfg = real_project / "nnUNet_preprocessed/Dataset901_DemoCardiac/nnUNetPlans_2d"
    (cfg / "._x.b2nd").write_bytes(APPLEDOUBLE)
    (cfg / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    out = dataguard_cli(["train", "901", "2d", "1", "--device", "cpu", "--dry-run"], train_env(real_project),
                        real_project)
    assert out.returncode == 1, out.stdout + out.stderr
    fixes = out.stdout.split("fix with:")[1].split("REFUSED")[0].split()
    repairs = [i for i, w in enumerate(fixes) if w == "repair"]
    assert len(repairs) == 1, out.stdout                                 # one command, not one per code
    codes = fixes[fixes.index("--select") + 1].split(",")
    assert len(codes) == 2 and codes == sorted(codes) and all(c.startswith("DG1") for c in codes), out.stdout
    assert f"dataguard repair -d Dataset901_DemoCardiac --select {','.join(codes)}" in out.stdout


# --- 6. one manifest schema -------------------------------------------------------------------
def test_one_manifest_schema_the_packaged_one():
    from importlib.resources import files

    skip = {".venv", ".git", "build", "dataguard.egg-info", ".pytest_cache"}
    copies = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("manifest.schema.json")
              if not skip & set(p.relative_to(ROOT).parts)]
    assert copies == ["dataguard/data/manifest.schema.json"]
    schema = json.loads(files("dataguard").joinpath("data/manifest.schema.json").read_text("utf-8"))
    assert schema["properties"]["schema"]
    for doc in ("README.md", "docs/manifest.md", "manifests/README.md"):
        text = (ROOT / doc).read_text("utf-8")
        assert "manifest.schema.json" not in text or "dataguard/data/manifest.schema.json" in text, doc


# --- 7. the version ---------------------------------------------------------------------------
def test_version_is_the_changelogs_latest():
    import re

    heading = next(line for line in (ROOT / "CHANGELOG.md").read_text("utf-8").splitlines()
                   if line.startswith("## "))
    assert re.fullmatch(r"## \d+\.\d+\.\d+", heading), heading          # released: no "(unreleased)"
    out = subprocess.run([sys.executable, "-m", "dataguard", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"dataguard {heading[3:]}"
    assert f'\nversion = "{heading[3:]}"\n' in (ROOT / "pyproject.toml").read_text("utf-8")


# --- 8. a closed stdout ends quietly ----------------------------------------------------------
def read_a_little_then_close(argv, cwd) -> subprocess.CompletedProcess:
    """Run dataguard with stdout on a real pipe (4 KiB, Linux's smallest, so the output does not
    fit), read a few bytes, close the reading end: `dataguard ... | head -c 16`."""
    import fcntl
    import os

    r, w = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "dataguard", *argv], stdout=w, stderr=subprocess.PIPE, cwd=cwd)
    os.close(w)
    head = os.read(r, 16)            # unbuffered: a buffered reader would drain 8 KiB of the pipe
    os.close(r)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return subprocess.CompletedProcess(argv, proc.wait(timeout=120), head, err)


@pytest.mark.skipif(sys.platform != "linux", reason="the 4 KiB pipe needs Linux's F_SETPIPE_SZ")
def test_explain_into_a_closed_pipe_ends_quietly(tmp_path):
    out = read_a_little_then_close(["explain"], tmp_path)
    assert out.stdout and out.stderr == "" and out.returncode == 141, out


@pytest.mark.skipif(sys.platform != "linux", reason="the 4 KiB pipe needs Linux's F_SETPIPE_SZ")
def test_scan_json_into_a_closed_pipe_ends_quietly(cluttered, tmp_path):
    cfg = cluttered / "nnUNetPlans_3d_fullres"
    for i in range(40):                                     # enough findings for more JSON than the pipe holds
        (cfg / f"._junk_{i}.npz").write_bytes(APPLEDOUBLE)
    out = read_a_little_then_close(["scan", str(cluttered), "--format", "json", "--no-progress",
                                    "--manifest-dir", str(tmp_path / "m")], tmp_path)
    assert out.stdout.startswith(b"{") and out.stderr == "" and out.returncode == 141, out


# --- 9. one exception hierarchy; nnU-Net's own failures exit 1 --------------------------------
# Exception classes of the package that are no DataguardError, each with why. Private ones
# (a leading underscore) need no entry: they never leave their module.
NOT_DATAGUARD_ERRORS = {
    "dataguard.checks.safe_pickle.NeedNumpy": "a signal, not an error: loads() catches it and asks numpy",
    "dataguard.checks.safe_pickle.Unsure": "a signal, not an error: loads() catches it and runs the reference path",
    "dataguard.fsio.CopyMismatch": "an OSError on purpose: every `except OSError` treats a copy that differs "
                                   "from its source as failed I/O, and the source stays",
    "dataguard.engine.journal.RollbackProblem": "caught where it is raised (with OSError) and reported as a "
                                                "line of the rollback, never raised out of the journal",
}


def package_exception_classes() -> dict[str, type]:
    import importlib
    import inspect
    import pkgutil

    import dataguard

    out = {}
    for info in pkgutil.walk_packages(dataguard.__path__, "dataguard."):
        if info.name.startswith("dataguard.train.ext") or info.name.endswith("__main__"):
            continue                      # nnU-Net's trainer plug-in folder (nnU-Net loads it); `python -m`
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                out[f"{info.name}.{name}"] = obj
    return out


def test_every_exception_class_is_a_dataguard_error_in_errors():
    import dataguard.errors as errors
    from dataguard.errors import DataguardError

    classes = package_exception_classes()
    assert "dataguard.errors.NnUNetError" in classes and len(classes) > 10
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, DataguardError)
                    and not cls.__name__.startswith("_") and name not in NOT_DATAGUARD_ERRORS)
    assert strays == [], f"subclass DataguardError (in dataguard/errors.py) or list with a reason: {strays}"
    assert set(NOT_DATAGUARD_ERRORS) <= set(classes), "listed but gone: delete its line"
    unnamed = sorted(name for name, cls in classes.items()
                     if issubclass(cls, DataguardError) and getattr(errors, cls.__name__, None) is not cls)
    assert unnamed == [], f"define in dataguard/errors.py: {unnamed}"
    elsewhere = sorted(name for name, cls in classes.items()
                       if issubclass(cls, DataguardError) and not name.startswith("dataguard.errors."))
    assert elsewhere == [], f"every DataguardError is defined in dataguard/errors.py: {elsewhere}"


def test_old_homes_still_name_the_moved_classes():
    import pickle

    from dataguard import errors
    from dataguard.checks import npz, raw, safe_pickle
    from dataguard.nnunet import NnUNetError

    assert NnUNetError is errors.NnUNetError and raw.RawError is errors.RawError
    assert npz.MemberError is errors.MemberError and safe_pickle.Refused is errors.Refused
    assert issubclass(safe_pickle.Malformed, pickle.UnpicklingError)            # pickle's contract kept
    assert issubclass(safe_pickle.ForbiddenGlobal, errors.Refused)


def test_nnunet_failure_exits_1_with_the_tail_of_its_output(capsys, monkeypatch):
    """main() maps NnUNetError to 1 and prints its message (the tail), never 'internal error'."""
    import dataguard.cli.explain as explain
    from dataguard.errors import nnunet_failed

    def fail(args):
        raise nnunet_failed("nnUNetv2_predict for model 2d", 1, "\n".join(f"line {i}" for i in range(40)))

    monkeypatch.setattr(explain, "cmd_explain", fail)            # bound when main() builds the parser
    code, _, err = run(capsys, "explain", "DG201")
    assert code == 1 and "internal error" not in err, err
    assert "nnUNetv2_predict for model 2d failed (exit 1)" in err and "line 39" in err and "line 24" not in err


@pytest.mark.nnunet
def test_submit_when_nnunet_predict_fails_exits_1_with_its_output(real_project):
    """A real nnUNetv2_predict that fails: a plain checkpoint (it passes the weights_only proof)
    in a model folder without nnU-Net's plans.json and dataset.json."""
    import shutil

    import torch

    from conftest import dataguard_cli, train_env

    fold = real_project / "nnUNet_results/Dataset901_DemoCardiac/nnUNetTrainer__nnUNetPlans__2d/fold_0"
    fold.mkdir(parents=True)
    torch.save({"network_weights": {}}, fold / "checkpoint_final.pth")        # submit's default checkpoint
    ts = real_project / "imagesTs"
    ts.mkdir()
    held_out(real_project / "nnUNet_raw/Dataset901_DemoCardiac/imagesTr/heart_000_0000.nii.gz", ts)
    out = dataguard_cli(["submit", "-d", "901", "--model", "2d", "--images", str(ts), "-o",
                         str(real_project / "sub.zip"), "--device", "cpu",
                         "--trust-checkpoint", str(fold / "checkpoint_final.pth")],
                        train_env(real_project), real_project)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "internal error" not in out.stderr
    assert "nnUNetv2_predict for model 2d failed (exit" in out.stderr and "nnU-Net's last output:" in out.stderr
    tail = out.stderr.split("nnU-Net's last output:")[1]
    assert "FileNotFoundError" in tail and "dataset.json" in tail, out.stderr     # nnU-Net's own traceback
    assert not (real_project / "sub.zip").exists()
