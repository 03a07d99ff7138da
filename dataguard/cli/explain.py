"""`dataguard explain`: what a finding code means and how it is fixed."""
from __future__ import annotations

from ..findings import catalogue
from .common import ExitCode, UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="print what a finding code means and how it is fixed")
    p.add_argument("codes", nargs="*", metavar="CODE", help="e.g. DG201; none: list all codes")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args) -> int:

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
