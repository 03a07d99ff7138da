"""The train gate shows the warnings a run should hear before it starts (DG313, DG314, DG405
for this configuration) instead of counting them among the "other findings"."""
from __future__ import annotations

from dataguard.findings import finding
from dataguard.train.preflight import GATE_WARNINGS, concerns_configuration


def test_a_round_trip_warning_concerns_its_configuration_only():
    lowres = finding("DG405", "preprocessed/nnUNetPlans.json", "label 'vessel' in configuration 3d_lowres "
                     "(spacing 2.4 x 2.4 x 2.4): round-trip Dice 0.41")
    assert concerns_configuration(lowres, "3d_lowres")
    assert not concerns_configuration(lowres, "3d_fullres")
    assert not concerns_configuration(lowres, "2d")


def test_other_gate_warnings_concern_every_configuration():
    mirror = finding("DG314", "raw/dataset.json", "kidney_left and kidney_right are mirror images along axis 0")
    assert concerns_configuration(mirror, "2d") and concerns_configuration(mirror, "3d_fullres")
    assert set(GATE_WARNINGS) == {"DG313", "DG314", "DG405"}


# --- the gate on real data, through the CLI ------------------------------------------------------
import json  # noqa: E402

import pytest  # noqa: E402

DS = "Dataset901_DemoCardiac"


def _gate(root, *args):
    from conftest import dataguard_cli, train_env

    out = dataguard_cli(["train", "901", *args, "--device", "cpu", "--dry-run"], train_env(root), root)
    return out.returncode, " ".join(out.stdout.split()), out


@pytest.mark.nnunet
def test_gate_refuses_a_cascade_without_the_previous_stage_predictions(real_project):
    """DG507 (issue 30 item 4) from the gate's own check: the cascade's run is refused with the
    command that makes the 3d_lowres predictions; 2d is not concerned."""
    from test_fold_prerequisites import _with_cascade

    _with_cascade(real_project)
    code, text, out = _gate(real_project, "3d_cascade_fullres", "1")
    assert code == 1, out.stdout + out.stderr
    assert "refused DG507 error: configuration 3d_cascade_fullres needs the predictions" in text
    assert "dataguard train 901 3d_lowres 0-4" in text
    code, text, out = _gate(real_project, "2d", "1")
    assert code == 0 and "DG507" not in text, out.stdout + out.stderr


@pytest.mark.nnunet
def test_gate_warns_of_a_channel_name_nnunet_normalizes_per_image(real_project):
    """DG313 (issue 30 item 2) is shown by the gate with its fix, and does not refuse."""
    for part in ("nnUNet_raw", "nnUNet_preprocessed"):
        p = real_project / part / DS / "dataset.json"
        meta = json.loads(p.read_text())
        meta["channel_names"] = {"0": "cardiac CT"}
        p.write_text(json.dumps(meta, indent=1))
    code, text, out = _gate(real_project, "2d", "1", "--allow", "DG209")     # dataset.json edited after preprocessing
    assert code == 0, out.stdout + out.stderr
    assert "warning DG313:" in text and "z-score" in text and "fix:" in text
