"""The headless core stays light, and the catalogue, registry, docs and tests agree."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dataguard.checks import all_checks, all_codes
from dataguard.findings import catalogue

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "nnunetv2", "SimpleITK", "pandas", "textual", "blosc2", "numpy")


@pytest.mark.parametrize("stmt", ["import dataguard", "import dataguard.cli; dataguard.cli.build_parser()"])
def test_import_is_light(stmt):
    code = f"{stmt}; import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_packaged_catalogue_matches_shared_one():
    shared = ROOT.parent / "shared" / "FINDINGS.md"
    if not shared.exists():
        pytest.skip("no ../shared checkout next to the repo")
    assert (ROOT / "dataguard" / "data" / "FINDINGS.md").read_text() == shared.read_text()


def test_every_registered_code_is_in_the_catalogue_and_explained():
    # that each code is actually emitted is tests/test_every_code.py's job
    for code in sorted(all_codes()):
        assert code in catalogue(), f"{code} has no catalogue entry"
        assert catalogue()[code].explain().strip(), f"{code} has an empty explanation"


def test_readme_documents_every_command_and_links_the_catalogue():
    from dataguard.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"dataguard {name}" in readme, name
    assert "FINDINGS.md" in readme


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "pytest" in b]
    assert blocks, "README has no test command block"
    assert blocks[0] in ci


def test_registry_names_unique():
    names = [c.name for c in all_checks()]
    assert len(names) == len(set(names))
