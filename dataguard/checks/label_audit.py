"""DG406 as a scan's dataset check: the data-alone label audit (dataguard/audit/data.py),
its findings only; `dataguard audit` shows the whole ranking."""
from __future__ import annotations


def check_label_audit(view):
    from ..audit.data import check_label_audit as run

    return run(view)
