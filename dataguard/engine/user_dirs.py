"""This user's own dataguard folders, outside every dataset: the one place that names them.

- `user_dir("state")`: what dataguard keeps per dataset between runs (manifests, stat index,
  case -> patient rules), one folder per dataset (`dataset_dir`). `$DATAGUARD_STATE_DIR`, else
  platformdirs' user_state_dir (`~/.local/state/dataguard` on Linux, honouring
  `$XDG_STATE_HOME`; `~/Library/Application Support/dataguard` on macOS).
- `user_dir("data")`: the checkpoint trust store and the journal key (engine.checkpoint_trust,
  engine.own_state): `$XDG_DATA_HOME/dataguard`, else `~/.local/share/dataguard`, where they
  always were.

platformdirs (a small pure-Python package, no dependencies of its own) knows each system's
convention for state folders, which the standard library does not. Folders are created mode
700; an existing one that is a link, not a folder, or not this user's is refused.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from ..errors import UsageError

APP = "dataguard"
STATE_ENV = "DATAGUARD_STATE_DIR"
DATASETS = "datasets"
PROJECT_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed")


def user_dir(kind: str = "state") -> Path:
    """This user's dataguard folder of `kind` ("state" or "data"), not created here."""
    if kind == "state":
        if os.environ.get(STATE_ENV):
            return Path(os.path.expanduser(os.environ[STATE_ENV]))
        import platformdirs

        return Path(platformdirs.user_state_dir(APP, appauthor=False))
    if kind == "data":
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return Path(base) / APP
    raise ValueError(f"unknown kind of user folder: {kind!r}")


def private_dir(path: Path, tighten: bool = True) -> Path:
    """`path`, created with its missing parents (mode 700) when missing; UsageError when it is
    a link, not a folder, or another user's. With `tighten`, a folder of ours that others can
    read is made 700 (not for the state folder itself: `$DATAGUARD_STATE_DIR` may name a
    folder the user keeps other things in)."""
    path = Path(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"dataguard's state folder {path} is not a folder (a link?): move it away "
                         f"or set {STATE_ENV}")
    if os.name == "posix":
        if st.st_uid != os.getuid():
            raise UsageError(f"dataguard's state folder {path} belongs to another user: set {STATE_ENV}")
        if tighten and st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return path


def dataset_key(name: str, anchor: str) -> str:
    """`<name>-<12 hex>`: the dataset's name (made safe for a file name) and a hash of where it
    lives, so two datasets of one name in different places never share a folder."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80].lstrip(".") or "dataset"
    digest = hashlib.blake2b(os.fsencode(anchor), digest_size=6).hexdigest()
    return f"{safe}-{digest}"


def dataset_anchor(ds) -> str:
    """Where a dataset lives, the same from any working folder or relative path: for a dataset
    inside `<project>/nnUNet_raw` or `<project>/nnUNet_preprocessed`, the project and the name
    (so the key does not change when its preprocessed half appears); else its raw folder, or
    its preprocessed one, resolved."""
    for p in (ds.raw, ds.preprocessed):
        if p is None:
            continue
        p = Path(os.path.abspath(p)).resolve()
        if p.parent.name in PROJECT_FOLDERS:
            return os.path.join(str(p.parent.parent), p.name)
        return str(p)
    return ds.name


def dataset_dir(ds, create: bool = False) -> Path:
    """The state folder of one layout.Dataset (created, mode 700, when `create`)."""
    d = user_dir("state") / DATASETS / dataset_key(ds.name, dataset_anchor(ds))
    if create:
        private_dir(user_dir("state"), tighten=False)
        for p in (d.parent, d):
            private_dir(p)
    return d


def dataset_dirs() -> list[Path]:
    """Every dataset folder under the state folder (for finding a repair run's dataset)."""
    root = user_dir("state") / DATASETS
    try:
        st = os.lstat(root)
        if not stat.S_ISDIR(st.st_mode):
            return []
        return sorted(root / n for n in os.listdir(root)
                      if stat.S_ISDIR(os.lstat(root / n).st_mode))
    except OSError:
        return []
