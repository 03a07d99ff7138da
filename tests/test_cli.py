"""The CLI as users run it: a real subprocess for the entry point, main() for the rest."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest

from dataguard.cli import build_parser, main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def broken(ds):
    (ds / "nnUNetPlans_3d_fullres" / "._case_0.npz").write_bytes(b"\x00\x05\x16\x07" + bytes(40))
    (ds / "Thumbs.db").write_bytes(b"x")   # a warning (outside a config folder)


def test_console_script_help_runs_and_is_light():
    out = subprocess.run([sys.executable, "-m", "dataguard", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "scan" in out.stdout and "exit codes" in out.stdout


def test_json_output_is_only_json_and_matches_schema(tiny_pre, tmp_path, capsys):
    broken(tiny_pre)
    code, out, err = run(capsys, "scan", str(tiny_pre), "--format", "json", "--manifest-dir", str(tmp_path / "m"))
    assert code == 1
    data = json.loads(out)
    schema = json.loads(resources.files("dataguard").joinpath("data/scan-result.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert data["summary"]["errors"] == 1 and data["summary"]["warnings"] == 1
    assert {f["code"] for f in data["findings"]} == {"DG101", "DG102"}
    assert "\x1b[" not in out        # no colour codes
    assert "errors" not in out.split("\n")[-1]  # the summary line went to stderr
    assert "1 error" in err


def test_csv_output(tiny_pre, tmp_path, capsys):
    broken(tiny_pre)
    code, out, _ = run(capsys, "scan", str(tiny_pre), "--format", "csv", "--manifest-dir", str(tmp_path / "m"))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["code"] for r in rows} == {"DG101", "DG102"}
    assert rows[0].keys() == {"code", "severity", "dataset", "path", "case", "message", "fix", "help"}


def test_table_output_without_terminal_has_no_colour(tiny_pre, tmp_path, capsys):
    broken(tiny_pre)
    code, out, _ = run(capsys, "scan", str(tiny_pre), "--manifest-dir", str(tmp_path / "m"))
    assert "DG101" in out and "._case_0.npz" in out and "\x1b[" not in out


@pytest.mark.parametrize("args, expect_codes, exit_code", [
    (["--select", "DG102"], {"DG102"}, 0),             # only a warning left: below --fail-on error
    (["--ignore", "DG1"], set(), 0),
    (["--select", "dg1", "--ignore", "DG101"], {"DG102"}, 0),
    (["--fail-on", "warning", "--select", "DG102"], {"DG102"}, 1),
    (["--fail-on", "never"], {"DG101", "DG102"}, 0),
])
def test_select_ignore_fail_on(tiny_pre, tmp_path, capsys, args, expect_codes, exit_code):
    broken(tiny_pre)
    code, out, _ = run(capsys, "scan", str(tiny_pre), "--format", "json",
                       "--manifest-dir", str(tmp_path / "m"), *args)
    assert {f["code"] for f in json.loads(out)["findings"]} == expect_codes
    assert code == exit_code


def test_clean_dataset_exits_zero(tiny_pre, tmp_path, capsys):
    code, out, _ = run(capsys, "scan", str(tiny_pre), "--manifest-dir", str(tmp_path / "m"))
    assert code == 0 and "No findings" in out


@pytest.mark.parametrize("argv, needle", [
    (["scan", "/definitely/not/here"], "no such file or folder"),
    (["scan", "--select", "DG999"], "unknown finding code"),
    (["explain", "DG000"], "unknown finding code"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_non_nnunet_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "holiday_photos").mkdir()
    (tmp_path / "holiday_photos" / "a.jpg").write_bytes(b"\xff\xd8")
    code, _, err = run(capsys, "scan", str(tmp_path / "holiday_photos"))
    assert code == 2 and "not an nnU-Net" in err


def test_no_target_and_no_env_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    code, _, err = run(capsys, "scan")
    assert code == 2 and "nnUNet_preprocessed" in err


def test_internal_error_is_exit_3_without_traceback(tiny_pre, tmp_path, capsys, monkeypatch):
    import dataguard.engine.scanner as scan_mod

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(scan_mod, "scan", boom)
    code, _, err = run(capsys, "scan", str(tiny_pre), "--manifest-dir", str(tmp_path / "m"))
    assert code == 3 and "internal error" in err and "Traceback" not in err


def test_explain_prints_catalogue_entry(capsys):
    code, out, _ = run(capsys, "explain", "DG201")
    words = " ".join(out.split())                  # explain wraps at 80 columns, at words
    assert code == 0 and "invalid stored block lengths" in words and "re-preprocess" in words
    code, out, _ = run(capsys, "explain")
    assert "DG101" in out and "DG703" in out


def test_verify_command_exit_codes(tiny_pre, tmp_path, capsys):
    m = str(tmp_path / "m")
    assert run(capsys, "verify", str(tiny_pre), "--manifest-dir", m)[0] == 2    # no manifest yet
    assert run(capsys, "scan", str(tiny_pre), "--manifest-dir", m)[0] == 0
    assert run(capsys, "verify", str(tiny_pre), "--manifest-dir", m)[0] == 0
    (tiny_pre / "nnUNetPlans_3d_fullres" / "case_0.pkl").unlink()
    code, out, _ = run(capsys, "verify", str(tiny_pre), "--manifest-dir", m, "--format", "json")
    assert code == 1 and [f["code"] for f in json.loads(out)["findings"]] == ["DG702"]


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.format_help().strip(), name
        assert sub._choices_actions and any(c.dest == name and c.help for c in sub._choices_actions), name


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, p in _subparsers(sub):
                    yield f"{name} {inner}", p


def test_every_command_with_datasets_takes_the_engine_options():
    """One spine: whatever names datasets also takes --manifest-dir, -j and --executor."""
    from dataguard.cli import build_parser

    missing = []
    for name, p in _subparsers(build_parser()):
        dests = {a.dest for a in p._actions}
        if dests & {"paths", "dataset"} and not {"manifest_dir", "jobs", "executor"} <= dests:
            missing.append(name)
    assert missing == []


def test_ensemble_suggest_is_a_real_subcommand_and_plain_ensemble_still_combines(tmp_path, capsys):
    import dataguard.cli

    text = dataguard.cli.build_parser().format_help()
    assert "SUPPRESS" not in text and "ensemble-suggest" not in text
    args = dataguard.cli.build_parser().parse_args(["ensemble", "suggest", "-d", "1", "--model", "2d"])
    assert args.func.__name__ == "cmd_suggest" and args.dataset == "1"
    args = dataguard.cli.build_parser().parse_args(["ensemble", "-i", "a", "-i", "b", "-o", "out"])
    assert args.func.__name__ == "cmd_ensemble" and [str(p) for p in args.input] == ["a", "b"]
    args = dataguard.cli.build_parser().parse_args(["ensemble", "combine", "-i", "a", "-o", "out"])
    assert args.func.__name__ == "cmd_ensemble"
    assert dataguard.cli.main(["ensemble"]) == 2
    assert "needs -i DIR" in capsys.readouterr().err
