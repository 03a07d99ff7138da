"""What every command shares: target/output arguments, the Workspace, progress, rendering.

Nothing heavy is imported at module level: `dataguard --help` builds every parser.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import UsageError
from ..findings import ExitCode, catalogue, printable, verdict
from ..workspace import Workspace
from . import render as report
from .progress import ByteProgress

__all__ = ["ExitCode", "UsageError", "add_target_args", "add_output_args", "split_codes", "progress",
           "console", "plain_console", "targets", "workspace", "render", "note", "verdict"]


DEFAULT_MANIFEST_DIR = None    # engine.manifest.DEFAULT_DIR: this user's state folder, one folder per dataset
EXECUTOR_ENV = "DATAGUARD_EXECUTOR"          # engine.executors.ENV, likewise


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="nnUNet_raw / nnUNet_preprocessed root, a DatasetXXX_Name folder, a folder "
                        "holding nnUNet_raw/ and nnUNet_preprocessed/, or a dataset id. "
                        "Default: the datasets under $nnUNet_raw and $nnUNet_preprocessed")
    p.add_argument("-d", "--dataset", action="append", default=[], metavar="ID",
                   help="dataset id or name (1, 001, Dataset001_Heart), resolved via the nnU-Net "
                        "environment variables; repeatable")
    add_engine_args(p)
    add_group_args(p)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """--manifest-dir, -j, --executor: what every command that scans takes, one way."""
    p.add_argument("--manifest-dir", type=Path, default=DEFAULT_MANIFEST_DIR, metavar="DIR",
                   help="keep manifests here, one <DatasetName>.json each (default: a folder per "
                        "dataset in this user's state folder, $DATAGUARD_STATE_DIR or "
                        "~/.local/state/dataguard: the same from any working folder)")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="parallel file readers (default: all cores)")
    p.add_argument("--executor", default=None, metavar="local|dask://HOST:PORT",
                   help="where file checks run: this machine (local, the default) or a Dask cluster "
                        "whose workers see the same paths; default $DATAGUARD_EXECUTOR or local")


def add_group_args(p: argparse.ArgumentParser) -> None:
    """--groups / --group-regex: which cases are one patient (remembered per dataset)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--groups", type=Path, default=None, metavar="FILE",
                   help="case -> patient table (CSV `case,patient` or JSON); remembered for the dataset "
                        "in the manifest folder, so later commands use it without the flag (DG506)")
    g.add_argument("--group-regex", default=None, metavar="RE",
                   help="patient from each case id by a regular expression, e.g. 'patient(\\d+)_' "
                        "(the first group, else the whole match); remembered like --groups")


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default=None,
                   help="table (default; plain text without colour when piped), json (stable schema, "
                        "only JSON on stdout) or csv")
    p.add_argument("--select", action="append", default=[], metavar="CODES",
                   help="only these codes or prefixes, comma-separated (DG2, DG101); checks that "
                        "cannot emit them do not run")
    p.add_argument("--ignore", action="append", default=[], metavar="CODES",
                   help="never report these codes or prefixes, comma-separated")
    p.add_argument("--fail-on", choices=("error", "warning", "info", "never"), default="error",
                   help="exit 1 when a finding of this severity or worse remains (default: error)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def split_codes(values: list[str]) -> list[str]:
    """`--select DG2,DG101 --select DG5` -> ["DG2", "DG101", "DG5"]; unknown codes are a usage error."""
    out = [c.strip().upper() for v in values for c in v.split(",") if c.strip()]
    known = catalogue()
    for c in out:
        if not any(code.startswith(c) for code in known):
            raise UsageError(f"unknown finding code or prefix: {c} (see `dataguard explain`)")
    return out


def targets(args) -> list[str] | None:
    t = list(getattr(args, "paths", None) or []) + list(getattr(args, "dataset", None) or [])
    return t or None


def workspace(args, target_list: list[str] | None = None):
    """The one way a command builds its Workspace: the datasets it names (or `target_list`),
    and --manifest-dir, -j and --executor when the command has them."""
    if jobs := getattr(args, "jobs", None):
        if jobs < 1:
            raise UsageError("-j/--jobs must be at least 1")
    ws = Workspace(target_list if target_list is not None else targets(args),
                   manifest_dir=getattr(args, "manifest_dir", DEFAULT_MANIFEST_DIR), jobs=getattr(args, "jobs", None),
                   executor=getattr(args, "executor", None) or os.environ.get(EXECUTOR_ENV) or "local",
                   on_note=note)
    file, regex = getattr(args, "groups", None), getattr(args, "group_regex", None)
    if (file is not None or regex is not None) and ws.targets:      # train names its dataset itself
        for ds in ws.datasets:
            ws.dataset(ds.name).splits.set_groups(file=file, regex=regex)
    return ws


def progress(args):
    """A rich progress bar on stderr, or None when not wanted / not a terminal."""
    if getattr(args, "no_progress", False) or not sys.stderr.isatty():
        return None

    return ByteProgress()


PIPE_COLUMNS = 80      # width of tables written to a pipe or a file when $COLUMNS is unset


def console():
    """A rich console for stdout: colour on a terminal, else `plain_console()`."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else plain_console()


def plain_console():
    """No colour, as wide as $COLUMNS (default 80): a pipe has no width of its own, and the
    reader of `| less` or a log file has a terminal like everyone else's."""
    from rich.console import Console

    return Console(width=pipe_columns(), no_color=True, highlight=False)


def pipe_columns() -> int:
    """$COLUMNS when it is a positive integer, else PIPE_COLUMNS."""
    import os

    value = os.environ.get("COLUMNS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else PIPE_COLUMNS


def note(msg: str) -> None:
    """One message on stderr, each line printable (a name's control characters as escapes)."""
    print(plain(msg), file=sys.stderr)


def plain(msg) -> str:
    """Text for a terminal: control characters of names as backslash escapes, line breaks kept."""
    return "\n".join(printable(line) for line in str(msg).split("\n"))


def shown(value) -> str:
    """A name or path inside a rich markup string: escaped, so `[bold]` or `[link=...]` in a
    file name prints as those characters, and printable, so no escape sequence gets through."""
    from rich.markup import escape


    return escape(printable(str(value)))


def render(result, args) -> int:
    """Findings to stdout in the chosen format, summary to stderr, exit code by --fail-on."""
    fmt = args.format or "table"
    if fmt == "json":
        report.render_json(result)
    elif fmt == "csv":
        report.render_csv(result)
    else:
        report.render_table(result, console())
    if fmt != "table":
        print(report.summary_line(result), file=sys.stderr)
    if getattr(result, "cancelled", False):
        note("scan cancelled: findings are incomplete")
    for why in getattr(getattr(result, "stats", None), "not_recorded", ()):
        note(f"warning: manifest not written ({why}); the next scan reads every file again "
             f"(use --manifest-dir DIR for a folder you can write)")
    return verdict(result, args.fail_on)
