"""Repair engine: plan (finding -> action), apply (stage/verify/swap), journal, lock, restore.

Faces go through `Workspace.plan/apply/repair/restore`; nothing here prints.
"""
