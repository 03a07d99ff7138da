"""Render a ScanResult as a rich table, JSON (stable schema) or CSV. Stdout is data."""
from __future__ import annotations

import csv
import json
import sys
from typing import TYPE_CHECKING, TextIO

from ..findings import FIELDS, Severity, name_breaks, path_lines, printable

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


def screen_width() -> int:
    """Columns for text on stderr or stdout: $COLUMNS, the terminal's, else 80."""
    import shutil

    return shutil.get_terminal_size(fallback=(80, 24)).columns or 80


def fit_lines(text: str, width: int, indent: str = "") -> str:
    """`text` in lines of at most `width`, wrapped at spaces, continuation lines indented by
    `indent`; existing line breaks are kept. A word longer than a line (a long path) is never
    cut: it stands whole and alone on its line, so it can still be copied."""
    import textwrap

    out: list[str] = []
    for para in text.split("\n"):
        if len(para) <= width:
            out.append(para)
            continue
        lead = para[: len(para) - len(para.lstrip())]
        out.extend(textwrap.wrap(para, width=width, subsequent_indent=lead + indent, break_long_words=False,
                                 break_on_hyphens=False))
    return "\n".join(out)


def command_lines(words: list[str], width: int, indent: str = "  ") -> str:
    """A shell command that fits `width`: quoted words, continued with ` \\` onto indented
    lines where it is too long, so it still pastes into a shell as one command."""
    import shlex

    quoted = [shlex.quote(w) for w in words]
    lines, line = [], ""
    for w in quoted:
        if line and len(line) + 1 + len(w) + 2 > width:
            lines.append(line + " \\")
            line = indent + "    " + w
        else:
            line = f"{line} {w}" if line else indent + w
    lines.append(line)
    return "\n".join(lines)


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
    """A path broken after its slashes (and a long name after its underscores) into lines of
    at most `width`: findings.path_lines, shared with the repair plan, the quarantine list and
    the TUI."""
    return path_lines(path, width)


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


def _by_dataset(items) -> dict[str, list]:
    out: dict[str, list] = {}
    for it in items:
        out.setdefault(it.dataset or "", []).append(it)
    return out


def _codes_cell(codes: str):
    """One code per line ("DG201\nDG205"): a code is never broken (other text as it is)."""
    from rich.text import Text

    parts = [c.strip() for c in codes.split(",") if c.strip()]
    if parts and all(len(c) <= 6 and c[:2] == "DG" for c in parts):
        return Text("\n".join(parts))
    return Text(printable(codes) or "-")


def plan_tables(plan, title: str, console) -> None:
    """The repair plan as `scan` shows findings: a heading, then one table per dataset (codes,
    target, action, files touched). On a console narrower than NARROW the files touched go
    under the action (when they are more than the target itself) and every path breaks after
    its slashes and underscores, never inside a name."""
    from rich.table import Table
    from rich.text import Text

    width = getattr(console, "width", None) or 80
    narrow = width < NARROW
    path_width = max(16, width // 3)
    action_width = max(20, width - path_width - 5 - 10)     # codes 5, borders and padding 10
    console.print(Text(printable(title), style="bold"))
    for name, actions in _by_dataset(plan).items():
        table = Table(title=Text(printable(name), style="bold"), title_justify="left", header_style="bold")
        table.add_column("codes", no_wrap=True, min_width=5)
        table.add_column("target", overflow="fold", max_width=path_width if narrow else None)
        table.add_column("action", overflow="fold")
        if not narrow:
            table.add_column("files touched", overflow="fold")
        for a in actions:
            action = Text(name_breaks(printable(a.describe()), action_width)) if not a.blocked else \
                Text(name_breaks(f"no action: {printable(a.blocked)}", action_width), style="yellow")
            files = [printable(f) for f in a.files]
            if narrow:
                target = Text(path_lines(printable(a.target), path_width))
                if files and files != [printable(a.target)]:
                    action.append("\nfiles touched:", style="dim")
                    for f in files:
                        action.append("\n" + path_lines(f, action_width), style="dim")
                table.add_row(_codes_cell(a.codes), target, action)
            else:
                table.add_row(_codes_cell(a.codes), Text(printable(a.target)), action,
                              Text("\n".join(files) or "-"))
        console.print(table)


def quarantine_tables(held, console) -> None:
    """`quarantine list`: one table per dataset, rows by repair run (the run id once per run,
    never broken), original path, where it is held, size and reason. On a narrow console the
    held-at path goes under the original one, and paths break only after slashes/underscores."""
    from rich.table import Table
    from rich.text import Text

    width = getattr(console, "width", None) or 80
    narrow = width < NARROW
    run_width = max((len(h.run_id) for h in held), default=3)
    for name, rows in _by_dataset(held).items():
        table = Table(title=Text(printable(name), style="bold"), title_justify="left", header_style="bold",
                      show_lines=narrow)      # a rule between rows of several lines each
        table.add_column("run", no_wrap=True, min_width=run_width)
        # run, bytes (<= 12), reason (5) and 13 of borders and padding: the rest is the path's
        path_width = max(16, width - run_width - 12 - 5 - 13)
        table.add_column("original path" + (" / held at" if narrow else ""), overflow="fold")
        if not narrow:
            table.add_column("held at", overflow="fold")
        table.add_column("bytes", justify="right", no_wrap=True)
        table.add_column("reason", min_width=5)
        last_run = None
        for h in rows:
            run = printable(h.run_id) if h.run_id != last_run else ""
            last_run = h.run_id
            if narrow:
                where = Text(path_lines(printable(h.path), path_width))
                where.append("\n→ " + path_lines(printable(h.stored), path_width - 2).replace("\n", "\n  "),
                             style="dim")
                table.add_row(run, where, str(h.size), _codes_cell(h.reason))
            else:
                table.add_row(run, Text(printable(h.path)), Text(printable(h.stored)), str(h.size),
                              _codes_cell(h.reason))
        console.print(table)
