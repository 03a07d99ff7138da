"""DG405 for `doctor -d ID --config C`: the labels configuration C cannot represent.

The figures are the scan's (checks/roundtrip.py): a scan selected to DG405 reuses what the
manifest recorded for unchanged labels, so this costs nothing after a `dataguard scan`."""
from __future__ import annotations

from pathlib import Path

from ..checks.roundtrip import config_of
from ..errors import DataguardError
from ..findings import Finding
from ..engine.layout import discover
from ..engine.scanner import scan


def representation_findings(preprocessed: Path, configuration: str) -> list[Finding]:
    """DG405 findings about `configuration` of the dataset whose preprocessed folder is given
    (its raw training labels found as a scan finds them); [] when there is no raw data."""
    try:
        dsets = discover([str(preprocessed)])
    except (DataguardError, OSError):
        return []
    dsets = [d for d in dsets if d.raw is not None]
    if not dsets:
        return []
    res = scan(datasets=dsets, select=["DG405"])
    return [f for f in res.findings if f.code == "DG405" and config_of(f) == configuration]
