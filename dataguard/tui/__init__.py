"""Textual TUI: the cases of nnU-Net datasets, their findings, a slice preview, repairs.

A face on `Workspace`: no check, repair, split or geometry logic lives here.
"""
