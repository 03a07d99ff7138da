"""`dataguard tui` driven by Textual's Pilot on real nnunetv2 output with planted faults.

Asserts on widget state and on the files on disk; the snapshot tests pin what a person
sees (pytest-textual-snapshot, fixed size, fixed dataset, times hidden).
"""
from __future__ import annotations

import json

import pytest

import dataguard
from conftest import codes

M, L = "Dataset901_DemoCardiac", "Dataset902_DemoCardiacLegacy"
pytestmark = pytest.mark.nnunet
APPLEDOUBLE = b"\x00\x05\x16\x07" + bytes(60)


@pytest.fixture
def broken(real_project):
    """Dataset901 with a truncated .b2nd (heart_002) and an AppleDouble file; 902 clean."""
    cfg = real_project / "nnUNet_preprocessed" / M / "nnUNetPlans_2d"
    b2nd = cfg / "heart_002.b2nd"
    b2nd.write_bytes(b2nd.read_bytes()[:-200])
    (cfg / "._heart_001.b2nd").write_bytes(APPLEDOUBLE)
    return real_project


def _app(project, tmp_path, **kw):
    from dataguard.tui.app import DataguardApp

    ws = dataguard.Workspace([str(project / "nnUNet_preprocessed" / M)], manifest_dir=tmp_path / "m")
    return DataguardApp(ws, show_times=False, **kw)


async def _settle(pilot, app):
    await pilot.pause(0.4)            # the app starts its scan 0.3 s after the first paint
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause(0.05)
        for screen in app.screen_stack:
            await screen.workers.wait_for_complete()
        await pilot.pause(0.05)


def _statuses(app) -> dict[str, str]:
    return {r.case: r.status for r in app.rows}


async def test_table_fills_from_the_last_scan_before_any_scan_runs(broken, tmp_path):
    dataguard.Workspace([str(broken / "nnUNet_preprocessed" / M)], manifest_dir=tmp_path / "m").scan()
    app = _app(broken, tmp_path, scan_on_start=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        table = app.query_one("#cases")
        assert table.row_count == 8 + 2          # 8 cases, the stray AppleDouble file, splits_final.json
        assert _statuses(app)["splits_final.json"] == "warning"   # nnU-Net's predicted split (DG505)
        assert _statuses(app)["heart_002"] == "error"
        assert _statuses(app)["._heart_001.b2nd"] == "stray"
        assert app.table_filled_after is not None and app.table_filled_after < 5


async def test_never_scanned_dataset_scans_in_a_worker_and_fills_in(broken, tmp_path):
    app = _app(broken, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await _settle(pilot, app)
        st = _statuses(app)
        assert st["heart_002"] == "error" and st["heart_001"] == "ok" and st["._heart_001.b2nd"] == "stray"
        stats = str(app.query_one("#stats").render())
        assert "2 errors" in stats and "8 cases" in stats


async def test_filter_jump_sort(broken, tmp_path):
    app = _app(broken, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await _settle(pilot, app)
        table = app.query_one("#cases")
        await pilot.press("slash", *"DG203", "enter")
        assert table.row_count == 1 and app.current_row().case == "heart_002"
        await pilot.press("slash", "escape")
        assert table.row_count == 10
        table.move_cursor(row=0)
        await pilot.press("n")
        first = app.current_row()
        await pilot.press("n")
        second = app.current_row()
        assert {first.case, second.case} == {"heart_002", "._heart_001.b2nd"}
        await pilot.press("N")
        assert app.current_row().case == first.case
        app.sort_column = 2                                    # status: errors first
        app.refill()
        assert app.visible_rows()[0].status in ("error", "stray")


async def test_opens_with_only_the_named_cases(broken, tmp_path):
    """`dataguard tui --cases a,b` (what `evaluate --worst` prints): a comma list matches cases exactly."""
    app = _app(broken, tmp_path, initial_filter="heart_004,heart_006")
    async with app.run_test(size=(160, 48)) as pilot:
        await _settle(pilot, app)
        assert sorted(r.case for r in app.visible_rows()) == ["heart_004", "heart_006"]
        assert app.query_one("#cases").row_count == 2


async def test_case_view_preview_keys(broken, tmp_path):
    from dataguard.tui.screens import CaseScreen

    app = _app(broken, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await _settle(pilot, app)
        table = app.query_one("#cases")
        table.move_cursor(row=table.get_row_index(f"{M}/heart_001"))
        await pilot.press("enter")
        await _settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, CaseScreen)
        assert screen.query_one("#files").row_count == 5
        title = str(screen.query_one("#preview-title").render())
        assert "raw" in title and "slice 7/12" in title
        legend = str(screen.query_one("#legend").render())
        assert "myocardium" in legend and "(case " in legend
        await pilot.press("right_square_bracket")
        await _settle(pilot, app)
        assert "slice 8/12" in str(screen.query_one("#preview-title").render())
        await pilot.press("a")
        await _settle(pilot, app)
        assert "axis y" in str(screen.query_one("#preview-title").render())
        await pilot.press("o", "w")
        await _settle(pilot, app)
        title = str(screen.query_one("#preview-title").render())
        assert "overlay off" in title and "soft tissue" in title
        await pilot.press("s")                                 # the preprocessed arrays
        await _settle(pilot, app)
        assert "nnUNetPlans_2d" in str(screen.query_one("#preview-title").render())
        await pilot.press("escape")
        table.move_cursor(row=table.get_row_index(f"{M}/heart_002"))
        await pilot.press("enter")
        await _settle(pilot, app)
        app.screen.action_source()                             # the broken .b2nd: said, not drawn
        await _settle(pilot, app)
        assert "cannot draw nnUNetPlans_2d" in str(app.screen.query_one("#preview").render())
        findings = str(app.screen.query_one("#findings-text").render())
        assert "DG203" in findings and "fix: rebuild case heart_002" in findings


async def test_mark_repair_then_undo(broken, tmp_path):
    from dataguard.tui.screens import PlanModal

    cfg = broken / "nnUNet_preprocessed" / M / "nnUNetPlans_2d"
    damaged = (cfg / "heart_002.b2nd").read_bytes()
    app = _app(broken, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await _settle(pilot, app)
        table = app.query_one("#cases")
        table.move_cursor(row=table.get_row_index(f"{M}/heart_002"))
        await pilot.press("space")
        assert app.marked == {f"{M}/heart_002"}
        await pilot.press("r")
        await _settle(pilot, app)
        assert isinstance(app.screen, PlanModal)
        await pilot.press("y")
        await _settle(pilot, app)
        assert _statuses(app)["heart_002"] == "ok"
        assert _statuses(app)["._heart_001.b2nd"] == "stray"   # not selected: untouched
        assert (cfg / "heart_002.b2nd").read_bytes() != damaged
        assert not app.marked
        await pilot.press("u", "y")
        await _settle(pilot, app)
        assert _statuses(app)["heart_002"] == "error"
        assert (cfg / "heart_002.b2nd").read_bytes() == damaged       # byte for byte back


async def test_repair_all_and_cancelled_plan(broken, tmp_path):
    app = _app(broken, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await _settle(pilot, app)
        await pilot.press("R")
        await _settle(pilot, app)
        await pilot.press("escape")                            # cancelled: nothing changes
        await _settle(pilot, app)
        assert _statuses(app)["heart_002"] == "error"
        await pilot.press("R")
        await _settle(pilot, app)
        await pilot.press("enter")
        await _settle(pilot, app)
        st = _statuses(app)
        assert {s for c, s in st.items() if c.startswith("heart")} == {"ok"} and "stray" not in st.values()
        assert st["splits_final.json"] == "warning"        # R leaves the predicted split alone
    res = dataguard.Workspace([str(broken / "nnUNet_preprocessed" / M)], manifest_dir=tmp_path / "m2").scan()
    assert codes(res) == []


async def test_splits_view_and_rebalance(broken, tmp_path):
    pre = broken / "nnUNet_preprocessed" / M
    cases = [f"heart_{i:03d}" for i in range(8)]
    # heart_003 and heart_007 lack label 3: put both in fold 0's validation set
    bad = [{"train": [c for c in cases if c not in ("heart_003", "heart_007")], "val": ["heart_003", "heart_007"]},
           {"train": [c for c in cases if c in ("heart_003", "heart_007", "heart_000", "heart_001")],
            "val": [c for c in cases if c not in ("heart_003", "heart_007", "heart_000", "heart_001")]},
           {"train": [c for c in cases if c not in ("heart_000", "heart_001")], "val": ["heart_000", "heart_001"]}]
    (pre / "splits_final.json").write_text(json.dumps(bad))
    app = _app(broken, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await _settle(pilot, app)
        await pilot.press("f")
        await _settle(pilot, app)
        matrix = app.screen.query_one("#matrix")
        assert matrix.row_count == 3
        notes = str(app.screen.query_one("#notes-text").render())
        assert "DG504" in notes
        await pilot.press("b")
        await _settle(pilot, app)
        await pilot.press("y")
        await _settle(pilot, app)
        new = json.loads((pre / "splits_final.json").read_text())
        assert len(new) == 3 and all(set(f["val"]) != {"heart_003", "heart_007"} for f in new)
        assert "every fold validates every label" in str(app.screen.query_one("#notes-text").render())


async def test_an_unreadable_manifest_is_a_notification_not_a_crash(broken, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / f"{M}.json").write_text("{ not json")
    app = _app(broken, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot, app)
        notes = [n.message for n in app._notifications]
        assert any("manifest" in m and "unreadable" in m for m in notes)
        assert app.is_running


@pytest.fixture
def two_configs(real_project):
    """Dataset901 preprocessed by real nnunetv2 in 2d and 3d_fullres: every case in both."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import train_env

    pre = subprocess.run([str(Path(sys.executable).with_name("nnUNetv2_preprocess")), "-d", "901", "-c", "3d_fullres",
                          "-np", "1"], env=train_env(real_project), capture_output=True, text=True, timeout=600)
    assert pre.returncode == 0, pre.stdout[-2000:] + pre.stderr[-2000:]
    return real_project


async def test_config_column_names_configurations_as_the_plans_do(two_configs, tmp_path):
    """Issue 29 item 13: the column read "2d+nnUNetPlans_3d_fullres"."""
    app = _app(two_configs, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        table = app.query_one("#cases")
        row = table.get_row(f"{M}/heart_000")
        assert str(row[0]) == "2d, 3d_fullres"
        assert "2d, 3d_fullres" in str(app.query_one("#stats").render())
        assert {r.case for r in app.rows if r.matches("nnUNetPlans_3d_fullres")} >= {"heart_000"}
        assert {r.case for r in app.rows if r.matches("3d_fullres heart_001")} == {"heart_001"}


async def test_a_test_image_says_why_it_has_no_preview(real_project, tmp_path):
    """A test image (imagesTs) said "no image files for this case" beside its own file."""
    import shutil

    raw = real_project / "nnUNet_raw" / M
    (raw / "imagesTs").mkdir()
    shutil.copy(raw / "imagesTr" / "heart_000_0000.nii.gz", raw / "imagesTs" / "test_000_0000.nii.gz")
    app = _app(real_project, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        assert next(r for r in app.rows if r.case == "test_000").config_cell() == "test"
        table = app.query_one("#cases")
        table.move_cursor(row=table.get_row_index(f"{M}/test_000"))
        await pilot.press("enter")
        await _settle(pilot, app)
        preview = str(app.screen.query_one("#preview").render())
        assert "a test image (imagesTs)" in preview and "no image files" not in preview


def test_configuration_names_from_real_plans(two_configs):
    """Folder -> configuration name from the plans; a second plans file's configuration of the
    same name keeps its folder name, so the two stay apart (the default plans keep the bare name)."""
    from dataguard.engine.layout import planned_configurations
    from dataguard.tui.rows import config_label, configuration_names

    pre = two_configs / "nnUNet_preprocessed" / M
    names = configuration_names(planned_configurations(pre))
    assert names["nnUNetPlans_2d"] == "2d" and names["nnUNetPlans_3d_fullres"] == "3d_fullres"
    assert config_label(["nnUNetPlans_2d", "nnUNetPlans_3d_fullres"], names) == "2d, 3d_fullres"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    plans["plans_name"] = "nnUNetResEncUNetMPlans"
    for c in plans["configurations"].values():
        if "data_identifier" in c:
            c["data_identifier"] = c["data_identifier"].replace("nnUNetPlans", "nnUNetResEncUNetMPlans")
    (pre / "nnUNetResEncUNetMPlans.json").write_text(json.dumps(plans))
    names = configuration_names(planned_configurations(pre))
    assert names["nnUNetPlans_2d"] == "2d"                 # -c 2d without -p: the default plans
    assert names["nnUNetResEncUNetMPlans_3d_fullres"] == "nnUNetResEncUNetMPlans_3d_fullres"


def test_rows_and_halfblocks_are_plain_functions():
    import numpy as np

    from dataguard.tui.halfblock import to_text
    from dataguard.visual import fit, slice_rgb

    img = np.linspace(0, 1, 12 * 8, dtype=np.float32).reshape(12, 8)
    lab = np.zeros((12, 8), np.int16)
    lab[2:4, 2:4] = 1
    rgb = slice_rgb(img, lab)
    assert rgb.shape == (12, 8, 3) and tuple(rgb[2, 2]) != tuple(rgb[0, 0])
    tall = fit(rgb, (2.0, 1.0), 40, 40)                   # 12 rows of 2 mm vs 8 columns of 1 mm
    assert tall.shape[0] > tall.shape[1]
    text = to_text(rgb)
    assert text.plain.count("\n") == 5 and set(text.plain) <= {"▀", "\n"}


# --- snapshots: what a person sees --------------------------------------------------------------
SNAP_SIZE = (140, 40)


def _snap_app(project, tmp_path):
    dataguard.Workspace([str(project / "nnUNet_preprocessed" / M)], manifest_dir=tmp_path / "m").scan()
    return _app(project, tmp_path)


def test_snapshot_main_screen(broken, tmp_path, snap_compare):
    app = _snap_app(broken, tmp_path)

    async def run_before(pilot):
        await _settle(pilot, app)

    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=run_before)


def test_snapshot_case_view(broken, tmp_path, snap_compare):
    app = _snap_app(broken, tmp_path)

    async def run_before(pilot):
        await _settle(pilot, app)
        table = app.query_one("#cases")
        table.move_cursor(row=table.get_row_index(f"{M}/heart_002"))
        await pilot.press("enter")
        await _settle(pilot, app)
        _pin_compressed_bytes(app.screen.query_one("#files"))

    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=run_before)


def _pin_compressed_bytes(files):
    """The preprocessed files are blosc2's and pickle's bytes, which change with their versions
    (blosc2 4.16 compresses heart_002.b2nd differently from 4.15): the snapshot pins the layout,
    so their size and hash cells get fixed text of the same width. The raw files stay real."""
    from textual.coordinate import Coordinate

    for row in range(files.row_count):
        if str(files.get_cell_at(Coordinate(row, 1))).startswith("nnUNetPlans"):
            files.update_cell_at(Coordinate(row, 2), "varies")
            files.update_cell_at(Coordinate(row, 3), "varies")


def test_snapshot_plan_modal(broken, tmp_path, snap_compare):
    app = _snap_app(broken, tmp_path)

    async def run_before(pilot):
        await _settle(pilot, app)
        await pilot.press("R")
        await _settle(pilot, app)

    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=run_before)


def test_snapshot_splits_view(broken, tmp_path, snap_compare):
    pre = broken / "nnUNet_preprocessed" / M
    cases = [f"heart_{i:03d}" for i in range(8)]
    (pre / "splits_final.json").write_text(json.dumps(
        [{"train": [c for c in cases if c not in v], "val": v}
         for v in (cases[0:3], cases[3:6], cases[6:8])]))
    app = _snap_app(broken, tmp_path)

    async def run_before(pilot):
        await _settle(pilot, app)
        await pilot.press("f")
        await _settle(pilot, app)

    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=run_before)
