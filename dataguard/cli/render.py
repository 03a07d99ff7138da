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


# a cell a spreadsheet reads as a formula (or DDE command) when it starts with one of these
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """One CSV cell as every CSV writer of the CLI writes it: names from someone else's files
    printable (control characters, ESC and line breaks as backslash escapes, so `cat out.csv`
    runs no escape sequence), and text a spreadsheet would run as a formula (`=cmd|...`,
    `+`, `-`, `@`, tab, CR first) prefixed with `'`. None is empty; numbers stay numbers. For the
    face only: never read an escaped name back as a path."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = printable(str(value))
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_row(values) -> list:
    """A row of `csv_cell`s, for csv.writer."""
    return [csv_cell(v) for v in values]


def render_csv(result: ScanResult, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    w = csv.DictWriter(out, fieldnames=list(FIELDS),
                       lineterminator="\n")
    w.writeheader()
    for f in result.findings:
        w.writerow({k: csv_cell(v) for k, v in f.to_dict().items()})


NARROW = 100      # below this many columns the table folds case and fix into the message cell


def message_cell(f, narrow: bool = False):
    """The message of a finding as a rich Text with its help line (if any) under it, dim:
    "help: mv labelsTr/case_0000.nii.gz labelsTr/case.nii.gz"; on a narrow console also the
    case (when the path does not show it) and the fix, so the message keeps half the width."""
    from rich.text import Text

    cell = Text(printable(f.message))
    extra = [("help", f.help)]
    if narrow:
        extra += [("case", f.case if f.case and f.case not in f.path else None), ("fix", f.fix)]
    for name, value in extra:
        if value:
            cell.append("\n")
            cell.append(f"{name}: {printable(str(value))}", style="dim")
    return cell


def _path_lines(path: str, width: int) -> str:
    """A path broken after its slashes into lines of at most `width` (a long part is left to
    the table's folding): 'preprocessed/\nnnUNetPlans_3d_fullres/\n._case_0.npz'."""
    lines, line = [], ""
    parts = []
    for part in path.replace("/", "/\0").split("\0"):
        # a name longer than the column breaks after its underscores (heart_002_/0000.nii.gz),
        # not in the middle of a word
        parts += part.replace("_", "_\0").split("\0") if len(part) > width else [part]
    for part in parts:
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join(lines + [line])


def _table(title: str, findings, console):
    """One findings table: severity, code, case, path, message (+ help), fix; on a console
    narrower than NARROW: severity, code, path, message (+ help, case, fix)."""
    from rich.table import Table
    from rich.text import Text

    width = getattr(console, "width", None) or 80
    narrow = width < NARROW
    path_width = max(16, width // 4)
    table = Table(title=Text(printable(title), style="bold"), title_justify="left", header_style="bold")
    cols = ("severity", "code", "path", "message") if narrow else ("severity", "code", "case", "path", "message", "fix")
    for col in cols:
        table.add_column(col, overflow="fold", max_width=path_width if narrow and col == "path" else None)
    for f in findings:
        # Text() everywhere: paths and messages may contain [brackets] rich would parse;
        # printable(): a newline or escape sequence in a name or message must not break the row
        sev = Text(str(f.severity), style=SEVERITY_STYLE[f.severity])
        if narrow:
            table.add_row(sev, f.code, Text(_path_lines(printable(f.path), path_width)), message_cell(f, True))
        else:
            table.add_row(sev, f.code, Text(printable(f.case or "")), Text(printable(f.path)), message_cell(f),
                          str(f.fix) if f.fix else "")
    return table


def render_table(result: ScanResult, console) -> None:
    """Findings per dataset, then the summary line, on `console` (common.console(): coloured on a
    terminal, $COLUMNS wide when piped)."""
    from rich.text import Text

    by_dataset: dict[str, list] = {}
    for f in result.findings:
        by_dataset.setdefault(f.dataset or "", []).append(f)
    for name, findings in by_dataset.items():
        console.print(_table(name, findings, console))
    if not result.findings:
        console.print("[green]No findings.[/]")
    console.print(Text(printable(summary_line(result))))


def render_findings(findings, title: str, console) -> None:
    """One findings table (severity, code, case, path, message, fix) under a title."""
    console.print(_table(title, findings, console))
