"""The docs keep up with the code: every command has a page, every finding code is in the
packaged catalogue, the README stays short and keeps its set-up commands, links resolve.

In the style of sqlite-utils' tests/test_docs.py: one parametrised case per command and per
code, so a failure names exactly what is missing. Nothing here needs ../shared.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dataguard.cli import build_parser
from dataguard.findings import catalogue

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CATALOGUE = ROOT / "dataguard" / "data" / "FINDINGS.md"
README_LIMIT = 10240          # bytes
SETUP_COMMANDS = (
    "./scripts/bootstrap.sh && .venv/bin/dataguard demo",
    "./scripts/bootstrap.sh && .venv/bin/python -m pytest -q",
)
HIDDEN: set[str] = set()        # every command has a page; `ensemble suggest` is part of ensemble.md


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(name for name in sub.choices if name not in HIDDEN)


def _mentions(text: str, command: str) -> bool:
    return re.search(rf"dataguard {re.escape(command)}(?![\w-])", text) is not None


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_a_page(command):
    page = DOCS / "commands" / f"{command}.md"
    assert page.is_file(), f"`dataguard {command}` has no page: docs/commands/{command}.md is missing"
    assert _mentions(page.read_text("utf-8"), command), \
        f"docs/commands/{command}.md never mentions `dataguard {command}`"


def test_ensemble_suggest_is_documented_in_the_ensemble_page():
    page = DOCS / "commands" / "ensemble.md"
    assert page.is_file(), "docs/commands/ensemble.md is missing"
    assert "dataguard ensemble suggest" in page.read_text("utf-8"), \
        "docs/commands/ensemble.md never mentions `dataguard ensemble suggest`"


def _codes_in_use() -> list[str]:
    """Every code a registered check declares, and every code the package's source names."""
    import dataguard.checks  # noqa: F401 - registers the checks
    from dataguard.checks.registry import all_checks

    codes = {c for check in all_checks() for c in check.codes}
    for path in (ROOT / "dataguard").rglob("*.py"):
        codes |= set(re.findall(r"\bDG\d{3}\b", path.read_text("utf-8")))
    return sorted(codes)


def _catalogued() -> set[str]:
    """The codes with a row in the packaged FINDINGS.md (`| DG201 | ...`), read as text."""
    return set(re.findall(r"^\| (DG\d{3}) \|", CATALOGUE.read_text("utf-8"), re.M))


@pytest.mark.parametrize("code", _codes_in_use())
def test_every_code_in_use_is_in_the_packaged_catalogue(code):
    assert code in _catalogued(), f"{code} is used by the code but has no row in dataguard/data/FINDINGS.md"
    assert code in catalogue(), f"`dataguard explain {code}` does not know it"


def test_readme_is_short_and_keeps_the_set_up_commands():
    data = README.read_bytes()
    assert len(data) <= README_LIMIT, \
        f"README.md is {len(data)} bytes, over {README_LIMIT}: move detail into docs/"
    text = data.decode("utf-8")
    for command in SETUP_COMMANDS:
        assert command in text, f"README.md lost the set-up command {command!r}"


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.I)   # http:, mailto:, //host, #anchor


def _relative_links(text: str) -> list[str]:
    text = _FENCE.sub("", text)                       # links inside code are not links
    text = _CODE.sub("", text)                        # `[x](y)` in code is not a link; [`x`](y) stays one
    return [t for t in _LINK.findall(text) if not _EXTERNAL.match(t)]


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    broken = []
    for target in _relative_links(doc.read_text("utf-8")):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (doc.parent / path).exists():
            broken.append(target)
    assert broken == [], f"{doc.relative_to(ROOT)} links to missing files: {broken}"


def test_the_link_finder_sees_links():
    # a guard for the test above: a regex that finds nothing would pass every page
    text = ("[a](x.md) ![b](img/y.svg) [c](https://e.org) [d](#top) [e](z.md#part)\n"
            "`[not](code.md)`\n```\n[nor](fenced.md)\n```\n")
    assert _relative_links(text) == ["x.md", "img/y.svg", "z.md#part"]
    assert len(_relative_links(README.read_text("utf-8"))) >= 20
