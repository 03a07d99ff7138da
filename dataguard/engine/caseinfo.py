"""Case-centred view of a ScanResult: what the TUI lists, the gates judge and the report shows.

Built from the scan's recorded per-file results and facts, so it reads no data file.
Facts are normalised to nnU-Net's array order (z, y, x) whatever the source: a raw
NIfTI (stored x, y, z), a legacy `.npz` or a `.b2nd`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..checks.metadata import is_num
from ..findings import Finding, Severity
from ..errors import SplitError
from ..folds import SPLITS_NAME, load_splits


@dataclass(frozen=True)
class FileInfo:
    rel: str                        # raw/... or preprocessed/...
    size: int
    blake3: str | None
    findings: tuple[Finding, ...] = ()


@dataclass
class CaseFacts:
    """Normalised facts of one case in one source ("raw" or a configuration folder)."""
    shape: list[int] | None = None          # spatial, (z, y, x)
    spacing: list[float] | None = None      # mm, (z, y, x)
    dtype: str | None = None                # of the image (data) array
    labels: dict[int, int] | None = None    # segmentation value -> voxel count


@dataclass
class CaseInfo:
    dataset: str
    case: str
    status: str                             # ok | warning | error
    findings: list[Finding] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    facts: dict[str, CaseFacts] = field(default_factory=dict)   # "raw" / config folder -> facts
    val_fold: int | None = None
    configs: list[str] = field(default_factory=list)            # configuration folders holding it
    test: bool = False                                          # only in imagesTs: a test image

    @property
    def labels(self) -> dict[int, int] | None:
        """Label voxel counts from the raw label, else the first configuration that knows them."""
        for f in self.facts.values():
            if f.labels is not None:
                return f.labels
        return None


def _status(findings: list[Finding]) -> str:
    worst = max((f.severity for f in findings), default=None)
    if worst is None or worst < Severity.WARNING:
        return "ok"
    return "error" if worst >= Severity.ERROR else "warning"


def _counts(facts: dict) -> dict[int, int] | None:
    vox = facts.get("label_voxels")
    if isinstance(vox, dict):
        return {int(k): int(v) for k, v in vox.items()}
    return None


def _raw_facts(files: list[tuple[object, object]]) -> CaseFacts:
    out = CaseFacts()
    for t, r in sorted(files, key=lambda x: (x[0].kind != "image", x[0].rel)):
        f = r.facts
        if t.kind == "image" and out.shape is None and "shape" in f:
            out.shape = [int(x) for x in f["shape"][:3]][::-1]
            sp = f.get("spacing")
            out.spacing = [float(x) for x in sp[:3]][::-1] if sp else None
            out.dtype = f.get("dtype")
        if t.kind == "label":
            out.labels = _counts(f)
            if out.shape is None and "shape" in f:
                out.shape = [int(x) for x in f["shape"][:3]][::-1]
    return out


def _config_facts(files: list[tuple[object, object]], plans: dict | None) -> CaseFacts:
    out = CaseFacts()
    conf = (plans or {}).get("configuration") or {}
    sp = conf.get("spacing")
    if isinstance(sp, list) and all(is_num(x) for x in sp):     # DG211 reports any other spacing
        out.spacing = [float(x) for x in sp]
    for t, r in files:
        f = r.facts
        name = t.rel.rsplit("/", 1)[-1]
        if t.kind == "npz":
            if "data_shape" in f:
                out.shape = [int(x) for x in f["data_shape"][1:]]
                out.dtype = f.get("data_dtype")
            out.labels = _counts(f)
        elif t.kind in ("b2nd", "npy"):
            seg = name.endswith(("_seg.b2nd", "_seg.npy"))
            if seg:
                out.labels = out.labels if out.labels is not None and t.kind == "npy" else _counts(f)
            elif "shape" in f and out.shape is None:
                out.shape = [int(x) for x in f["shape"][1:]]
                out.dtype = f.get("dtype")
        elif t.kind == "pkl" and out.labels is None and f.get("labels_present") is not None:
            out.labels = {int(v): -1 for v in f["labels_present"]}   # present, count unknown
    return out


def val_folds_of(ds, view=None) -> dict[str, int]:
    """case -> index of the fold whose validation set holds it (from splits_final.json): the
    scan's own reading of it (`view.splits`), read here only where the scan found none."""
    splits = view.splits if view is not None else None
    if splits is None:
        if ds is None or ds.preprocessed is None:
            return {}
        try:
            splits = load_splits(ds.preprocessed / SPLITS_NAME)
        except (SplitError, OSError):
            return {}
    if isinstance(splits, SplitError):
        return {}
    out: dict[str, int] = {}
    for i, fold in enumerate(splits):
        for c in fold.get("val", []):
            out.setdefault(c, i)
    return out


def case_infos(result, dataset: str | None = None) -> list[CaseInfo]:
    """Every case of every (or one) dataset, raw and every configuration, with its state."""
    out: list[CaseInfo] = []
    by_ds = {d.name: d for d in result.datasets}
    for name, view in result.views.items():
        if dataset is not None and name != dataset:
            continue
        out += view_cases(name, view, [f for f in result.findings if f.dataset == name], by_ds.get(name))
    return out


def view_cases(name: str, view, findings: list[Finding], ds) -> list[CaseInfo]:
    """The cases of one dataset's view (used by case_infos and by the stat index's summary)."""
    by_case: dict[str, list[Finding]] = {}
    for f in findings:
        if f.case is not None:
            by_case.setdefault(f.case, []).append(f)
    groups: dict[str, dict[str, list]] = {}
    for t in view.tasks:
        r = view.results.get(t.rel)
        if t.case is None or r is None or t.kind not in ("image", "label", "npz", "npy", "b2nd", "pkl"):
            continue
        folder = t.rel.split("/")[1] if t.where == "raw" else None
        if t.where == "raw" and folder not in ("imagesTr", "labelsTr", "imagesTs"):
            continue
        # test images are cases too (DG308-DG310 name them), under their own source
        source = ("test" if folder == "imagesTs" else "raw") if t.where == "raw" else \
            (t.rel.split("/")[1] if t.where == "config" else None)
        if source is None:
            continue
        groups.setdefault(t.case, {}).setdefault(source, []).append((t, r))
    folds = val_folds_of(ds, view)
    out = []
    for case in sorted(groups):
        sources = groups[case]
        files = [FileInfo(t.rel, r.size, r.blake3, tuple(r.findings))
                 for src in sources.values() for t, r in src]
        facts = {src: (_raw_facts(items) if src in ("raw", "test") else _config_facts(items, view.plans.get(src)))
                 for src, items in sorted(sources.items(), key=lambda kv: kv[0] != "raw")}
        fs = sorted(by_case.get(case, []), key=lambda f: (-f.severity, f.path, f.code))
        out.append(CaseInfo(dataset=name, case=case, status=_status(fs), findings=fs,
                            files=sorted(files, key=lambda f: f.rel), facts=facts,
                            val_fold=folds.get(case), configs=sorted(s for s in sources if s not in ("raw", "test")),
                            test="test" in sources and "raw" not in sources))
    return out


def summary(c: CaseInfo) -> dict:
    """A case without its files: what a table row needs, stored with the stat index."""
    return {"case": c.case, "status": c.status, "fold": c.val_fold, "configs": c.configs, "test": c.test,
            "facts": {src: {"shape": f.shape, "spacing": f.spacing, "dtype": f.dtype,
                            "labels": None if f.labels is None else {str(k): v for k, v in f.labels.items()}}
                      for src, f in c.facts.items()}}


def from_summary(dataset: str, d: dict, findings: list[Finding]) -> CaseInfo:
    facts = {src: CaseFacts(shape=f.get("shape"), spacing=f.get("spacing"), dtype=f.get("dtype"),
                            labels=None if f.get("labels") is None else {int(k): v for k, v in f["labels"].items()})
             for src, f in d.get("facts", {}).items()}
    fs = sorted(findings, key=lambda f: (-f.severity, f.path, f.code))
    return CaseInfo(dataset=dataset, case=d["case"], status=_status(fs), findings=fs, facts=facts,
                    val_fold=d.get("fold"), configs=list(d.get("configs", [])), test=bool(d.get("test")))
