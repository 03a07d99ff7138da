"""Command line: parse → Workspace → render → exit code. No checks live here.

One module per command (scan, verify, explain, doctor, splits, repair, tui, train, logs, submit, evaluate, report, demo), each with
`add_parser(sub)`; common.py holds what they share. Nothing heavy is imported at module
level, so `dataguard --help` stays fast.
"""
from __future__ import annotations

import argparse
import sys

from ..version import __version__
from ..errors import DataguardError
from . import (
    audit,
    demo,
    doctor,
    evaluate,
    explain,
    logs,
    repair,
    report,
    scan,
    splits,
    submit,
    train,
    tui,
    verify,
)
from .common import ExitCode, UsageError, plain  # noqa: F401 - re-exported for scripts
from .render import fit_lines, screen_width

EPILOG = """\
examples:
  dataguard scan $nnUNet_preprocessed/Dataset001_Heart   one preprocessed dataset (+ its raw)
  dataguard scan -d 1                                    dataset 1 via nnUNet_raw/nnUNet_preprocessed
  dataguard scan /data --format json > findings.json     every dataset under /data/nnUNet_*
  dataguard verify -d 1                                  re-hash all files against the manifest
  dataguard explain DG201                                what a finding code means
  dataguard doctor -d 1 --config 3d_fullres              versions, env vars, RAM, /dev/shm; the -np that fits
  dataguard splits show -d 1                             cross-validation folds x labels (and rebalance)
  dataguard repair -d 1 --dry-run                        plan fixes (quarantine, rebuild cases from raw)
  dataguard restore -d 1                                 undo the latest repair, byte for byte
  dataguard train 1 2d 0 --epochs 80 --patience 20       gate, then train with real epoch control
  dataguard logs $nnUNet_results/Dataset001_Heart        per-label Dice, collapses, wasted epochs
  dataguard submit -d 1 --images imagesTs -o sub.zip --model 2d --model 3d_fullres
                                                         predict, ensemble, verify, zip
  dataguard evaluate -d 1 --worst 5                      per-label cross-validation, honest
  dataguard ensemble suggest -d 1 --model 2d --model 3d_fullres -o w.json
  dataguard audit -d 1                                   which annotations look wrong, ranked
  dataguard report -d 1 -o report.html                   one HTML page: data, folds, training, CV
  dataguard demo                                         build a broken demo dataset and scan it

exit codes: 0 clean, 1 findings at/above --fail-on, 2 usage error, 3 internal error
"""


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="dataguard",
        description="Find, explain and fix broken nnU-Net v2 data before it costs a training run.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dataguard {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")


    for command in (scan, verify, explain, doctor, splits, repair, tui, train, logs, submit, evaluate, audit, report,
                    demo):
        command.add_parser(sub)
    _fit_help(parser)
    return parser


class FittingHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs keep their own line breaks and layout (example tables), but a
    line wider than the terminal is wrapped at words: an example's comment goes under its
    command, indented; other text continues under its own indentation. Nothing is cut."""

    def _fill_text(self, text, width, indent):
        import re
        import textwrap

        out = []
        for line in text.splitlines():
            if len(indent) + len(line) <= width:
                out.append(indent + line)
                continue
            lead = line[: len(line) - len(line.lstrip())]
            example = re.match(r"^(\s+)(\S.*?)\s{2,}(\S.*)$", line)
            if example:                  # "  dataguard scan -d 1      what it does"
                first, cmd, comment = example.groups()
                pieces = [(first + cmd, first + "    "), (first + "    " + comment, first + "    ")]
            elif len(lead) > width // 3:     # a comment column's continuation: under its command
                pieces = [("      " + line.strip(), "      ")]
            else:
                pieces = [(line, lead + "    " if lead else "")]
            for text_, cont in pieces:
                out.extend(textwrap.wrap(text_, width=max(20, width - len(indent)), initial_indent=indent,
                                         subsequent_indent=indent + cont, break_long_words=False,
                                         break_on_hyphens=False, drop_whitespace=True))
        return "\n".join(out)


def _fit_help(parser: argparse.ArgumentParser) -> None:
    """Every parser and subparser formats its help with FittingHelpFormatter (80 columns)."""
    parser.formatter_class = FittingHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _fit_help(sub)


SIGPIPE_EXIT = 128 + 13          # what a shell reports for a writer its reader left (`yes | head`)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a reader that went away (`| head`) ends it quietly, for every command."""
    was_pipe = _is_pipe(sys.stdout)
    try:
        code = _main(argv)
        sys.stdout.flush()          # inside the guard: a closed pipe shows here, not at exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return SIGPIPE_EXIT
    except SystemExit as e:
        # rich's Console.on_broken_pipe points stdout at devnull and raises SystemExit(1):
        # that 1 would read as "findings" when the reader of the pipe merely left
        if e.code == 1 and was_pipe and _is_devnull(sys.stdout):
            return SIGPIPE_EXIT
        if e.code in (0, None):            # argparse's exit after --help: was it read?
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                _stdout_to_devnull()
                return SIGPIPE_EXIT
            if _reader_left(sys.stdout):
                _stdout_to_devnull()
                return SIGPIPE_EXIT
        raise
    if code != SIGPIPE_EXIT and _reader_left(sys.stdout):
        # the output fitted the pipe buffer, so no write failed, but the reader went away
        # (`| head -1`): say so as `yes | head -1` does, not "clean" or "findings"
        _stdout_to_devnull()
        return SIGPIPE_EXIT
    return code


READER_GRACE_S = 0.25       # how long a pipe's reader gets to read what is left in it ...
HANGUP_GRACE_S = 0.05       # ... and then to close it (head exits right after its read)


def _reader_left(stream) -> bool:
    """True when `stream` is a pipe whose reader has gone, asked at the end of a command.

    A write into a pipe succeeds as long as the pipe buffer has room, whatever the reader does;
    only poll() tells that the read end is closed (POLLERR). A reader such as `head -1` reads
    and then exits a moment after we wrote, so wait (bounded) while the pipe still holds unread
    bytes, then briefly for the hang-up. A reader that stays (a terminal, a file, `| less`,
    `| cat`, a test's capture) costs at most HANGUP_GRACE_S, and only on a pipe."""
    import select
    import time

    if not _is_pipe(stream):
        return False
    try:
        fd = stream.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
    except (AttributeError, OSError, ValueError):
        return False

    def gone(timeout_s: float) -> bool:
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(int(timeout_s * 1000)))

    deadline = time.monotonic() + READER_GRACE_S
    while _unread(fd) and time.monotonic() < deadline:
        if gone(0.01):
            return True
    return gone(HANGUP_GRACE_S)


def _is_pipe(stream) -> bool:
    import os
    import stat

    try:
        return stat.S_ISFIFO(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def _is_devnull(stream) -> bool:
    import os

    try:
        return os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))
    except (AttributeError, OSError, ValueError):
        return False


def _unread(fd: int) -> int:
    """Bytes written to the pipe `fd` that its reader has not read yet (0 where unknown)."""
    try:
        import array
        import fcntl
        import termios

        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf, True)
        return buf[0]
    except (ImportError, OSError, AttributeError):
        return 0


def _closed(stream) -> bool:
    """True when `stream`'s reader is gone (poll says POLLERR/POLLHUP), or when that cannot be
    asked (no file descriptor, no poll): then the error is trusted to be about stdout."""
    import select

    try:
        fd = stream.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return True


def _stdout_to_devnull() -> None:
    """Python's note on SIGPIPE: point stdout at devnull, so the interpreter's final flush of
    what is still buffered has nowhere to fail (and prints no 'Exception ignored')."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):     # no descriptor (a test's capture): swap the object
        sys.stdout = open(os.devnull, "w")


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return ExitCode.USAGE

    try:
        return int(args.func(args))
    except DataguardError as e:

        print(_fit(f"dataguard: error: {plain(e)}"), file=sys.stderr)
        return getattr(e, "exit_code", ExitCode.USAGE)     # NnUNetError: 1, nnU-Net itself failed
    except KeyboardInterrupt:
        print("dataguard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if _closed(sys.stdout):
            raise                                   # main() ends quietly
        return _internal(e, args)                   # someone else's pipe (a Dask socket): a bug
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, exit 3
        return _internal(e, args)


def _fit(message: str) -> str:
    """An error message at the terminal's width (a terminal, or $COLUMNS set), wrapped at words,
    continuation lines indented; into a pipe without $COLUMNS (a log file) one line, for grep."""
    import os

    if not (os.environ.get("COLUMNS") or sys.stderr.isatty()):
        return message
    return fit_lines(message, screen_width(), "  ")


def _internal(e: Exception, args) -> int:
    if args.debug:
        raise e

    print(_fit(plain(f"dataguard: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)")),
          file=sys.stderr)
    return ExitCode.INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
