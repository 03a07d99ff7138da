"""Repair engine (a later issue): plan → quarantine → re-preprocess → journal/undo."""
