"""Conversion mistakes diagnosed as one finding each (issue 20, part 3): DG311 for an nnU-Net v1
dataset.json, DG312 for region and ignore-label definitions, and a root finding with a `help`
line for each hand-conversion mistake (a label named like a channel, `case.0000.nii.gz`, a
`file_ending` unlike the files, a `__MACOSX/` folder, numTraining counting stray files), the
cascade behind it folded into it (`dataguard/checks/cascades.py`).

Real NIfTI files, real folders; each diagnosis is tested with the mistake and without it, and
where the help line is a command, the test runs it and scans again.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_tiny_pre

import dataguard
from dataguard.checks.cascades import explained_count, fold
from dataguard.demo.synthetic import write_raw_dataset
from dataguard.findings import Finding, Fix, Severity, finding

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)
V1_JSON = {"name": "Tiny", "description": "hand-converted", "tensorImageSize": "3D", "modality": {"0": "MRI"},
           "labels": {"0": "background", "1": "myocardium", "2": "left_ventricle", "3": "right_ventricle",
                      "4": "scar"},
           "numTraining": 5, "numTest": 0, "test": [],
           "training": [{"image": f"./imagesTr/heart_{i:03d}.nii.gz", "label": f"./labelsTr/heart_{i:03d}.nii.gz"}
                        for i in range(5)]}


@pytest.fixture
def project(tmp_path) -> Path:
    """nnUNet_raw/Dataset777_Tiny (5 real NIfTI cases, labels 0-3, heart_003 without label 3) and
    its preprocessed twin (legacy .npz) with a splits_final.json naming all 5 cases."""
    raw = write_raw_dataset(tmp_path / "nnUNet_raw", 777, "Tiny", n_cases=5, shape=(16, 16, 4))
    cases = {f"heart_{i:03d}": (1, 2, 3) for i in range(5)}
    pre = make_tiny_pre(tmp_path, "Dataset777_Tiny", cases, channel="MRI")
    (pre / "splits_final.json").write_text(json.dumps(
        [{"train": [c for c in sorted(cases) if c != v], "val": [v]} for v in sorted(cases)]))
    return raw


def scan(raw: Path, tmp_path: Path, manifest: str = "m", **kw):
    """Scan the whole project (raw + preprocessed) and return its findings."""
    return dataguard.scan([str(raw.parent.parent)], manifest_dir=tmp_path / manifest, full=True, **kw).findings


def rescan(raw: Path, tmp_path: Path):
    """A scan after the fix with a fresh manifest: the first one would see the raw files as changed
    since the (broken) state it recorded, which is DG209's business, not this mistake's."""
    return scan(raw, tmp_path, manifest="m-after")


def about(findings, *, not_codes=("DG504",)):
    """The findings a mistake may change: DG504 (label shares per fold) is the dataset's own."""
    return [f for f in findings if f.code not in not_codes]


def edit_json(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def run_help(raw: Path, help_line: str) -> None:
    """Run the `mv A B` a help line names, inside the raw dataset folder."""
    argv = help_line.split()
    assert argv[0] == "mv" and len(argv) == 3, help_line
    subprocess.run(argv, cwd=raw, check=True)


def test_the_healthy_project_has_only_its_own_dg504(project, tmp_path):
    fs = scan(project, tmp_path)
    assert [f.code for f in fs] == ["DG504"], [f.to_dict() for f in fs]
    assert all(f.help is None for f in fs)


# DG311: an nnU-Net v1 dataset.json -------------------------------------------------------------
def test_dg311_a_v1_dataset_json_is_one_finding_with_the_converter(project, tmp_path):
    (project / "dataset.json").write_text(json.dumps(V1_JSON))
    fs = about(scan(project, tmp_path))
    assert [(f.code, f.path, f.severity) for f in fs] == [("DG311", "raw/dataset.json", Severity.ERROR)]
    f = fs[0]
    assert f.help.startswith("run nnUNetv2_convert_old_nnUNet_dataset INPUT_FOLDER OUTPUT_DATASET_NAME")
    # behind it: 'channel_names' missing, 'file_ending' missing (DG301), label 'scar' unused (DG404)
    assert explained_count(f) == 3 and f.message.endswith("(explains 3 other findings)")


def test_dg311_not_for_a_v2_dataset_json(project, tmp_path):
    edit_json(project / "dataset.json", labels={"background": 0, "myocardium": 1, "left_ventricle": 2,
                                                "right_ventricle": 3, "scar": 4})
    fs = about(scan(project, tmp_path))
    assert [f.code for f in fs] == ["DG404"]          # the unused label is reported, as before


# the channel-suffix label ----------------------------------------------------------------------
def test_a_label_named_like_a_channel_is_one_finding_with_the_mv(project, tmp_path):
    (project / "labelsTr" / "heart_001.nii.gz").rename(project / "labelsTr" / "heart_001_0000.nii.gz")
    fs = about(scan(project, tmp_path))
    assert [(f.code, f.path, f.case) for f in fs] == [
        ("DG303", "raw/labelsTr/heart_001_0000.nii.gz", "heart_001")]
    f = fs[0]
    assert f.help == "mv labelsTr/heart_001_0000.nii.gz labelsTr/heart_001.nii.gz"
    # "training case has no label" (DG303) and the split naming a missing case (DG503)
    assert explained_count(f) == 2
    run_help(project, f.help)
    assert [g.code for g in rescan(project, tmp_path)] == ["DG504"]


def test_a_case_whose_id_ends_in_four_digits_is_not_a_channel_suffix(project, tmp_path):
    img = nib.load(project / "imagesTr" / "heart_001_0000.nii.gz")
    data = np.asarray(img.dataobj) + 1.0         # other voxels: not a duplicate image (DG310)
    nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine), project / "imagesTr" / "scan_0007_0000.nii.gz")
    shutil.copy(project / "labelsTr" / "heart_001.nii.gz", project / "labelsTr" / "scan_0007.nii.gz")
    edit_json(project / "dataset.json", numTraining=6)
    assert about(scan(project, tmp_path), not_codes=("DG504", "DG207", "DG503")) == []


def test_a_label_without_any_image_keeps_its_own_words(project, tmp_path):
    shutil.copy(project / "labelsTr" / "heart_001.nii.gz", project / "labelsTr" / "other_0000.nii.gz")
    fs = about(scan(project, tmp_path))
    assert [(f.code, f.message.split(":")[0], f.help) for f in fs] == [("DG303", "label has no image", None)]


# case.0000.nii.gz: a dot for the underscore (nnU-Net #2187) -------------------------------------
def test_a_dot_before_the_channel_number_is_one_finding_with_the_mv(project, tmp_path):
    (project / "imagesTr" / "heart_001_0000.nii.gz").rename(project / "imagesTr" / "heart_001.0000.nii.gz")
    fs = about(scan(project, tmp_path))
    assert [(f.code, f.path, f.case) for f in fs] == [("DG303", "raw/imagesTr/heart_001.0000.nii.gz", "heart_001")]
    f = fs[0]
    assert f.help == "mv imagesTr/heart_001.0000.nii.gz imagesTr/heart_001_0000.nii.gz"
    # "label has no image" (DG303), the split's missing case (DG503), numTraining 5 for 4 cases (DG305)
    assert explained_count(f) == 3
    run_help(project, f.help)
    assert [g.code for g in rescan(project, tmp_path)] == ["DG504"]


def test_a_name_without_channel_keeps_its_own_words(project, tmp_path):
    (project / "imagesTr" / "heart_001_0000.nii.gz").rename(project / "imagesTr" / "heart_001.nii.gz")
    fs = [f for f in scan(project, tmp_path) if f.path == "raw/imagesTr/heart_001.nii.gz"]
    assert [(f.code, f.help) for f in fs] == [("DG303", None)]
    assert fs[0].message.startswith("image name must be {case}_{XXXX}.nii.gz")


# file_ending unlike the files ----------------------------------------------------------------------
@pytest.mark.parametrize("declared, actual", [(".nii", ".nii.gz"), (".nii.gz", ".nii")])
def test_a_file_ending_unlike_every_file_is_one_finding(project, tmp_path, declared, actual):
    if actual == ".nii":
        for p in sorted(project.glob("*Tr/*.nii.gz")):
            nib.save(nib.load(p), str(p)[: -len(".gz")])
            p.unlink()
    edit_json(project / "dataset.json", file_ending=declared)
    fs = about(scan(project, tmp_path))
    assert [(f.code, f.path) for f in fs] == [("DG301", "raw/dataset.json")]
    f = fs[0]
    assert f.help == f'set "file_ending": "{actual}" in dataset.json' and f"end in '{actual}'" in f.message
    assert explained_count(f) == 11          # 10 files "unexpected" (DG104), 0 training cases (DG305)
    edit_json(project / "dataset.json", file_ending=actual)
    assert [g.code for g in rescan(project, tmp_path)] == ["DG504"]


def test_one_stray_file_with_another_ending_is_no_file_ending_mistake(project, tmp_path):
    (project / "imagesTr" / "notes.nii").write_bytes(b"not an image")
    fs = about(scan(project, tmp_path))
    assert [(f.code, f.path, f.help) for f in fs] == [("DG104", "raw/imagesTr/notes.nii", None)]


# __MACOSX/ ------------------------------------------------------------------------------------------
def _macosx(raw: Path) -> None:
    m = raw / "__MACOSX" / "imagesTr"
    m.mkdir(parents=True)
    for i in range(3):
        (m / f"._heart_{i:03d}_0000.nii.gz").write_bytes(APPLEDOUBLE)
    (raw / "__MACOSX" / "._imagesTr").write_bytes(APPLEDOUBLE)


def test_a_macosx_folder_is_one_dg102_for_the_folder(project, tmp_path):
    _macosx(project)
    fs = about(scan(project, tmp_path))
    assert [(f.code, f.path, f.fix) for f in fs] == [("DG102", "raw/__MACOSX", Fix.QUARANTINE)]
    f = fs[0]
    assert explained_count(f) == 4 and "repair" in f.help
    assert f.severity == Severity.ERROR       # what it explains (DG101) is an error: folding lowers nothing


def test_appledouble_files_outside_a_macosx_folder_stay_dg101(project, tmp_path):
    (project / "imagesTr" / "._heart_000_0000.nii.gz").write_bytes(APPLEDOUBLE)
    fs = about(scan(project, tmp_path), not_codes=("DG504", "DG305"))
    assert [(f.code, f.path) for f in fs] == [("DG101", "raw/imagesTr/._heart_000_0000.nii.gz")]


def test_select_dg101_still_shows_the_files_of_a_macosx_folder(project, tmp_path):
    _macosx(project)          # the folder's DG102 is not asked for: nothing to fold them into
    assert [f.code for f in scan(project, tmp_path, select=["DG101"])] == ["DG101"] * 4


def test_repair_quarantines_a_macosx_folder(project, tmp_path):
    _macosx(project)
    ws = dataguard.Workspace([str(project.parent.parent)], manifest_dir=tmp_path / "m", jobs=1)
    before = sorted(p.relative_to(project) for p in (project / "__MACOSX").rglob("._*"))
    run = ws.repair.run()
    assert not run.failed, run.failed
    assert before and not any((project / "__MACOSX").rglob("._*"))
    ws.restore()                                   # undone byte for byte, like any quarantine
    assert sorted(p.relative_to(project) for p in (project / "__MACOSX").rglob("._*")) == before


# numTraining that counted stray files --------------------------------------------------------------
def test_num_training_that_counts_the_stray_files_says_so(project, tmp_path):
    (project / "imagesTr" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (project / "imagesTr" / "notes.txt").write_text("x")
    edit_json(project / "dataset.json", numTraining=7)
    [f] = [f for f in scan(project, tmp_path) if f.code == "DG305"]
    assert "7 also counts the 2 stray files in imagesTr (.DS_Store, notes.txt)" in f.message
    assert f.help.startswith('set "numTraining": 5 in dataset.json')


def test_num_training_off_by_another_amount_keeps_its_own_words(project, tmp_path):
    (project / "imagesTr" / "notes.txt").write_text("x")
    edit_json(project / "dataset.json", numTraining=8)
    [f] = [f for f in scan(project, tmp_path) if f.code == "DG305"]
    assert f.message == "numTraining is 8 but the dataset holds 5 training cases" and f.help is None


# DG312: regions and the ignore label -----------------------------------------------------------
@pytest.mark.parametrize("labels, extra, needle, help_part", [
    ({"background": 0, "myocardium": 1, "left_ventricle": 2, "right_ventricle": 3, "ignore": 1}, {},
     "ignore label must be the highest value (4)", '"ignore": 4'),
    ({"background": 0, "heart": [1, 2, 3], "lv": 2, "rv": 3}, {}, "'regions_class_order' is missing",
     '"regions_class_order"'),
    ({"background": 0, "heart": [1, 2, 3], "lv": 2, "rv": 3}, {"regions_class_order": [1, 2]},
     "has 2 entries for 3 regions", '"regions_class_order"'),
])
def test_dg312_region_and_ignore_definitions(project, tmp_path, labels, extra, needle, help_part):
    edit_json(project / "dataset.json", labels=labels, **extra)
    fs = about(scan(project, tmp_path))
    assert [f.code for f in fs] == ["DG312"] and needle in fs[0].message and help_part in fs[0].help


def test_dg312_not_for_valid_regions_and_ignore_label(project, tmp_path):
    edit_json(project / "dataset.json", labels={"background": 0, "heart": [1, 2, 3], "cavities": [2, 3], "rv": 3,
                                                "ignore": 4}, regions_class_order=[1, 2, 3])
    assert [f.code for f in scan(project, tmp_path) if f.code in ("DG301", "DG312")] == []


def test_labels_not_consecutive_stay_dg301(project, tmp_path):
    edit_json(project / "dataset.json", labels={"background": 0, "myocardium": 1, "left_ventricle": 2,
                                                "right_ventricle": 5})
    assert [f.code for f in scan(project, tmp_path) if f.code in ("DG301", "DG312")] == ["DG301"]


# fold: the pure function -----------------------------------------------------------------------------
def _f(code, path, message, case=None, severity=None):
    return finding(code, path, message, case=case, severity=severity)


def test_fold_leaves_a_list_without_roots_as_it_is():
    fs = [_f("DG303", "raw/imagesTr/a", "training case has no label in labelsTr", case="a"),
          _f("DG503", "preprocessed/splits_final.json", "case 'a' (fold 0 val) does not exist", case="a")]
    assert fold(fs) == fs


def test_fold_keeps_what_another_case_or_code_shows_and_is_idempotent():
    from dataguard.checks.cascades import label_with_channel_suffix

    root = label_with_channel_suffix("raw/labelsTr/a_0000.nii.gz", "a", ".nii.gz")
    mine = _f("DG503", "preprocessed/splits_final.json", "case 'a' does not exist", case="a")
    other = _f("DG503", "preprocessed/splits_final.json", "case 'b' does not exist", case="b")
    own = _f("DG303", "raw/imagesTr/a", "missing channel file(s) a_0001.nii.gz", case="a")
    once = fold([other, root, mine, own])
    assert [f.case for f in once] == ["b", "a", "a"] and once[2] == own
    assert explained_count(once[1]) == 1 and fold(once) == once


def test_a_root_takes_the_highest_severity_of_what_it_explains():
    from dataguard.checks.cascades import macosx_folder

    root = macosx_folder("raw/__MACOSX", 1)
    assert root.severity == Severity.WARNING
    inner = _f("DG101", "raw/__MACOSX/._x", "AppleDouble")
    [folded] = fold([root, inner])
    assert folded.severity == Severity.ERROR and explained_count(folded) == 1


# the help line in every face -----------------------------------------------------------------------
def _suffix_mistake(project: Path) -> None:
    (project / "labelsTr" / "heart_001.nii.gz").rename(project / "labelsTr" / "heart_001_0000.nii.gz")


def test_help_in_the_table_json_and_csv(project, tmp_path):
    from rich.console import Console

    from dataguard.cli.render import render_csv, render_json, render_table

    _suffix_mistake(project)
    res = dataguard.scan([str(project.parent.parent)], manifest_dir=tmp_path / "m")
    for width in (80, 160):
        buf = io.StringIO()
        render_table(res, Console(file=buf, width=width, no_color=True))
        lines = buf.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        assert any("help: mv" in line for line in lines), buf.getvalue()
        assert "labelsTr/heart_001.nii.gz" in buf.getvalue()
    out = io.StringIO()
    render_json(res, out)
    helps = [f["help"] for f in json.loads(out.getvalue())["findings"]]
    assert "mv labelsTr/heart_001_0000.nii.gz labelsTr/heart_001.nii.gz" in helps and None in helps
    out = io.StringIO()
    render_csv(res, out)
    assert ",mv labelsTr/heart_001_0000.nii.gz labelsTr/heart_001.nii.gz" in out.getvalue()


def test_help_in_the_tui_case_view():
    from dataguard.tui.screens import CaseScreen

    f = Finding("raw/labelsTr/a_0000.nii.gz", "DG303", Severity.ERROR, "label is named with a channel suffix",
                case="a", help="mv labelsTr/a_0000.nii.gz labelsTr/a.nii.gz")
    text = CaseScreen.findings_text(None, [f], [], None).plain
    assert "  help: mv labelsTr/a_0000.nii.gz labelsTr/a.nii.gz\n" in text
    assert "help:" not in CaseScreen.findings_text(None, [Finding("p", "DG303", Severity.ERROR, "m")], [], None).plain


def test_help_in_the_report(project, tmp_path):
    from dataguard.report.collect import collect
    from dataguard.report.render import render_html

    _suffix_mistake(project)
    ws = dataguard.Workspace([str(project.parent.parent)], manifest_dir=tmp_path / "m", jobs=1)
    html = render_html(collect(ws, images=False), 0)
    assert '<div class="muted mono help">help: mv labelsTr/heart_001_0000.nii.gz labelsTr/heart_001.nii.gz</div>' in html
    table = html[html.index('<section id="findings">'):]
    table = table[: table.index("</section>")]
    assert "help: None" not in table and table.count('class="muted mono help"') == sum(
        1 for f in ws.scan().findings if f.help)
