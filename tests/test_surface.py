"""Surface metrics (evaluate/surface.py) against two reference implementations on the same masks:
MONAI (`compute_hausdorff_distance`, `compute_average_surface_distance(symmetric=True)`,
`compute_surface_dice`) and MedPy (`hd`, and its directed surface distances). Stated tolerance:
1e-4 mm and 1e-5 of NSD against MONAI (it computes in float32); 0 against MedPy's distances
(the same float64 EDT). Edge cases: masks touching the array's border, anisotropic voxels, 2D,
single voxels, and the three empty-mask cases (MetricsReloaded's conventions), each explicit.
End to end: `dataguard evaluate --metric surface` on the session's trained models equals MONAI
on the same files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataguard.evaluate.surface import directed_distances, surface_metrics

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")
medpy_binary = pytest.importorskip("medpy.metric.binary")


def blob(shape, seed, level=0.5):
    from scipy import ndimage

    r = np.random.default_rng(seed)
    return ndimage.gaussian_filter(r.random(shape), 2.5) > level + 0.004 * r.standard_normal()


def onehot(m):
    t = torch.from_numpy(m.astype(np.float32))[None, None]
    return torch.cat([1 - t, t], 1)


def monai(ref, pred, spacing, tol):
    sp = [float(s) for s in spacing]
    y, yp = onehot(ref), onehot(pred)
    return {"hd": monai_metrics.compute_hausdorff_distance(yp, y, spacing=sp).item(),
            "hd95": monai_metrics.compute_hausdorff_distance(yp, y, percentile=95, spacing=sp).item(),
            "assd": monai_metrics.compute_average_surface_distance(yp, y, symmetric=True, spacing=sp).item(),
            "nsd": monai_metrics.compute_surface_dice(yp, y, class_thresholds=[tol], spacing=sp).item()}


def medpy_directed(a, b, spacing):
    """MedPy's distances from a's surface to b's (its private helper, what hd and hd95 use)."""
    return getattr(medpy_binary, "__surface_distances")(a, b, spacing, 1)


CASES = [((24, 40, 48), (2.5, 0.7, 0.9)), ((16, 32, 32), (3.0, 1.2, 1.2)), ((48, 40), (1.0, 0.5)),
         ((20, 20, 20), (1.0, 1.0, 1.0))]


@pytest.mark.parametrize("shape, spacing", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_monai_and_medpy_on_random_shapes(shape, spacing, seed):
    ref, pred = blob(shape, seed), blob(shape, seed + 100)
    assert ref.any() and pred.any()
    mine = surface_metrics(ref, pred, spacing, tolerance=1.5)
    want = monai(ref, pred, spacing, 1.5)
    assert mine.status == "scored"
    for k in ("hd", "hd95", "assd"):
        assert getattr(mine, k) == pytest.approx(want[k], abs=1e-4), k
    assert mine.nsd == pytest.approx(want["nsd"], abs=1e-5)
    d_pr, d_rp = directed_distances(ref, pred, spacing)
    assert np.array_equal(np.sort(d_pr), np.sort(medpy_directed(pred, ref, spacing)))
    assert np.array_equal(np.sort(d_rp), np.sort(medpy_directed(ref, pred, spacing)))
    assert mine.hd == medpy_binary.hd(pred, ref, voxelspacing=spacing)


def test_known_answers_on_boxes():
    """Two boxes offset along the 2.5 mm axis by 2 voxels: every distance is a multiple of the
    spacing, so HD = 5 mm; NSD at 4.9 mm counts only the faces that moved less."""
    ref = np.zeros((20, 20, 20), bool)
    ref[5:10, 5:15, 5:15] = True
    pred = np.roll(ref, 2, axis=0)
    m = surface_metrics(ref, pred, (2.5, 1.0, 1.0), tolerance=5.0)
    assert m.hd == pytest.approx(5.0) and m.hd95 == pytest.approx(5.0)
    assert m.nsd == pytest.approx(1.0)
    assert surface_metrics(ref, ref, (2.5, 1.0, 1.0)).to_dict() == {
        "hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0, "status": "scored", "tolerance": 2.0}


def test_masks_on_the_array_border_and_single_voxels():
    ref = np.zeros((10, 12, 14), bool)
    ref[0:4, 0:5, :] = True                                   # touches three faces of the array
    pred = np.zeros_like(ref)
    pred[0:3, 0:6, 2:14] = True
    for a, b in ((ref, pred), (ref[:1, :1, :1].repeat(3, 0), np.ones((3, 1, 1), bool))):
        mine = surface_metrics(a, b, (2.0, 1.0, 0.5), 1.0)
        want = monai(a, b, (2.0, 1.0, 0.5), 1.0)
        for k in ("hd", "hd95", "assd", "nsd"):
            assert getattr(mine, k) == pytest.approx(want[k], abs=1e-4), k
    one = np.zeros((5, 5, 5), bool)
    one[2, 2, 2] = True
    other = np.zeros_like(one)
    other[2, 2, 4] = True
    assert surface_metrics(one, other, (1.0, 1.0, 3.0)).hd == pytest.approx(6.0)


def test_empty_masks_follow_metricsreloaded_and_never_crash():
    """The empty-mask table: both empty is perfect agreement; one empty has no distance (None,
    never a silent 0 or inf) and NSD 0. MONAI gives nan/inf there, MedPy raises."""
    empty = np.zeros((6, 6, 6), bool)
    full = empty.copy()
    full[1:4, 1:4, 1:4] = True
    both = surface_metrics(empty, empty, (1, 1, 1))
    assert (both.status, both.hd, both.hd95, both.assd, both.nsd) == ("both empty", 0.0, 0.0, 0.0, 1.0)
    ref_empty = surface_metrics(empty, full, (1, 1, 1))
    assert (ref_empty.status, ref_empty.hd, ref_empty.assd, ref_empty.nsd) == ("reference empty", None, None, 0.0)
    pred_empty = surface_metrics(full, empty, (1, 1, 1))
    assert (pred_empty.status, pred_empty.hd95, pred_empty.nsd) == ("prediction empty", None, 0.0)
    with pytest.raises(RuntimeError):
        medpy_binary.hd(empty, full)
    assert not np.isfinite(monai(full, empty, (1, 1, 1), 1.0)["hd"])
    with pytest.raises(ValueError):
        surface_metrics(full, full[:5], (1, 1, 1))
    with pytest.raises(ValueError):
        surface_metrics(full, full, (1, 1))


def test_a_small_pair_in_a_large_volume_is_computed_on_its_box():
    """Only the box around both masks is transformed: a pair in a 512 x 512 x 300 volume costs
    what the pair costs (the whole-volume EDT takes seconds and ~1 GB)."""
    import time

    ref = np.zeros((300, 512, 512), bool)
    ref[100:110, 200:230, 200:230] = True
    pred = np.roll(ref, 1, axis=2)
    t0 = time.perf_counter()
    m = surface_metrics(ref, pred, (2.5, 0.8, 0.8))
    assert time.perf_counter() - t0 < 1.0
    assert m.hd == pytest.approx(0.8)


@pytest.mark.nnunet
def test_evaluate_surface_metrics_on_trained_models_equal_monai(trained_models):
    from conftest import dataguard_cli
    from dataguard.evaluate.crossval import read_labels

    out = dataguard_cli(["evaluate", "-d", "901", "--model", "2d", "--metric", "surface", "--tolerance", "2",
                         "--tolerance", "myocardium=1", "--format", "json"], trained_models["env"], trained_models["root"])
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["surface_metrics"]["metrics"] == ["hd", "hd95", "assd", "nsd"]
    assert doc["surface_metrics"]["tolerance_mm"]["myocardium"] == 1.0
    gt = trained_models["root"] / "nnUNet_preprocessed" / "Dataset901_DemoCardiac" / "gt_segmentations"
    values = {"myocardium": 1, "left_ventricle": 2, "right_ventricle": 3}
    checked = 0
    for c in doc["cases"]:
        ref, sp = read_labels(gt / f"{c['case']}.nii.gz", with_spacing=True)
        pred = read_labels(trained_models["trainer_dirs"]["2d"] / f"fold_{c['fold']}" / "validation"
                           / f"{c['case']}.nii.gz")
        a, b = ref == values[c["label"]], pred == values[c["label"]]
        s = c["surface"]
        if not a.any() or not b.any():
            assert s["status"] != "scored" and s["hd"] is None or s["status"] == "both empty"
            continue
        want = monai(a, b, sp, s["tolerance"])
        for k in ("hd", "hd95", "assd", "nsd"):
            assert s[k] == pytest.approx(want[k], abs=1e-4), (c["case"], c["label"], k)
        checked += 1
    assert checked >= 4
    mean = doc["models"][0]["labels"]["left_ventricle"]
    assert {"mean_hd95", "mean_nsd", "missed"} <= set(mean)
    table = dataguard_cli(["evaluate", "-d", "901", "--model", "2d", "--metric", "hd95", "--metric", "nsd",
                           "--worst", "1"], dict(trained_models["env"], COLUMNS="80"), trained_models["root"])
    assert table.returncode == 0 and "HD95 mm" in table.stdout and "missed" in table.stdout
    wide = [line for line in table.stdout.splitlines() if len(line) > 80
            and not line.startswith("open them in the TUI")]         # a command kept whole to copy
    assert not wide, table.stdout
    bad = dataguard_cli(["evaluate", "-d", "901", "--metric", "nsd", "--tolerance", "myocardum=1"],
                        trained_models["env"], trained_models["root"])
    assert bad.returncode == 2 and "did you mean 'myocardium'" in bad.stderr


@pytest.mark.nnunet
def test_report_shows_surface_metrics_when_asked(trained_models, tmp_path):
    from conftest import dataguard_cli

    out = tmp_path / "r.html"
    res = dataguard_cli(["report", "-d", "901", "-o", str(out), "--surface", "1.5", "--no-images"],
                        trained_models["env"], trained_models["root"])
    assert res.returncode == 0, res.stdout + res.stderr
    html = out.read_text()
    assert "Surface metrics, all folds" in html and "NSD at 1.5 mm" in html and "HD95 mm" in html
    plain = dataguard_cli(["report", "-d", "901", "-o", str(tmp_path / "p.html"), "--no-images"],
                          trained_models["env"], trained_models["root"])
    assert plain.returncode == 0 and "Surface metrics" not in (tmp_path / "p.html").read_text()
