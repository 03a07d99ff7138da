"""`ws.submit` / `ws.dataset(name).submit`: test images, predictions, ensembles, the archive."""
from __future__ import annotations

from pathlib import Path

from ..checks.consistency import profile, raw_channels
from ..engine.caseinfo import case_infos
from ..engine.layout import nnunet_env
from ..engine.walk import load_dataset_json
from ..folds import class_shares
from ..spec import parse_spec
from ..submit.archive import build_archive, run_checks, write_manifest
from ..submit.ensemble import ensemble_folders
from ..submit.pipeline import predict_and_ensemble
from ..submit.predict import predict_model
from ..submit.predictions import check_test_images, load_prediction_set, load_probability_inputs, test_images
from .scope import Scoped


class Submission(Scoped):
    """A challenge submission. For one dataset (`ws.dataset(name).submit`) test images are
    judged against its training images and predictions against its label shares; for the
    workspace (`ws.submit`) without them."""

    def training_profile(self):
        """What the raw training images look like (consistency.TrainingProfile: axis codes,
        spacing, intensity ranges, voxel hashes), from an incremental scan; None without raw data."""
        ds = self._ds()
        if ds.raw is None:
            return None
        view = self._ws._scan_dataset(ds).views.get(ds.name)
        if view is None:
            return None
        spec = parse_spec(view.meta or {})
        return profile([f for f in raw_channels(view, spec.ending) if f.split == "Tr"], spec.channels)

    def label_shares(self) -> dict[int, float]:
        """Share of training cases that contain each class (DG605's reference): foreground
        labels, or regions (a case has a region when it holds any of its values); never ignore."""
        ds = self._ds()
        spec = parse_spec(load_dataset_json(ds) or {})
        return class_shares(({int(lab) for lab, n in c.labels.items() if n}
                             for c in case_infos(self._ws._result(), ds.name) if c.labels is not None), spec)

    @staticmethod
    def test_images(images_dir: Path) -> dict:
        """Test cases of a folder: case -> its channel files (case_0000.nii.gz, ...)."""
        return test_images(Path(images_dir))

    def check_test_images(self, images_dir: Path) -> list:
        """The raw-data checks on a folder of test images (`case_0000.nii.gz`, ...); for a
        dataset, also against its training images (DG308-DG310)."""
        training = self.training_profile() if self._name is not None else None
        return check_test_images(Path(images_dir), training)

    def check_predictions(self, source: Path, images_dir: Path, dataset_json: Path | None = None, on_case=None):
        """A prediction folder or zip against its test images: (PredictionSet, DG601-DG606 findings)."""
        common = self.label_shares() if self._name is not None else {}
        ps = load_prediction_set(Path(source), Path(images_dir), dataset_json, common, on_case=on_case)
        return ps, run_checks(ps)

    @staticmethod
    def package(ps, out_zip: Path, images_dir: Path, dataset_json: Path | None = None, *,
                fix_dtype: bool = False, on_member=None, **provenance):
        """Write, verify and describe the archive: (ArchiveReport, manifest path)."""
        report = build_archive(ps, Path(out_zip), Path(images_dir), dataset_json, fix_dtype=fix_dtype,
                               common=ps.common, on_member=on_member)
        return report, write_manifest(report, source=ps.source, **provenance)

    @staticmethod
    def check_probabilities(folders: dict, expected: set | None = None):
        """An ensemble's inputs: (ProbabilityInputs, DG607 findings)."""
        pi = load_probability_inputs({k: Path(v) for k, v in folders.items()}, expected)
        return pi, run_checks(pi, "probabilities")

    @staticmethod
    def ensemble(pi, out_dir: Path, weights, postprocess: str = "none", on_case=None):
        """Weighted per-label ensemble of checked probability inputs into label maps."""
        return ensemble_folders(pi.folders, Path(out_dir), weights, postprocess, files=pi.files, on_case=on_case)

    def predict(self, model, images_dir: Path, work: Path, **kw):
        """One model's probabilities through nnUNetv2_predict (reused when nothing changed); in a
        project folder used without nnU-Net's variables, they name its folders for the call."""
        ds = self._ds()
        with nnunet_env(ds):
            return predict_model(model, ds.name, Path(images_dir), Path(work), **kw)

    def predict_and_ensemble(self, models: list, images_dir: Path, work: Path, weights, postprocess: str = "none",
                             **kw):
        """`submit --model` up to the archive: check the test images, predict with every model,
        check the probabilities, ensemble (submit.pipeline.PipelineResult says where it stopped)."""
        ds = self._ds()
        if "training" not in kw:
            kw["training"] = Submission(self._ws, ds.name).training_profile()
        with nnunet_env(ds):
            return predict_and_ensemble(models, ds.name, Path(images_dir), Path(work), weights, postprocess, **kw)
