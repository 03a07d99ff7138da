"""The report's collected data through the Jinja2 template: one HTML string."""
from __future__ import annotations

from pathlib import Path

from ..version import __version__


def _heat(v) -> str:
    """Red (0) to green (1) background for a Dice or share cell; grey when there is none."""
    if v is None:
        return "#f2f2f2"
    v = max(0.0, min(1.0, float(v)))
    r, g = (int(235 - 90 * v), int(150 + 80 * v)) if v >= 0.5 else (235, int(120 + 110 * v))
    return f"rgb({r},{g},150)"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def render_html(report, n_clean: int) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape


    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent)), autoescape=select_autoescape(["j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("page.html.j2").render(r=report, heat=_heat, fmt=_fmt, version=__version__,
                                                   n_clean=n_clean)
