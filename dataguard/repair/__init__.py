"""Repair engine: plan (finding -> action), apply (stage/verify/swap), journal, restore.

Faces go through `Workspace.plan/apply/repair/restore`; nothing here prints.
"""
from __future__ import annotations

from .apply import RepairReport, apply_plan
from .plan import Action, plan_repairs

__all__ = ["Action", "RepairReport", "plan_repairs", "apply_plan"]
