"""The repair plan, the quarantine list and the TUI's repair dialog read at 80 columns:
grouped by dataset, file names and run ids never broken mid-word, codes never split."""
from __future__ import annotations

import io

from conftest import make_tiny_pre
from dataguard.cli import main

APPLEDOUBLE = b"\x00\x05\x16\x07" + bytes(60)
NAME = "Dataset123_LiverTumourSegmentationChallenge"
CASES = {f"liver_tumour_case_{i:05d}": (1, 2, 3) for i in (1, 17, 42)}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def long_names(tmp_path):
    ds = make_tiny_pre(tmp_path, name=NAME, case_labels=CASES)
    cfg = ds / "nnUNetPlans_3d_fullres"
    (cfg / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(40))
    (cfg / "._liver_tumour_case_00017.npz").write_bytes(APPLEDOUBLE)
    return ds


def rows(out: str, title: str) -> list[list[list[str]]]:
    """The rows of the table under `title`: per row, per column, the cell's lines."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == title)
    body, new_row = [], True
    for ln in lines[start + 1:]:
        if ln.startswith("└"):
            break
        if ln.startswith(("├", "┡")):
            new_row = True
        elif ln.startswith("│"):
            body.append(([c.strip() for c in ln.strip("│").split("│")], new_row))
            new_row = False
    out_rows: list[list[list[str]]] = []
    for cells, first in body:
        if cells[0] or first or not out_rows:
            out_rows.append([[c] if c else [] for c in cells])
        else:
            for col, c in zip(out_rows[-1], cells):
                if c:
                    col.append(c)
    return out_rows


def assert_broken_between_words(fragments: list[str]) -> None:
    for f in fragments[:-1]:
        assert f.endswith(("/", "_", ",")), f"broken mid-word after {f!r}: {fragments}"


def test_repair_plan_at_80_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    ds = long_names(tmp_path)
    code, out, err = run(capsys, "repair", str(ds), "--dry-run", "--manifest-dir", str(tmp_path / "m"))
    assert code == 1, err
    assert all(len(ln) <= 80 for ln in out.splitlines()), out
    assert "repair plan (dry run)" in out
    plan = rows(out, NAME)                                   # grouped under the dataset, as scan is
    targets = {"".join(r[1]): r for r in plan}
    assert {"preprocessed/nnUNetPlans_3d_fullres/.DS_Store",
            "preprocessed/nnUNetPlans_3d_fullres/._liver_tumour_case_00017.npz"} <= set(targets)
    for r in plan:
        assert all(len(c) == 5 and c.startswith("DG") for c in r[0])    # one whole code per line
        assert_broken_between_words(r[1])
    assert ".DS_Store" in targets["preprocessed/nnUNetPlans_3d_fullres/.DS_Store"][1][-1]
    assert NAME not in "".join(ln for ln in out.splitlines() if ln.startswith("│"))   # no dataset column


def test_quarantine_list_at_80_columns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    ds = long_names(tmp_path)
    m = str(tmp_path / "m")
    code, out, err = run(capsys, "repair", str(ds), "--yes", "--manifest-dir", m, "--no-progress")
    assert code in (0, 1), err
    code, out, err = run(capsys, "quarantine", "list", str(ds), "--manifest-dir", m)
    assert code == 0, err
    assert all(len(ln) <= 80 for ln in out.splitlines()), out
    held = rows(out, NAME)
    assert len(held) == 2
    run_id = held[0][0]
    assert len(run_id) == 1 and len(run_id[0]) == 22            # the run id whole, on one line
    assert held[1][0] == []                                       # once per run
    shown = {}
    for r in held:
        lines = r[1]
        arrow = next(i for i, ln in enumerate(lines) if ln.startswith("→"))
        original, stored = lines[:arrow], [ln.lstrip("→ ").strip() for ln in lines[arrow:]]
        assert_broken_between_words(original)
        assert_broken_between_words(stored)
        shown["".join(original)] = "".join(stored)
    assert shown["preprocessed/nnUNetPlans_3d_fullres/.DS_Store"] == \
        f"preprocessed/.dataguard/quarantine/{run_id[0]}/nnUNetPlans_3d_fullres/.DS_Store"
    assert "preprocessed/nnUNetPlans_3d_fullres/._liver_tumour_case_00017.npz" in shown


def test_wide_plan_keeps_paths_whole(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    ds = long_names(tmp_path)
    code, out, _ = run(capsys, "repair", str(ds), "--dry-run", "--manifest-dir", str(tmp_path / "m"))
    assert "preprocessed/nnUNetPlans_3d_fullres/._liver_tumour_case_00017.npz" in out
    assert "files touched" in out


def _plan():
    from dataguard.findings import finding
    from dataguard.repair.plan import Action

    def act(kind, target, codes, files=None, **kw):
        a = Action(kind=kind, dataset=kw.pop("dataset", NAME), target=target, **kw)
        a.findings = [finding(c, target, "x") for c in codes]
        a.files = files if files is not None else [target]
        return a
    cfg = "preprocessed/nnUNetPlans_3d_fullres"
    return [act("quarantine", f"{cfg}/.DS_Store", ["DG102"]),
            act("re-preprocess", f"{cfg}/liver_tumour_case_00042", ["DG201", "DG205"],
                case="liver_tumour_case_00042", config="nnUNetPlans_3d_fullres",
                files=[f"{cfg}/liver_tumour_case_00042.npz", f"{cfg}/liver_tumour_case_00042.pkl"]),
            act("cast", "raw/labelsTr/liver_tumour_case_00003.nii.gz", ["DG401"], dataset="Dataset002_Heart")]


def test_tui_repair_dialog_names_its_key_and_never_splits_a_code():
    from rich.console import Console

    from dataguard.tui.screens import PlanModal, plan_table

    modal = PlanModal(_plan())
    assert "y or enter" in modal.question and "escape" in modal.question
    assert "y / enter: apply" in modal.HINT
    buf = io.StringIO()
    Console(width=58, file=buf, color_system=None).print(plan_table(_plan(), 58))  # the modal at 80 columns
    out = buf.getvalue()
    assert all(len(ln) <= 58 for ln in out.splitlines()), out
    for title in (NAME, "Dataset002_Heart"):
        for r in rows(out, title):
            assert all(len(c) == 5 and c.startswith("DG") for c in r[0]), r[0]
            assert_broken_between_words(r[1])
    assert "DG201" in out and "DG205" in out and ".DS_Store" in out
