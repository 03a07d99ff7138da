"""Findings: the one data type every check returns and every face renders.

The catalogue of codes is parsed from the packaged copy of FINDINGS.md so that
the documentation and `dataguard explain` can never drift apart.
"""
from __future__ import annotations

import enum
import functools
import re
from dataclasses import asdict, dataclass
from pathlib import Path

# control characters (and Unicode line breaks) would break a table row, a CSV line or a
# terminal: shown as escapes, like the non-UTF-8 bytes. ESC among them, so no escape sequence
# (colours, OSC 8 hyperlinks, cursor moves) from a name reaches a terminal; and the bidi
# overrides and isolates, which would show a name in another order than it has
_CONTROL_ESCAPES = {**{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7f, *range(0x80, 0xa0))},
                    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                    **{c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202a, 0x202f), *range(0x2066, 0x206a))}}


def printable(text: str) -> str:
    """`text` with control characters and line breaks as backslash escapes (one line, no ANSI)."""
    return text.translate(_CONTROL_ESCAPES)


def display(name: str) -> str:
    """A printable, one-line, JSON-safe form of an OS file name (non-UTF-8 bytes as \\xNN,
    newlines and other control characters as \\n, \\xNN)."""
    return printable(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def path_lines(path: str, width: int) -> str:
    """A path broken after its slashes into lines of at most `width`, for a table cell:
    'preprocessed/\nnnUNetPlans_3d_fullres/\n._case_0.npz'. A name that does not fit on the
    line starts a new one; a name longer than `width` breaks after its underscores
    (heart_002_/0000.nii.gz), never in the middle of a word; a piece still longer is left to
    the table's folding. Give it a printable() path."""
    lines, line = [], ""
    for part in path.replace("/", "/\0").split("\0"):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        if len(part) <= width:
            line += part
            continue
        for piece in part.replace("_", "_\0").split("\0"):
            if line and len(line) + len(piece) > width:
                lines.append(line)
                line = ""
            line += piece
    return "\n".join(lines + [line])


def name_breaks(text: str, width: int) -> str:
    """Prose for a table cell of `width` columns: a word (a case or folder name) longer than
    the cell is broken by path_lines (after its slashes and underscores), so the table's
    folding never cuts a name mid-word; the rest is left to the table's word wrapping."""
    return " ".join(path_lines(w, width) if len(w) > width else w for w in text.split(" "))


class Severity(enum.IntEnum):
    """Ordered so that `finding.severity >= Severity.WARNING` reads naturally."""
    INFO = 10
    WARNING = 20
    ERROR = 30

    def __str__(self) -> str:  # "error", as written in JSON and tables
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (use error, warning or info)") from None


class Fix(str, enum.Enum):
    """Repair actions a finding can point to (`dataguard repair` implements them)."""
    QUARANTINE = "quarantine"
    REPREPROCESS = "re-preprocess"
    CAST = "cast"
    REGENERATE_SPLITS = "regenerate-splits"
    REBUILD_ARCHIVE = "rebuild-archive"
    REORIENT = "reorient"

    def __str__(self) -> str:
        return self.value


class ActionKind(str, enum.Enum):
    """What one repair action does: each kind has one registered handler module
    (`dataguard.repair.actions.HANDLERS`); the strings are those of plans and JSON."""
    QUARANTINE = "quarantine"
    REPREPROCESS = "re-preprocess"
    CAST = "cast"
    REORIENT = "reorient"
    REGENERATE_SPLITS = "regenerate-splits"

    def __str__(self) -> str:
        return self.value


FIELDS = ("code", "severity", "dataset", "path", "case", "message", "fix", "help")


@dataclass(frozen=True, order=True)
class Finding:
    """One problem, as data: stable code, where, which case, what, and how to fix."""
    path: str
    code: str
    severity: Severity
    message: str
    case: str | None = None
    fix: Fix | None = None
    dataset: str | None = None      # DatasetXXX_Name; path is relative to its raw/preprocessed part
    help: str | None = None         # one line naming the cause and the fix ("help: ..." under the message)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["severity"] = str(self.severity)
        d["fix"] = None if self.fix is None else str(self.fix)
        return {k: d[k] for k in FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "Finding":
        return cls(
            path=d["path"],
            code=d["code"],
            severity=Severity.parse(d["severity"]),
            message=d["message"],
            case=d.get("case"),
            fix=Fix(d["fix"]) if d.get("fix") else None,
            dataset=d.get("dataset"),
            help=d.get("help"),
        )


@dataclass(frozen=True)
class CodeInfo:
    code: str
    family: str
    severity_text: str
    what: str
    fix_text: str

    @property
    def default_severity(self) -> Severity:
        return Severity.parse(self.severity_text.split()[0])

    def explain(self) -> str:
        return (
            f"{self.code}  [{self.severity_text}]  ({self.family})\n\n"
            f"{_plain(self.what)}\n\nfix: {_plain(self.fix_text)}"
        )


def _plain(md: str) -> str:
    return md.replace("`", "")


_ROW = re.compile(r"^\|\s*(DG\d{3})\s*\|([^|]*)\|(.*)\|([^|]*)\|\s*$")


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, CodeInfo]:
    """All finding codes, read from the packaged FINDINGS.md."""
    # a plain path: importlib.resources costs 12 ms of import on every CLI start
    text = (Path(__file__).parent / "data" / "FINDINGS.md").read_text("utf-8")
    family = ""
    out: dict[str, CodeInfo] = {}
    for line in text.splitlines():
        if line.startswith("## "):
            family = line[3:].strip()
        m = _ROW.match(line)
        if m:
            code, sev, what, fix = (g.strip() for g in m.groups())
            out[code] = CodeInfo(code, family, sev, what, fix)
    return out


def finding(code: str, path: str, message: str, *, case: str | None = None,
            severity: Severity | None = None, fix: Fix | None = None,
            help: str | None = None) -> Finding:
    """Build a Finding, taking the default severity from the catalogue."""
    info = catalogue()[code]
    return Finding(path=path, code=code, severity=severity or info.default_severity,
                   message=message, case=case, fix=fix, help=help)


def code_matches(code: str, patterns: list[str]) -> bool:
    """`--select DG2` matches DG201..DG210; `DG201` matches exactly."""
    return any(code.startswith(p.strip().upper()) for p in patterns if p.strip())


class ExitCode(enum.IntEnum):
    """The exit policy every face shares (DESIGN.md, Conventions)."""
    CLEAN = 0
    FINDINGS = 1      # findings at or above the fail-on severity, or a gate refused
    USAGE = 2
    INTERNAL = 3


def verdict(findings, fail_on: str | Severity | None = "error") -> ExitCode:
    """FINDINGS when any finding is at least `fail_on` severe ("never"/None: always CLEAN).

    `findings` may be a ScanResult (anything with `.findings`) or an iterable of Finding.
    """
    if fail_on is None or fail_on == "never":
        return ExitCode.CLEAN
    threshold = fail_on if isinstance(fail_on, Severity) else Severity.parse(fail_on)
    items = getattr(findings, "findings", findings)
    return ExitCode.FINDINGS if any(f.severity >= threshold for f in items) else ExitCode.CLEAN
