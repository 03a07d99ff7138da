"""`dataguard report`: one self-contained HTML page (inline PNG, CSS and JS; nothing fetched).

collect.py asks the Workspace (scan record, cases, folds, evaluate) and the training-log
reader for the data; images.py draws thumbnails and plots as PNG data URIs with the TUI's
renderer (visual.slice_rgb) and matplotlib; page.html.j2 (Jinja2) only renders.
"""
