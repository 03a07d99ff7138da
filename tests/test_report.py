"""`dataguard report` in a real headless Chromium (Debian's, driven by Playwright; nothing is
downloaded at test time): the trained fixture project with faults injected and a real
submission beside it, so every section exists."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import dataguard_cli, held_out, train_env

pytestmark = pytest.mark.nnunet
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-headless-shell",
                             shutil.which("chromium") or "", shutil.which("chromium-headless-shell") or "")
                 if p and Path(p).exists()), None)


@pytest.fixture(scope="module")
def report(trained_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "project"
    shutil.copytree(trained_models["root"], root, symlinks=True)
    env = train_env(root)
    cfg = root / "nnUNet_preprocessed/Dataset901_DemoCardiac/nnUNetPlans_2d"
    seg = cfg / "heart_002_seg.b2nd"
    seg.write_bytes(seg.read_bytes()[:-200])                      # DG203: a truncated frame
    (cfg / "._heart_001.b2nd").write_bytes(APPLEDOUBLE)           # DG101
    # a submission: fold 1's validation predictions against their raw images
    ts = root / "imagesTs"
    ts.mkdir()
    val = trained_models["trainer_dir"] / "fold_1" / "validation"
    for p in val.glob("*.nii.gz"):      # not the training images themselves: submit refuses those (DG310)
        held_out(root / "nnUNet_raw/Dataset901_DemoCardiac/imagesTr" / p.name.replace(".nii.gz", "_0000.nii.gz"), ts)
    sub = dataguard_cli(["submit", str(val), "--images", str(ts), "-d", "901", "-o", str(root / "sub.zip")], env, root)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    out = dataguard_cli(["report", "-d", "901", "-o", str(root / "report.html")], env, root)
    assert out.returncode == 0, out.stdout + out.stderr
    return root / "report.html", out


def test_report_is_one_self_contained_file(report):
    html = report[0].read_text("utf-8")
    for needle in ('src="http', "href=\"http", "<link ", "@import", "url(http"):
        assert needle not in html
    assert html.count("data:image/png;base64,") >= 5
    said = " ".join(report[1].stderr.split())
    assert ("summary, findings, cases, consistency, round trip, suspect labels, folds, training, "
            "cross-validation, submissions, environment") in said


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (Debian package chromium); .ci/run installs it")
def test_report_in_a_real_browser(report, tmp_path):
    from playwright.sync_api import sync_playwright

    path = report[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert errors == []
        assert [u for u in requests if not u.startswith("data:")] == [path.as_uri()]   # nothing leaves the file
        for section in ("summary", "findings", "cases", "folds", "training", "cv", "submissions"):
            assert page.locator(f"section#{section}").count() == 1, section
        text = page.inner_text("body")
        for code in ("DG101", "DG203"):
            assert code in text
        assert "errors block training" in text and "re-verifies" in text and "n/a" in text
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert widths and all(w > 0 for w in widths)
        # the findings table filters and sorts in the page
        page.fill("#filter", "DG203")
        visible = page.evaluate("Array.from(document.querySelectorAll('#findings-table tbody tr'))"
                                ".filter(r => r.style.display !== 'none').length")
        assert visible == 1
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 20000


def test_report_counts_test_images_apart_and_draws_them(real_project, tmp_path):
    """Issue 29 item 13: 13 cases (10 training + 3 test) were one number, and a test image had
    "no picture (unreadable)": the picture code looked for it in imagesTr only. A test image
    that cannot be read says why."""
    import re

    raw = real_project / "nnUNet_raw" / "Dataset901_DemoCardiac"
    (raw / "imagesTs").mkdir()
    for i in range(3):
        shutil.copy(raw / "imagesTr" / f"heart_00{i}_0000.nii.gz", raw / "imagesTs" / f"test_00{i}_0000.nii.gz")
    broken = raw / "imagesTs" / "test_002_0000.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    env = train_env(real_project)
    env["DATAGUARD_STATE_DIR"] = str(tmp_path / "state")
    out = dataguard_cli(["report", str(real_project), "-o", str(tmp_path / "r.html"), "--cases", "0"], env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    html = (tmp_path / "r.html").read_text("utf-8")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "16 training cases and 3 test images in 2 datasets" in text
    assert "training cases test images" in text
    cards = {re.search(r'class="name">\s*(\S+)', c).group(1): c.split("</section>")[0]
             for c in html.split('<div class="card">')[1:]}
    for case in ("test_000", "test_001"):
        assert '<img src="data:image/png;base64,' in cards[case], case
        assert "test image (imagesTs, no label)" in cards[case]
    assert "<img" not in cards["test_002"]
    assert "no picture: cannot read test image test_002_0000.nii.gz" in cards["test_002"]
    assert "(unreadable)" not in html
