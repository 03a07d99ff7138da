"""Find nnU-Net datasets from whatever the user typed: paths, roots, ids, env vars.

nnU-Net keeps one dataset in up to three places (raw, preprocessed, results) under
the same `DatasetXXX_Name`. dataguard pairs them so cross checks (raw case without
preprocessed files, orphans, staleness) work whichever of them was named.

`roots()` is the one place that decides the three roots: nnU-Net's environment variables,
and for each one that is unset, the folder of that name in the project folder the command
runs in (a folder holding `nnUNet_raw`, `nnUNet_preprocessed` or `nnUNet_results`, as the
demo writes). A dataset's results folder is the sibling `nnUNet_results/<name>` of the tree
it was found in, else `roots()`'s.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LayoutError  # noqa: F401 - defined in errors
from ..names import close, hint
from ..checks.metadata import METADATA_LIMIT
from ..fsio import SMALL_FILE_LIMIT, open_nonblocking, read_json, read_regular  # noqa: F401 - re-exported

DATASET_DIR = re.compile(r"^Dataset(\d{3})_(.+)$")
ENV_RAW, ENV_PRE, ENV_RES = "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"
ROOT_VARS = (ENV_RAW, ENV_PRE, ENV_RES)


@dataclass
class Dataset:
    """One nnU-Net dataset: its name and the folders where its parts live."""
    name: str
    raw: Path | None = None
    preprocessed: Path | None = None
    config_dirs: list[Path] = field(default_factory=list)
    results: Path | None = None      # its folder under nnUNet_results, when there is one

    @property
    def id(self) -> int | None:
        m = DATASET_DIR.match(self.name)
        return int(m.group(1)) if m else None

    def roots(self) -> dict[str, Path]:
        """Named roots ("raw", "preprocessed") used to prefix manifest keys."""
        out = {}
        if self.raw is not None:
            out["raw"] = self.raw
        if self.preprocessed is not None:
            out["preprocessed"] = self.preprocessed
        return out


def is_raw_dataset(p: Path) -> bool:
    return (p / "imagesTr").is_dir() or (p / "labelsTr").is_dir() or (
        (p / "dataset.json").is_file() and not is_preprocessed_dataset(p))


def is_preprocessed_dataset(p: Path) -> bool:
    if (p / "dataset_fingerprint.json").is_file():
        return True
    try:
        return any(c.suffix == ".json" and "Plans" in c.name for c in p.iterdir())
    except OSError:
        return False


@dataclass(frozen=True)
class PlannedConfig:
    """One configuration of one plans file, and the folder nnU-Net writes it to."""
    plans_file: Path
    plans: dict
    name: str            # "2d", "3d_fullres", ...
    conf: dict
    folder: str          # data_identifier, e.g. "nnUNetPlans_2d"


NOT_PLANS = ("dataset.json", "dataset_fingerprint.json", "splits_final.json")


def planned_configurations(pre: Path) -> list[PlannedConfig]:
    """Every configuration of every plans JSON (nnUNetPlans.json, ...ResEnc...Plans.json).

    The single place that maps plans to configuration folders; each file is parsed once.
    """
    out = []
    for c in sorted(Path(pre).iterdir()):
        if c.suffix != ".json" or c.name in NOT_PLANS or not c.is_file():
            continue
        try:
            plans = read_json(c, METADATA_LIMIT)
        except (OSError, ValueError):
            continue
        if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
            continue
        ident = plans.get("plans_name")
        ident = ident if isinstance(ident, str) and ident else c.stem
        for cname, conf in plans["configurations"].items():
            if isinstance(conf, dict):
                folder = conf.get("data_identifier")
                if not (isinstance(folder, str) and folder and "/" not in folder and folder not in (".", "..")):
                    folder = f"{ident}_{cname}"    # malformed: DG211 says so; keep a usable name here
                out.append(PlannedConfig(c, plans, cname, conf, folder))
    return out


def find_config_dirs(pre: Path) -> list[Path]:
    """Configuration folders: those the plans declare, plus any folder holding .pkl cases."""
    declared = {pc.folder for pc in planned_configurations(pre)}
    out = []
    try:
        children = sorted(pre.iterdir())
    except OSError:
        return out
    for c in children:
        if c.is_symlink() or not c.is_dir() or c.name in ("gt_segmentations", ".dataguard") or c.name == "__MACOSX":
            continue
        if c.name in declared:
            out.append(c)
            continue
        try:
            if any(g.suffix in (".pkl", ".b2nd", ".npz") for g in c.iterdir()):
                out.append(c)
        except OSError:
            pass
    return out


def is_project(p: Path) -> bool:
    """A folder holding nnU-Net's three roots (any of them) by their names: a whole project."""
    return any((Path(p) / v).is_dir() for v in ROOT_VARS)


def roots(cwd: Path | None = None) -> dict[str, tuple[Path | None, str]]:
    """nnU-Net's three roots, each as (folder or None, where it came from): `$var` when set,
    else `<cwd>/<var>` when the working folder is a project folder, else (None, "unset")."""
    here = Path(os.getcwd() if cwd is None else cwd)
    out = {}
    for var in ROOT_VARS:
        v = os.environ.get(var)
        if v:
            out[var] = (Path(v), f"${var}")
        elif (here / var).is_dir():
            out[var] = (here / var, f"./{var}")
        else:
            out[var] = (None, "unset")
    return out


def root_of(var: str) -> Path | None:
    """One root as `roots()` decides it."""
    return roots()[var][0]


def where_looked(vars_=(ENV_RAW, ENV_PRE)) -> str:
    """Where the roots were looked for, in words: "nnUNet_raw=/x, nnUNet_preprocessed unset and
    no ./nnUNet_preprocessed"."""
    parts = []
    for var, (p, how) in roots().items():
        if var in vars_:
            parts.append(f"{var}={p}" if p is not None else f"{var} unset and no ./{var}")
    return ", ".join(parts)


def _env_path(var: str) -> Path | None:
    return root_of(var)


def results_root(ds: Dataset) -> tuple[Path | None, str]:
    """(the nnUNet_results folder for `ds`, or None; how it was found, or why not in words)."""
    if ds.results is not None:
        return ds.results.parent, str(ds.results.parent)
    for p in (ds.preprocessed, ds.raw):
        if p is not None and (p.parent.parent / ENV_RES).is_dir():
            return p.parent.parent / ENV_RES, str(p.parent.parent / ENV_RES)
    r, how = roots()[ENV_RES]
    if r is not None:
        return r, how
    beside = sorted({str(p.parent.parent) for p in (ds.raw, ds.preprocessed) if p is not None})
    return None, (f"{ENV_RES} is not set and there is no {ENV_RES}/ folder in "
                  + (" or ".join(beside) or "the working folder"))


@contextlib.contextmanager
def nnunet_env(ds: Dataset):
    """nnU-Net's three variables set, for the time of the block, to `ds`'s roots where they are
    unset (code that reads them, nnunetv2's own included, sees the project's folders);
    restored afterwards. A variable already set is never changed."""
    want = {}
    for var, part in ((ENV_RAW, ds.raw), (ENV_PRE, ds.preprocessed)):
        if not os.environ.get(var) and part is not None:
            want[var] = str(Path(part).parent)
    res, _ = results_root(ds)
    if not os.environ.get(ENV_RES) and res is not None:
        want[ENV_RES] = str(res)
    old = {k: os.environ.get(k) for k in want}
    os.environ.update(want)
    try:
        yield want
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _find_by_id(root: Path | None, ident: str) -> Path | None:
    if root is None or not root.is_dir():
        return None
    if DATASET_DIR.match(ident) and (root / ident).is_dir():
        return root / ident
    if ident.isdigit():
        prefix = f"Dataset{int(ident):03d}_"
        hits = sorted(c for c in root.iterdir() if c.name.startswith(prefix) and c.is_dir())
        if hits:
            return hits[0]
    return None


def resolve_id(ident: str) -> Dataset:
    """`1`, `001` or `Dataset001_X` → the dataset's folders via the roots (`roots()`: the
    nnU-Net env vars, else the project folder it runs in)."""
    raw = _find_by_id(_env_path(ENV_RAW), ident)
    pre = _find_by_id(_env_path(ENV_PRE), ident)
    if raw is None and pre is None:
        looked = "".join(f"\n  {w}" for w in where_looked().split(", "))
        raise LayoutError(f"dataset {ident!r} not found; looked in{looked}\n"
                          + hint(ident, known_names(), "datasets"))
    name = (pre or raw).name
    return _pair(Dataset(name=name, raw=raw, preprocessed=pre))


def known_names() -> list[str]:
    """The dataset folder names under the roots (for "did you mean"), sorted."""
    names: set[str] = set()
    for var in ROOT_VARS:
        r = root_of(var)
        try:
            names |= {c.name for c in r.iterdir() if DATASET_DIR.match(c.name) and c.is_dir()} if r else set()
        except OSError:
            pass
    return sorted(names)


# --- the folders exactly as nnU-Net resolves them (`dataguard train`'s gate) ---------------------
def nnunet_env_problem(var: str, writes_to: Path | None = None) -> str | None:
    """Why nnU-Net cannot use `$var` (None: it can), the value read as nnU-Net reads it: as-is.

    It must be set and name a folder; where nnU-Net writes (`writes_to`, a folder under
    it) it may be missing, as long as nnU-Net can create it there. Quotes kept in the
    value or an unexpanded ~ would make nnU-Net read or create a folder of that name.
    """
    value = os.environ.get(var)
    if not value:
        return f"{var} is {'set but empty' if value == '' else 'not set'}"
    p = Path(value)
    if p.exists() and not p.is_dir():
        return f"{var}={value} is {'a file' if p.is_file() else 'a FIFO, socket or device'}, not a folder"
    if not p.is_dir() and _quirk(value):
        return f"{var}={value}: no such folder ({_quirk(value)})"
    if writes_to is not None:
        return _not_creatable(var, value, writes_to)
    if not p.is_dir():
        return f"{var}={value}: no such folder"
    return None


def _not_creatable(var: str, value: str, target: Path) -> str | None:
    """Why nnU-Net cannot create or write the folder `target` under `$var` (None: it can)."""
    probe = Path(os.path.abspath(target))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{var}={value}: {probe} is a file, so nnU-Net cannot create {target}"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{var}={value}: {probe} is not writable, so nnU-Net cannot write {target}"
    return None


def _quirk(value: str) -> str:
    """What a shell would have changed in `value`: quotes kept in it, a ~ not expanded ("" if neither)."""
    if value[:1] in "'\"" or value[-1:] in "'\"":
        return "the quotes are part of the value: set it without them"
    if value.startswith("~"):
        return "~ is not expanded in a quoted value: use the full path"
    return ""


def nnunet_dataset_names(ident: str) -> list[str]:
    """The dataset names nnU-Net finds for `ident` (its maybe_convert_to_dataset_name): a name
    starting with `Dataset` as given; an id looked up as `DatasetXXX*` folders in
    $nnUNet_preprocessed, $nnUNet_raw and $nnUNet_results. nnU-Net needs exactly one."""
    if ident.startswith("Dataset"):
        return [ident]
    try:
        prefix = "Dataset%03.0d" % int(ident)
    except ValueError:
        return []
    names: set[str] = set()
    for var in (ENV_PRE, ENV_RAW, ENV_RES):
        root = os.environ.get(var)
        if root and os.path.isdir(root):
            names |= {c.name for c in Path(root).iterdir() if c.name.startswith(prefix) and c.is_dir()}
    return sorted(names)


def resolve_as_nnunet(ident: str) -> Dataset:
    """`ident`'s folders exactly where nnUNetv2_train looks: $nnUNet_preprocessed/<name> and
    (checked, not read by training) $nnUNet_raw/<name>, never a sibling root or another copy."""
    names = nnunet_dataset_names(ident)
    if len(names) != 1:
        where = ", ".join(f"{v}={os.environ.get(v, '(unset)')}" for v in (ENV_PRE, ENV_RAW, ENV_RES))
        if names:
            raise LayoutError(f"dataset {ident!r} is ambiguous to nnU-Net: {', '.join(names)} share the id "
                              f"(DG903: rename one) ({where})")
        raise LayoutError(f"dataset {ident!r} not found ({where})")
    name = names[0]
    folders = {}
    for var in (ENV_RAW, ENV_PRE):
        root = os.environ.get(var)
        folders[var] = Path(root) / name if root and (Path(root) / name).is_dir() else None
    ds = Dataset(name=name, raw=folders[ENV_RAW], preprocessed=folders[ENV_PRE])
    if ds.preprocessed is not None:
        ds.config_dirs = find_config_dirs(ds.preprocessed)
    return ds


def _counterpart(p: Path, kind: str) -> Path | None:
    """Find the raw folder of a preprocessed dataset (or vice versa)."""
    env = _env_path(ENV_RAW if kind == "raw" else ENV_PRE)
    sibling_root = "nnUNet_raw" if kind == "raw" else "nnUNet_preprocessed"
    # the sibling in the same tree first: a copy of a dataset pairs with its own copy of raw
    candidates = [p.parent.parent / sibling_root / p.name]
    if env is not None:
        candidates.append(env / p.name)
    m = DATASET_DIR.match(p.name)
    for c in candidates:
        if c.is_dir() and c.resolve() != p.resolve():
            return c
    if m and env is not None:
        return _find_by_id(env, m.group(1))
    return None


def _results(ds: Dataset) -> Path | None:
    """The dataset's folder under nnUNet_results: beside the tree it was found in first (a copy
    of a project has its own models), else under the results root; None when neither exists."""
    here = [p.parent.parent / ENV_RES / ds.name for p in (ds.preprocessed, ds.raw) if p is not None]
    env = root_of(ENV_RES)
    for c in here + ([env / ds.name] if env is not None else []):
        if c.is_dir() and not c.is_symlink():
            return c
    return None


def _pair(ds: Dataset) -> Dataset:
    if ds.preprocessed is not None and ds.raw is None:
        raw = _counterpart(ds.preprocessed, "raw")
        ds.raw = raw if raw is not None and is_raw_dataset(raw) else None
    if ds.raw is not None and ds.preprocessed is None:
        pre = _counterpart(ds.raw, "preprocessed")
        ds.preprocessed = pre if pre is not None and is_preprocessed_dataset(pre) else None
    if ds.preprocessed is not None:
        ds.config_dirs = find_config_dirs(ds.preprocessed)
    ds.results = _results(ds)
    return ds


def _dataset_at(p: Path) -> Dataset | None:
    if is_preprocessed_dataset(p):
        return _pair(Dataset(name=p.name, preprocessed=p))
    if is_raw_dataset(p):
        return _pair(Dataset(name=p.name, raw=p))
    return None


def _datasets_in_root(root: Path) -> list[Dataset]:
    out = []
    for c in sorted(root.iterdir()):
        if c.is_dir() and DATASET_DIR.match(c.name):
            ds = _dataset_at(c)
            if ds is not None:
                out.append(ds)
    return out


def discover(targets: list[str] | None = None) -> list[Dataset]:
    """Turn CLI arguments (paths or dataset ids) into datasets, merged by name.

    No target: every dataset under the raw and preprocessed roots (`roots()`: `$nnUNet_raw`
    and `$nnUNet_preprocessed`, else those folders of the project folder it runs in).
    """
    found: list[Dataset] = []
    if not targets:
        tops = [r for r in (_env_path(ENV_RAW), _env_path(ENV_PRE)) if r and r.is_dir()]
        if not tops:
            raise LayoutError("nothing to scan: give a PATH or -d ID, set nnUNet_raw /\n"
                              "  nnUNet_preprocessed, or run in a folder that holds nnUNet_raw/")
        for r in tops:
            found += _datasets_in_root(r)
    for t in targets or []:
        p = Path(t)
        if not p.exists():
            if t.isdigit() or DATASET_DIR.match(t):
                found.append(resolve_id(t))
                continue
            near = close(t, known_names()) if os.sep not in t and "/" not in t else []
            raise LayoutError(f"no such file or folder: {t}"
                              + (f"\n  did you mean the dataset {' or '.join(near)}?" if near else ""))
        if not p.is_dir():
            raise LayoutError(f"not a folder: {t}")
        ds = _dataset_at(p)
        if ds is None and p.parent != p and is_preprocessed_dataset(p.parent):
            ds = _dataset_at(p.parent)  # a configuration folder was named
        if ds is not None:
            found.append(ds)
            continue
        sub = [p / n for n in ("nnUNet_raw", "nnUNet_preprocessed") if (p / n).is_dir()]
        inner = [d for s in sub for d in _datasets_in_root(s)] if sub else _datasets_in_root(p)
        if not inner:
            raise LayoutError(f"not an nnU-Net dataset, root or parent folder: {t}")
        found += inner
    return _merge(found)


def _merge(dsets: list[Dataset]) -> list[Dataset]:
    by_name: dict[str, Dataset] = {}
    for d in dsets:
        cur = by_name.get(d.name)
        if cur is None:
            by_name[d.name] = d
        else:
            cur.raw = cur.raw or d.raw
            cur.results = cur.results or d.results
            if cur.preprocessed is None and d.preprocessed is not None:
                cur.preprocessed, cur.config_dirs = d.preprocessed, d.config_dirs
    return list(by_name.values())
