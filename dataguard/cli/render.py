"""Render a ScanResult as a rich table, JSON (stable schema) or CSV. Stdout is data."""
from __future__ import annotations

import csv
import json
import sys
from typing import TYPE_CHECKING, TextIO

from ..findings import FIELDS, Severity, printable

if TYPE_CHECKING:
    from ..engine.scanner import ScanResult

SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def summary_line(result: ScanResult) -> str:
    s = result.summary()
    parts = [f"{s['errors']} error{'s' * (s['errors'] != 1)}",
             f"{s['warnings']} warning{'s' * (s['warnings'] != 1)}"]
    if s["info"]:
        parts.append(f"{s['info']} info")
    names = ", ".join(d.name for d in result.datasets) or "no dataset"
    mb = s["bytes_checked"] / 1e6
    return (f"{', '.join(parts)} in {s['files']} files of {names} "
            f"({s['checked']} read, {mb:.1f} MB; {s['reused']} unchanged, from the manifest) "
            f"in {s['seconds']:.2f} s")


def render_json(result: ScanResult, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(result.to_dict(), out, indent=2)
    out.write("\n")


def render_csv(result: ScanResult, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    w = csv.DictWriter(out, fieldnames=list(FIELDS),
                       lineterminator="\n")
    w.writeheader()
    for f in result.findings:
        w.writerow({k: ("" if v is None else v) for k, v in f.to_dict().items()})


def render_table(result: ScanResult, console) -> None:
    """Findings per dataset, then the summary line, on `console` (common.console(): coloured on a
    terminal, $COLUMNS wide when piped)."""
    from rich.table import Table
    from rich.text import Text

    by_dataset: dict[str, list] = {}
    for f in result.findings:
        by_dataset.setdefault(f.dataset or "", []).append(f)
    for name, findings in by_dataset.items():
        table = Table(title=Text(printable(name), style="bold"), title_justify="left", header_style="bold")
        for col in ("severity", "code", "case", "path", "message", "fix"):
            table.add_column(col, overflow="fold")
        for f in findings:
            # Text() everywhere: paths and messages may contain [brackets] rich would parse;
            # printable(): a newline or escape sequence in a name or message must not break the row
            table.add_row(Text(str(f.severity), style=SEVERITY_STYLE[f.severity]), f.code,
                          Text(printable(f.case or "")), Text(printable(f.path)), Text(printable(f.message)),
                          str(f.fix) if f.fix else "")
        console.print(table)
    if not result.findings:
        console.print("[green]No findings.[/]")
    console.print(Text(printable(summary_line(result))))


def render_findings(findings, title: str, console) -> None:
    """One findings table (severity, code, case, path, message, fix) under a title."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(printable(title), style="bold"), title_justify="left", header_style="bold")
    for col in ("severity", "code", "case", "path", "message", "fix"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(Text(str(f.severity), style=SEVERITY_STYLE[f.severity]), f.code, Text(printable(f.case or "")),
                      Text(printable(f.path)), Text(printable(f.message)), str(f.fix) if f.fix else "")
    console.print(table)
