"""Textual TUI (a later issue): browses ScanResult findings and calls repair."""
