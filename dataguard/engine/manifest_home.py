"""Where a dataset's manifest (and its stat index and case -> patient rule) lives.

By default in this user's state folder, one folder per dataset keyed by its name and where it
lives (engine.user_dirs.dataset_dir): the same from any working folder, never inside a
dataset, never shared by two datasets of one name. `--manifest-dir DIR` (a folder given to
Workspace) puts every dataset's files in DIR instead, as before 0.3.0.

Before 0.3.0 the default was `./manifests`: a manifest found there for the same dataset (its
recorded roots agree) is copied into the state folder once, with a note, and read from there
on; the old file is left where it is (nothing is deleted).
"""
from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path
from typing import Callable

from ..fsio import copy_verified
from . import user_dirs
from .manifest import Manifest, ManifestError

LEGACY_DIR = Path("manifests")
SUFFIXES = (".json", ".index", ".groups.json")    # the manifest, its stat index, the groups rule


def manifest_file(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}.json"


def dir_for(manifest_dir, ds) -> Path:
    """The folder of `ds`'s manifest: `manifest_dir` when it is a folder, `manifest_dir(ds)`
    when it is a function (the Workspace's, which migrates and notes), else the state folder."""
    if callable(manifest_dir):
        return Path(manifest_dir(ds))
    if manifest_dir is not None:
        return Path(manifest_dir)
    return user_dirs.dataset_dir(ds, create=True)


def state_dir(ds, note: Callable[[str], None] | None = None, legacy: Path | None = None) -> Path:
    """`ds`'s state folder (created, mode 700), after copying an old `./manifests/<name>.json`
    of the same dataset into it when it has none yet (`note` says so)."""
    d = user_dirs.dataset_dir(ds, create=True)
    if not manifest_file(d, ds.name).exists():
        old = Path(os.getcwd()) / (legacy or LEGACY_DIR)
        why = _adopt(old, d, ds)
        if why and note is not None:
            note(why)
    return d


def _regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(p).st_mode)
    except OSError:
        return False


def _same_dataset(recorded: dict, ds) -> bool:
    """The old manifest's roots name this dataset's folders (every root both have agrees)."""
    now = {k: os.path.realpath(v) for k, v in ds.roots().items()}
    was = {k: os.path.realpath(v) for k, v in recorded.items() if isinstance(v, str) and k in now}
    return bool(was) and all(now[k] == v for k, v in was.items())


def _adopt(old_dir: Path, new_dir: Path, ds) -> str | None:
    """Copy the old manifest files of `ds` from `old_dir` into `new_dir`; the note to show, or
    None when there is nothing to adopt (none there, a link, another dataset's, unreadable)."""
    src = manifest_file(old_dir, ds.name)
    if not _regular(src) or not stat.S_ISDIR(_lstat_mode(old_dir)):
        return None
    try:
        old = Manifest.load(old_dir, ds.name)
    except ManifestError:
        return None
    if not old.exists or not _same_dataset(old.roots, ds):
        return None
    for suffix in SUFFIXES:
        s = old_dir / f"{ds.name}{suffix}"
        if _regular(s):
            try:
                copy_verified(s, new_dir / s.name)
            except OSError:
                if suffix == ".json":
                    return None
                continue
    shown = f"./{LEGACY_DIR}" if old_dir == Path(os.getcwd()) / LEGACY_DIR else str(old_dir)
    text = (f"note: {ds.name}: using the manifest found in {shown} (the default place before "
            f"0.3.0), copied into this user's state folder, where every command finds it from any "
            f"working folder; {shown}/{src.name} is no longer read. The copy:")
    return "\n".join(textwrap.wrap(text, 80, subsequent_indent="  ", break_on_hyphens=False,
                                    break_long_words=False) + [f"  {new_dir}"])


def _lstat_mode(p: Path) -> int:
    try:
        return os.lstat(p).st_mode
    except OSError:
        return 0


def plain_run_id(run_id: str) -> bool:
    """A run id that is one plain file name (it becomes `<root>/.dataguard/journal/<id>.jsonl`)."""
    return bool(run_id) and not any(c in run_id for c in "/\\\0") and not run_id.startswith(".")


def holds_run(roots, run_id: str) -> bool:
    """Some root of `roots` (paths) has a journal file of repair run `run_id` (lstat: a link is
    not one; whether its records are this user's, restore decides)."""
    return plain_run_id(run_id) and any(
        isinstance(r, (str, Path)) and _regular(Path(r) / ".dataguard" / "journal" / f"{run_id}.jsonl")
        for r in roots)


def find_run(run_id: str, manifest_dir: Path | None = None) -> list[dict]:
    """The recorded roots ({"raw": ..., "preprocessed": ...}) of every dataset whose manifest is
    in the state folder (or in `manifest_dir`) and which holds a journal of repair run `run_id`.
    A hint for `restore --run ID` with no dataset named: the journal itself is verified there."""
    if not plain_run_id(run_id):
        return []
    folders = [Path(manifest_dir)] if manifest_dir is not None else user_dirs.dataset_dirs()
    out = []
    for folder in folders:
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.endswith(".groups.json"))
        except OSError:
            continue
        for n in names:
            try:
                roots = Manifest.load(folder, n[:-5]).roots
            except ManifestError:
                continue
            if holds_run(roots.values(), run_id) and roots not in out:
                out.append(roots)
    return out
