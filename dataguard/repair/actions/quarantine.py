"""quarantine: move a file (an orphan case's files, a __MACOSX folder's content) aside."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ...checks.files import config_file_kind
from ...findings import ActionKind, display
from ...fsio import resolve_display
from .base import ApplyContext, Outcome, no_payload, split_target

KIND = ActionKind.QUARANTINE
ORDER = 1
prepare = no_payload


def describe(a) -> str:
    return "move to quarantine"


def files(a, view) -> list[str]:
    if a.config is None:
        return [a.target]
    if view is None:
        return []
    prefix = f"preprocessed/{a.config}/"
    return sorted(t.rel for t in view.tasks
                  if t.case == a.case and t.where == "config" and t.rel.startswith(prefix)
                  and t.rel in view.results)


def run(a, ctx: ApplyContext) -> Outcome:
    part, shown = split_target(a.target)
    j = ctx.journals[part]
    # the finding's path is escaped for the screen: the real name is found by listing
    rel = resolve_display(j.root, shown)
    if a.findings and a.findings[0].code == "DG208":       # orphan case: every file of it
        folder = j.root / rel.rsplit("/", 1)[0]
        found = [p for p in sorted(folder.iterdir()) if config_file_kind(p.name)[1] == a.case]
        rels = [p.relative_to(j.root).as_posix() for p in found]
    elif stat.S_ISDIR(os.lstat(j.root / rel).st_mode):     # a __MACOSX folder: every file in it
        rels = sorted(files_below(j.root, rel))
    else:
        rels = [rel]
    moved = []
    for r in rels:
        if os.path.lexists(j.root / r):
            j.quarantine_file(r, reason=a.codes)
            moved.append(f"{part}/{display(r)}")
    return Outcome(a, True, f"{len(moved)} file(s) moved to {j.quarantine.relative_to(j.root)}", moved)


def files_below(root: Path, rel: str) -> list[str]:
    """Relative paths of everything but folders below root/rel: files, links and special files
    themselves (lstat; no link is followed into)."""
    out, stack = [], [rel]
    while stack:
        d = stack.pop()
        with os.scandir(root / d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(f"{d}/{e.name}")
                else:
                    out.append(f"{d}/{e.name}")
    return out
