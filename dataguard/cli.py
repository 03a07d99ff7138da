"""Command line: parse → call the engine → render → exit code. No checks live here."""
from __future__ import annotations

import argparse
import contextlib
import enum
import sys
from pathlib import Path


class ExitCode(enum.IntEnum):
    CLEAN = 0
    FINDINGS = 1      # findings at or above --fail-on, or a gate refused
    USAGE = 2
    INTERNAL = 3


EPILOG = """\
examples:
  dataguard scan $nnUNet_preprocessed/Dataset001_Heart   one preprocessed dataset (+ its raw)
  dataguard scan -d 1                                    dataset 1 via nnUNet_raw/nnUNet_preprocessed
  dataguard scan /data --format json > findings.json     every dataset under /data/nnUNet_*
  dataguard verify -d 1                                  re-hash all files against the manifest
  dataguard explain DG201                                what a finding code means
  dataguard splits show -d 1                             cross-validation folds x labels (and rebalance)
  dataguard repair -d 1 --dry-run                        plan fixes (quarantine, rebuild cases from raw)
  dataguard restore -d 1                                 undo the latest repair, byte for byte
  dataguard demo                                         build a broken demo dataset and scan it

exit codes: 0 clean, 1 findings at/above --fail-on, 2 usage error, 3 internal error
"""


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="nnUNet_raw / nnUNet_preprocessed root, a DatasetXXX_Name folder, a folder "
                        "holding nnUNet_raw/ and nnUNet_preprocessed/, or a dataset id. "
                        "Default: the datasets under $nnUNet_raw and $nnUNet_preprocessed")
    p.add_argument("-d", "--dataset", action="append", default=[], metavar="ID",
                   help="dataset id or name (1, 001, Dataset001_Heart), resolved via the nnU-Net "
                        "environment variables; repeatable")
    p.add_argument("--manifest-dir", type=Path, default=Path("manifests"),
                   help="where manifests live, one <DatasetName>.json each (default: ./manifests)")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="worker processes for reading files (default: all cores)")


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default=None,
                   help="table (default; plain text without colour when piped), json (stable schema, "
                        "only JSON on stdout) or csv")
    p.add_argument("--select", action="append", default=[], metavar="CODES",
                   help="only report these codes or prefixes, comma-separated (DG2, DG101)")
    p.add_argument("--ignore", action="append", default=[], metavar="CODES",
                   help="never report these codes or prefixes, comma-separated")
    p.add_argument("--fail-on", choices=("error", "warning", "info", "never"), default="error",
                   help="exit 1 when a finding of this severity or worse remains (default: error)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="dataguard",
        description="Find, explain and fix broken nnU-Net v2 data before it costs a training run.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dataguard {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("scan", help="validate raw and preprocessed data, record a blake3 manifest",
                       description="Validate nnU-Net raw and preprocessed datasets. Every .npz member is "
                       "inflated and CRC-checked, every .b2nd chunk decompressed, every .pkl read with a "
                       "restricted unpickler. Files unchanged since the last scan (same size, mtime, "
                       "inode) are not read again: their recorded results are reused.")
    _add_target_args(p)
    _add_output_args(p)
    p.add_argument("--full", action="store_true", help="re-read every file, ignore recorded results")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("verify", help="re-hash every file and compare with the manifest (DG701-DG703)",
                       description="Re-hash every file of the datasets and report content that changed "
                       "(DG701, also when size and mtime did not), files that are gone (DG702) and new "
                       "files (DG703) relative to the manifest written by the last scan.")
    _add_target_args(p)
    _add_output_args(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("explain", help="print what a finding code means and how it is fixed")
    p.add_argument("codes", nargs="*", metavar="CODE", help="e.g. DG201; none: list all codes")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", help="build a small broken nnU-Net dataset with the real nnunetv2 and scan it",
                       description="Create synthetic cardiac MRI-like cases, preprocess them with nnunetv2 "
                       "(2d), inject the classic faults (AppleDouble ._ files, .DS_Store, a zlib-corrupt "
                       ".npz in a legacy-layout copy, a truncated .b2nd, a missing .pkl) and scan.")
    p.add_argument("dir", nargs="?", type=Path, default=Path("dataguard-demo"),
                   help="where to build it (default: ./dataguard-demo)")
    p.add_argument("--cases", type=int, default=10, help="number of training cases (default: 10)")
    p.add_argument("--force", action="store_true", help="rebuild even if DIR already holds a demo")
    p.add_argument("--format", choices=("table", "json", "csv"), default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    from .cli_splits import add_parser as add_splits_parser

    add_splits_parser(sub)

    from .cli_repair import add_parser as add_repair_parser

    add_repair_parser(sub)
    return parser


def _split_codes(values: list[str]) -> list[str]:
    from .findings import catalogue

    out = [c.strip().upper() for v in values for c in v.split(",") if c.strip()]
    known = catalogue()
    for c in out:
        if not any(code.startswith(c) for code in known):
            raise UsageError(f"unknown finding code or prefix: {c} (see `dataguard explain`)")
    return out


class UsageError(Exception):
    pass


def _progress(args):
    """A rich progress bar on stderr, or None when not wanted / not a terminal."""
    if getattr(args, "no_progress", False) or not sys.stderr.isatty():
        return None
    from .progress import ByteProgress

    return ByteProgress()


def _render(result, args) -> int:
    from . import report
    from .findings import Severity

    fmt = args.format or "table"
    if fmt == "json":
        report.render_json(result)
    elif fmt == "csv":
        report.render_csv(result)
    else:
        report.render_table(result)
    if fmt != "table":
        print(report.summary_line(result), file=sys.stderr)
    if args.fail_on == "never":
        return ExitCode.CLEAN
    worst = result.worst()
    return ExitCode.FINDINGS if worst is not None and worst >= Severity.parse(args.fail_on) else ExitCode.CLEAN


def _targets(args) -> list[str] | None:
    t = list(args.paths) + list(args.dataset)
    return t or None


def cmd_scan(args) -> int:
    from .scanner import scan

    select, ignore = _split_codes(args.select), _split_codes(args.ignore)
    prog = _progress(args)
    with prog or contextlib.nullcontext():
        result = scan(_targets(args), manifest_dir=args.manifest_dir, full=args.full, jobs=args.jobs,
                      select=select, ignore=ignore, on_progress=prog.update if prog else None)
    return _render(result, args)


def cmd_verify(args) -> int:
    from .verifier import verify

    select, ignore = _split_codes(args.select), _split_codes(args.ignore)
    prog = _progress(args)
    with prog or contextlib.nullcontext():
        result = verify(_targets(args), manifest_dir=args.manifest_dir, jobs=args.jobs,
                        select=select, ignore=ignore, on_progress=prog.update if prog else None)
    return _render(result, args)


def cmd_explain(args) -> int:
    from .findings import catalogue

    cat = catalogue()
    if not args.codes:
        for info in cat.values():
            print(f"{info.code}  {info.severity_text.split()[0]:<8} {info.what.replace('`', '')[:100]}")
        return ExitCode.CLEAN
    for i, code in enumerate(args.codes):
        info = cat.get(code.strip().upper())
        if info is None:
            raise UsageError(f"unknown finding code: {code} (run `dataguard explain` for the list)")
        print(("\n" if i else "") + info.explain())
    return ExitCode.CLEAN


def cmd_demo(args) -> int:
    from .demo import run_demo

    args.fail_on = "never"   # the demo's findings are the point, not a failure
    prog = _progress(args)
    result = run_demo(args.dir, n_cases=args.cases, force=args.force,
                      log=lambda msg: print(msg, file=sys.stderr), progress=prog)
    return _render(result, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE
    from .layout import LayoutError
    from .manifest import ManifestError
    from .repair.lock import LockedError
    from .repair.restore import RestoreError

    try:
        return int(args.func(args))
    except (UsageError, LayoutError, ManifestError, LockedError, RestoreError) as e:
        print(f"dataguard: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("dataguard: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, exit 3
        if args.debug:
            raise
        print(f"dataguard: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)",
              file=sys.stderr)
        return ExitCode.INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
