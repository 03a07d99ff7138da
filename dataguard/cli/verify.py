"""`dataguard verify`: re-hash every file against the manifest of the last scan."""
from __future__ import annotations

import contextlib

from .common import (
    add_output_args,
    add_target_args,
    progress,
    render,
    split_codes,
    workspace,
)


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="re-hash every file and compare with the manifest (DG701-DG703)",
                       description="Re-hash every file of the datasets and report content that changed "
                       "(DG701, also when size and mtime did not), files that are gone (DG702) and new "
                       "files (DG703) relative to the manifest written by the last scan.")
    add_target_args(p)
    add_output_args(p)
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    select, ignore = split_codes(args.select), split_codes(args.ignore)
    ws = workspace(args)
    prog = progress(args)
    with prog or contextlib.nullcontext():
        result = ws.verify(select=select, ignore=ignore, on_progress=prog.update if prog else None)
    return render(result, args)
