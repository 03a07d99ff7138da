"""`dataguard explain`: what a finding code means and how it is fixed."""
from __future__ import annotations

import textwrap

from ..findings import catalogue
from .common import ExitCode, UsageError

MAX_WIDTH = 100       # prose reads badly wider than this, even on a wide terminal


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="print what a finding code means and how it is fixed")
    p.add_argument("codes", nargs="*", metavar="CODE", help="e.g. DG201; none: list all codes")
    p.set_defaults(func=cmd_explain)


def text_width() -> int:
    """The terminal's width ($COLUMNS when set, 80 on a pipe), at most MAX_WIDTH."""
    import shutil

    return max(40, min(MAX_WIDTH, shutil.get_terminal_size(fallback=(80, 24)).columns))


def cmd_explain(args) -> int:

    cat = catalogue()
    width = text_width()
    if not args.codes:
        # one line per code (grep finds it), cut at a word with "…"; `explain CODE` says it all
        for info in cat.values():
            head = f"{info.code}  {info.severity_text.split()[0]:<8} "
            what = info.what.replace("`", "")
            print(head + textwrap.shorten(what, width=width - len(head), placeholder=" …"))
        return ExitCode.CLEAN
    for i, code in enumerate(args.codes):
        info = cat.get(code.strip().upper())
        if info is None:
            raise UsageError(f"unknown finding code: {code} (run `dataguard explain` for the list)")
        print(("\n" if i else "") + wrap(info.explain(), width))
    return ExitCode.CLEAN


def wrap(text: str, width: int) -> str:
    """Each line of `text` wrapped at words to `width`; a `fix:`/`[severity]` line keeps its
    continuation lines indented under its text. A word longer than the line stays whole."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()))
        if line.startswith("fix: "):
            indent = " " * 5
        elif line.startswith("DG") and "  [" in line:
            indent = " " * (line.index("  [") + 3)
        out.extend(textwrap.wrap(line, width=width, subsequent_indent=indent, break_long_words=False,
                                 break_on_hyphens=False))
    return "\n".join(out)
