"""dataguard: find, explain and fix broken nnU-Net v2 data before it costs a training run.

Library use (no CLI needed); `Workspace` is the API every face (CLI, TUI, gates, report) uses::

    import dataguard
    ws = dataguard.Workspace(["/data/nnUNet_preprocessed/Dataset001_Heart"])
    result = ws.scan()
    for f in result.findings:
        print(f.code, f.path, f.message)
    for case in ws.cases():
        print(case.case, case.status, case.val_fold)

Importing this package is cheap: the public names below load on first use, and numpy,
blosc2, torch, nnunetv2, SimpleITK and pandas only where a check needs them
(tests/test_hygiene.py). `dataguard --help` stays fast that way.
"""
from __future__ import annotations

import importlib

__version__ = "0.3.0"

_PUBLIC = {
    "Workspace": "workspace", "RepairRun": "workspace", "CaseInfo": "engine.caseinfo",
    "scan": "engine.scanner", "ScanResult": "engine.scanner", "make_executor": "engine.scanner",
    "verify": "engine.verifier", "discover": "engine.layout", "Dataset": "engine.layout",
    "DatasetSpec": "spec",
    "Finding": "findings", "Fix": "findings", "Severity": "findings", "ExitCode": "findings",
    "verdict": "findings", "DataguardError": "errors",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dataguard' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
