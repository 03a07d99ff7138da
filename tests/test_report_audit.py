"""The report's "suspect labels" section: the label audit from the data alone, each suspect on
its slice with the label's outline, on the demo dataset with one case's labels shifted."""
from __future__ import annotations

import os
import re

import pytest

import dataguard
from conftest import dataguard_cli

SHIFTED = "heart_005"


def _demo(tmp_path, shift: bool):
    import nibabel as nib
    import numpy as np

    from dataguard.demo.synthetic import write_raw_dataset

    raw = write_raw_dataset(tmp_path / "nnUNet_raw", 901, "DemoCardiac", n_cases=12)
    if shift:
        p = raw / "labelsTr" / f"{SHIFTED}.nii.gz"
        n = nib.load(str(p))
        nib.save(nib.Nifti1Image(np.roll(np.asarray(n.dataobj), 8, axis=0), n.affine, n.header), str(p))
    return raw


def _section(html: str) -> str:
    m = re.search(r'<section id="suspects">(.*?)</section>', html, re.S)
    assert m, "no suspect labels section"
    return m.group(1)


def test_report_names_the_shifted_case_first_with_its_slice(tmp_path):
    raw = _demo(tmp_path, shift=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(nnUNet_raw=str(raw.parent), DATAGUARD_STATE_DIR=str(tmp_path / "state"))
    out = dataguard_cli(["report", "-d", "901", "-o", str(tmp_path / "r.html")], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    said = out.stderr.splitlines()
    steps = [line for line in said if line.startswith("report: ") and line.endswith(" ...")]
    assert steps.index("report: suspect labels ...") == steps.index("report: round trip ...") + 1
    html = (tmp_path / "r.html").read_text("utf-8")
    assert '<a href="#suspects">Suspect labels</a>' in html
    sec = _section(html)
    assert "Source: the data alone" in sec
    rows = sec.split("<tr>")[2:]                                     # after the header row
    assert rows and len(rows) <= 8
    assert all(SHIFTED in r for r in rows[:3])                       # its three labels lead
    first = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", rows[0]))
    assert re.search(rf"{SHIFTED} slice \d+ \(z\)", first) and re.search(r"\b\d+\.\d\b", first)
    assert '<img src="data:image/png;base64,' in rows[0]
    scores = [float(x) for x in re.findall(r'<td class="cell">(\d+\.\d)</td>', sec)]
    assert scores == sorted(scores, reverse=True) and scores[-1] >= 4       # DG406's, ranked


def test_a_clean_dataset_says_nothing_stands_out_and_how_much_was_compared(tmp_path):
    from dataguard.report.collect import collect
    from dataguard.report.render import render_html

    raw = _demo(tmp_path, shift=False)
    ws = dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m", jobs=1)
    steps = []
    rep = collect(ws, images=False, on_step=steps.append)
    assert steps.index("suspect labels") == steps.index("round trip") + 1
    assert rep.suspects and rep.suspects[0]["rows"] == []
    assert "suspect labels" in rep.sections()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", _section(render_html(rep, 6))))
    n = rep.suspects[0]["compared"]
    assert n >= 24
    assert f"No annotation stands out from the others: {n} (case, label) pairs of 12 cases compared" in text


@pytest.mark.parametrize("images", [True, False])
def test_pictures_off_still_lists_the_suspects(tmp_path, images):
    from dataguard.report.collect import collect

    raw = _demo(tmp_path, shift=True)
    rep = collect(dataguard.Workspace([str(raw)], manifest_dir=tmp_path / "m", jobs=1), images=images)
    rows = rep.suspects[0]["rows"]
    assert rows[0]["case"] == SHIFTED and rows[0]["slice"] is not None
    assert (rows[0]["picture"] or "").startswith("data:image/png;base64,") == images
    assert rep.sections() == ["summary", "findings", "cases", "consistency", "suspect labels", "environment"]
