"""dataguard: find, explain and fix broken nnU-Net v2 data before it costs a training run.

Library use (no CLI needed); `Workspace` is the API every face (CLI, TUI, gates, report) uses::

    import dataguard
    ws = dataguard.Workspace(["/data/nnUNet_preprocessed/Dataset001_Heart"])
    result = ws.scan()
    for f in result.findings:
        print(f.code, f.path, f.message)
    for case in ws.cases():
        print(case.case, case.status, case.val_fold)

The public names are plain imports (no import hooks). Importing the package loads the
Workspace and the engine (~0.2 s, what `dataguard --help` loads anyway) but never numpy,
blosc2, torch, nnunetv2, SimpleITK or pandas: those load only where a check needs them
(tests/test_hygiene.py).
"""
from __future__ import annotations

from .engine.caseinfo import CaseInfo
from .engine.layout import Dataset, discover
from .engine.scanner import ScanResult, make_executor, scan
from .engine.verifier import verify
from .errors import DataguardError
from .findings import ExitCode, Finding, Fix, Severity, verdict
from .spec import DatasetSpec
from .version import __version__
from .workspace import RepairRun, Workspace

__all__ = [
    "Workspace", "RepairRun", "CaseInfo", "scan", "ScanResult", "make_executor", "verify", "discover",
    "Dataset", "DatasetSpec", "Finding", "Fix", "Severity", "ExitCode", "verdict", "DataguardError",
    "__version__",
]
