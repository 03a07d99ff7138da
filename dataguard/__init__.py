"""dataguard: find, explain and fix broken nnU-Net v2 data before it costs a training run.

Library use (no CLI needed)::

    import dataguard
    result = dataguard.scan(["/data/nnUNet_preprocessed/Dataset001_Heart"])
    for f in result.findings:
        print(f.code, f.path, f.message)

Importing this package is cheap: numpy, blosc2, torch, nnunetv2, SimpleITK and pandas
are only imported by the functions that need them (tests/test_import_hygiene.py).
"""
__version__ = "0.1.0"

from .findings import Finding, Fix, Severity  # noqa: E402
from .layout import Dataset, discover  # noqa: E402
from .scanner import ScanResult, scan  # noqa: E402
from .verify import verify  # noqa: E402

__all__ = ["scan", "verify", "discover", "Dataset", "Finding", "Fix", "Severity", "ScanResult",
           "__version__"]
