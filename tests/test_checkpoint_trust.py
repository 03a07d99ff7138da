"""Checkpoints from elsewhere: nothing in them runs, and a torch with known `weights_only`
flaws (CVE-2025-32434 before 2.6.0, CVE-2026-24747 before 2.10.0) loads only checkpoints
dataguard's own trainer wrote or the user vouched for.

The old-torch cases replace `torch_version()` (the one place dataguard asks torch for its
version): installing a torch older than 2.10 beside this one is not possible in CI.
"""
from __future__ import annotations

import os

import pytest

from audit import watch
from dataguard.engine import checkpoint_trust as ck



class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _foreign(tmp_path, trained):
    """A checkpoint dataguard did not write: a trained one, re-saved with other bytes."""
    import torch

    src = trained["trainer_dir"] / "fold_1" / "checkpoint_final.pth"
    state = ck.safe_load(src, map_location="cpu")
    state["note"] = "from a colleague"
    dst = tmp_path / "foreign.pth"
    torch.save(state, dst)
    return dst


@pytest.mark.nnunet
def test_the_trainer_records_every_checkpoint_it_writes(trained_models):
    folder = trained_models["trainer_dir"] / "fold_1"
    digests = ck.trusted_digests()
    for name in ("checkpoint_final.pth", "checkpoint_best.pth"):
        assert ck.blake3_file(folder / name) in digests, name
    assert str(ck.trust_store()).startswith(os.path.dirname(os.environ["DATAGUARD_TRUST_STORE"]))


@pytest.mark.nnunet
def test_an_old_torch_loads_only_recorded_or_vouched_checkpoints(trained_models, tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "torch_version", lambda: "2.5.1+cu121")
    assert not ck.weights_only_is_sound()
    own = trained_models["trainer_dir"] / "fold_1" / "checkpoint_final.pth"
    assert "network_weights" in ck.safe_load(own, map_location="cpu")
    foreign = _foreign(tmp_path, trained_models)
    with pytest.raises(ck.UnsafeCheckpoint) as e:
        ck.safe_load(foreign, map_location="cpu")
    msg = str(e.value)
    assert "torch 2.5.1" in msg and "CVE-2025-32434" in msg and "CVE-2026-24747" in msg
    assert "torch>=2.10" in msg and f"--trust-checkpoint {foreign}" in msg
    assert ck.safe_load(foreign, map_location="cpu", trust=(foreign,))["note"] == "from a colleague"
    assert ck.safe_load(foreign, map_location="cpu")["note"]      # vouched once: recorded


def test_versions(monkeypatch):
    for v, sound in (("2.5.1", False), ("2.6.0", False), ("2.9.1+cpu", False), ("2.10.0", True),
                     ("2.14.1+cu130", True), ("3.0.0a0", True), ("garbage", False)):
        assert ck.weights_only_is_sound(v) is sound, v


def test_a_checkpoint_with_code_is_refused_before_nnunet_predicts(tmp_path):
    """nnUNetv2_predict loads with weights_only=False: dataguard proves the file plain first,
    and a crafted one never reaches it (no process starts, the payload never runs)."""
    import torch

    import dataguard.submit.predictions  # noqa: F401 - warm up: its dataclasses compile code on import
    from dataguard.submit.predict import parse_model, predict_model

    marker = tmp_path / "PWNED"
    fold = tmp_path / "results" / "Dataset901_X" / "nnUNetTrainer__nnUNetPlans__2d" / "fold_1"
    fold.mkdir(parents=True)
    torch.save({"network_weights": {"w": torch.zeros(2)}}, tmp_path / "plain.pth")
    assert ck.safe_load(tmp_path / "plain.pth")["network_weights"]["w"].shape == (2,)      # warm up torch
    torch.save({"network_weights": {}, "trap": _Evil(marker)}, fold / "checkpoint_final.pth")   # submit's default
    images = tmp_path / "imagesTs"
    images.mkdir()
    (images / "case_0000.nii.gz").write_bytes(b"not read: refused before")
    spec = parse_model("2d:1", fold.parent.parent)
    with watch() as events:
        with pytest.raises(ck.UnsafeCheckpoint) as e:
            predict_model(spec, "Dataset901_X", images, tmp_path / "work", device="cpu", cases=["case"])
    assert events == [] and not marker.exists()
    assert "refused to load" in str(e.value) and "checkpoint_final.pth" in str(e.value)
    assert not (tmp_path / "work").exists()
