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
