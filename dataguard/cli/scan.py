"""`dataguard scan`: validate raw and preprocessed datasets, record the manifest."""
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
    p = sub.add_parser("scan", help="validate raw and preprocessed data, record a blake3 manifest",
                       description="Validate nnU-Net raw and preprocessed datasets. Every .npz member is "
                       "inflated and CRC-checked, every .b2nd chunk decompressed, every .pkl read with a "
                       "restricted unpickler. Files unchanged since the last scan (same size, mtime, "
                       "inode) are not read again: their recorded results are reused.")
    add_target_args(p)
    add_output_args(p)
    p.add_argument("--full", action="store_true", help="re-read every file, ignore recorded results")
    p.set_defaults(func=cmd_scan)


def cmd_scan(args) -> int:
    select, ignore = split_codes(args.select), split_codes(args.ignore)
    ws = workspace(args)
    prog = progress(args)
    with prog or contextlib.nullcontext():
        result = ws.scan(full=args.full, select=select, ignore=ignore,
                         on_progress=prog.update if prog else None)
    return render(result, args)
