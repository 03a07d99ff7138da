"""The TUI's label audit (`a`): the ranked suspects of a raw dataset, and a suspect's slice with
its label outlined, at 80x24, on the demo dataset with one case's labels shifted."""
from __future__ import annotations

import pytest

import dataguard

SHIFTED = "heart_005"


@pytest.fixture
def shifted(tmp_path):
    import nibabel as nib
    import numpy as np

    from dataguard.demo.synthetic import write_raw_dataset

    raw = write_raw_dataset(tmp_path / "nnUNet_raw", 901, "DemoCardiac", n_cases=12)
    p = raw / "labelsTr" / f"{SHIFTED}.nii.gz"
    n = nib.load(str(p))
    lab = np.asarray(n.dataobj)
    nib.save(nib.Nifti1Image(np.roll(lab, 8, axis=0), n.affine, n.header), str(p))    # 10 mm off
    return raw


def _app(raw, tmp_path):
    from dataguard.tui.app import DataguardApp

    ws = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m", jobs=1)
    return DataguardApp(ws, show_times=False)


async def _settle(pilot, app):
    await pilot.pause(0.4)            # the app starts its scan 0.3 s after the first paint
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause(0.05)
        for screen in app.screen_stack:
            await screen.workers.wait_for_complete()
        await pilot.pause(0.05)


async def test_a_lists_the_suspects_and_enter_shows_the_slice_at_80x24(shifted, tmp_path):
    from textual.widgets import DataTable

    from dataguard.tui.audit import AuditScreen, SuspectScreen

    app = _app(shifted, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        await pilot.press("a")
        await _settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        table = screen.query_one("#suspects", DataTable)
        assert table.row_count >= 3
        first = [str(c) for c in table.get_row_at(0)]
        assert first[1] == SHIFTED and float(first[3]) >= 4
        assert screen.suspects[0].case == SHIFTED and screen.suspects[0].slice is not None
        why = str(screen.query_one("#why").render())
        assert SHIFTED in why and screen.suspects[0].reasons[0][:30] in why
        assert "audit from the data alone" in str(screen.query_one("#title").render())
        # every column on screen at 80 columns: the reason is cut, never the score
        region = table.region
        assert region.width <= 80 and table.virtual_size.width <= 80
        await pilot.press("enter")
        await _settle(pilot, app)
        view = app.screen
        assert isinstance(view, SuspectScreen) and view.s.case == SHIFTED
        picture = view.query_one("#picture").render()
        assert "▀" in str(picture) and len(str(picture).splitlines()) >= 5
        title = str(view.query_one("#slice-title").render())
        assert f"slice {view.s.slice + 1}/12" in title and "(the audit's)" in title
        assert view.query_one("#picture-box").region.right <= 80
        await pilot.press("right_square_bracket")
        await _settle(pilot, app)
        assert f"slice {view.s.slice + 2}/12" in str(view.query_one("#slice-title").render())
        await pilot.press("escape")
        assert isinstance(app.screen, AuditScreen)
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]


async def test_a_without_a_raw_dataset_says_so(tiny_pre, tmp_path):
    from dataguard.tui.app import DataguardApp

    app = DataguardApp(dataguard.Workspace([str(tiny_pre)], manifest_dir=tmp_path / "m", jobs=1), show_times=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        await pilot.press("a")
        await pilot.pause(0.1)
        assert app.screen is app.screen_stack[0]
        assert any("no raw dataset" in str(n.message) for n in app._notifications)
