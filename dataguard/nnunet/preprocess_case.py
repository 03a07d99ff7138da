"""Re-preprocess one case in-process with the dataset's own plans, exactly as nnU-Net does.

`nnUNetv2_preprocess` always wipes and redoes a whole configuration; here the same
preprocessor class (`DefaultPreprocessor` or whatever the plans name) runs on one case
and writes into a staging folder. Output layout follows the folder being repaired:
blosc2 (`.b2nd` + `_seg.b2nd` + `.pkl`, nnU-Net >= 2.6) or legacy (`.npz` + `.pkl`).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

from ..engine.layout import planned_configurations
from ..fsio import read_json


def _import_nnunet_quietly(raw: Path, preprocessed: Path) -> None:
    """Import nnunetv2 without touching os.environ.

    Older nnunetv2 read nnUNet_* at import and printed warnings when unset; the old
    workaround set them temporarily, which races with other threads (the TUI scans in a
    worker thread). nnunetv2 2.8 reads them lazily (`paths._EnvPath`; older versions
    only print a warning), and the one-case preprocessor never asks for them:
    everything it needs is passed explicitly.
    """
    import nnunetv2.paths  # noqa: F401


def find_configuration(preprocessed: Path, config_folder: str) -> tuple[Path, str]:
    """(plans file, configuration name) whose data_identifier is this folder."""
    for pc in planned_configurations(Path(preprocessed)):
        if pc.folder == config_folder:
            return pc.plans_file, pc.name
    raise LookupError(f"no configuration in the plans of {preprocessed} writes to {config_folder}")


def folder_layout(folder: Path) -> str:
    """'b2nd' or 'npz': what the folder already holds (new folders: what this nnunetv2 writes)."""
    names = [p.name for p in Path(folder).iterdir()] if Path(folder).is_dir() else []
    if any(n.endswith(".b2nd") and not n.startswith("._") for n in names):
        return "b2nd"
    if any(n.endswith(".npz") and not n.startswith("._") for n in names):
        return "npz"
    return "b2nd"


def training_files(raw: Path, dataset_json: dict) -> dict[str, dict]:
    """{case: {"images": [...], "label": ...}} as nnU-Net resolves them.

    nnunetv2's own helper lists the folder through a fork Pool of 12 processes; that is
    slow for one case and leaves forked children holding our open files (the repair
    lock) if we are killed. The naming rule is simple enough to apply directly.
    """
    raw = Path(raw)
    explicit = dataset_json.get("dataset")
    if isinstance(explicit, dict):
        def absolute(p):
            return str(p if os.path.isabs(p) else raw / p)
        return {c: {"images": [absolute(i) for i in e["images"]], "label": absolute(e["label"])}
                for c, e in explicit.items()}
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    out = {}
    for label in sorted((raw / "labelsTr").glob(f"*{ending}")):
        if label.name.startswith("._"):      # AppleDouble junk, not a case (DG101)
            continue
        case = label.name[: -len(ending)]
        out[case] = {"images": [str(raw / "imagesTr" / f"{case}_{i:04d}{ending}") for i in range(n_channels)],
                     "label": str(label)}
    return out


class CasePreprocessor:
    """Loads plans and nnunetv2 once; `run(case, out_truncated)` per case."""
    def __init__(self, raw: Path, preprocessed: Path, config_folder: str):
        _import_nnunet_quietly(raw, preprocessed)
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.raw, self.preprocessed = Path(raw), Path(preprocessed)
        plans_file, cname = find_configuration(self.preprocessed, config_folder)
        self.plans_manager = PlansManager(str(plans_file))
        self.configuration_manager = self.plans_manager.get_configuration(cname)
        dj = self.preprocessed / "dataset.json"
        if not dj.is_file():
            dj = self.raw / "dataset.json"

        self.dataset_json = read_json(dj)     # never blocks on a FIFO named dataset.json
        self.files = training_files(self.raw, self.dataset_json)
        self.preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        self.layout = folder_layout(self.preprocessed / config_folder)
        # torch + nnunetv2 leave ~300k long-lived objects; every later full GC pass would
        # walk them (measured 0.14-0.2 s per repair). They live as long as the process.
        import gc

        gc.freeze()

    def inputs(self, case: str) -> tuple[list[str], str]:
        entry = self.files[case]
        return list(entry["images"]), entry["label"]

    def run(self, case: str, out_truncated: Path) -> list[Path]:
        """Write the case's files as `<out_truncated>.*` and return their paths."""
        images, label = self.inputs(case)
        Path(out_truncated).parent.mkdir(parents=True, exist_ok=True)
        out = str(out_truncated)
        if self.layout == "b2nd":
            self.preprocessor.run_case_save(out, images, label, self.plans_manager,
                                            self.configuration_manager, self.dataset_json)
            return [Path(out + s) for s in (".b2nd", "_seg.b2nd", ".pkl")]
        import numpy as np

        data, seg, props = self.preprocessor.run_case(images, label, self.plans_manager,
                                                      self.configuration_manager, self.dataset_json)
        # what nnU-Net <= 2.5 wrote: float32 data, int8 seg (int16 when labels exceed 127)
        seg = seg.astype(np.int16 if seg.max() > 127 else np.int8, copy=False)
        np.savez_compressed(out + ".npz", data=data.astype(np.float32, copy=False), seg=seg)
        with open(out + ".pkl", "wb") as f:
            pickle.dump(props, f)
        return [Path(out + ".npz"), Path(out + ".pkl")]
