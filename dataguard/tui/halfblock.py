"""RGB pixels -> terminal cells: `▀` with the upper pixel as foreground and the lower as
background, two pixels per cell in 24-bit colour (as rich-pixels does). Works in any
modern terminal and over SSH; no graphics protocol needed."""
from __future__ import annotations


def to_text(rgb):
    """(H, W, 3) uint8 -> rich Text of H/2 lines (an odd last row gets a black lower half)."""
    from rich.color import Color
    from rich.style import Style
    from rich.text import Text

    h, w = rgb.shape[:2]
    styles: dict[tuple, Style] = {}
    text = Text(no_wrap=True, overflow="crop")
    for y in range(0, h, 2):
        top = rgb[y]
        bottom = rgb[y + 1] if y + 1 < h else None
        for x in range(w):
            t = tuple(int(c) for c in top[x])
            b = tuple(int(c) for c in bottom[x]) if bottom is not None else (0, 0, 0)
            key = (t, b)
            style = styles.get(key)
            if style is None:
                style = styles[key] = Style(color=Color.from_rgb(*t), bgcolor=Color.from_rgb(*b))
            text.append("▀", style)
        if y + 2 < h:
            text.append("\n")
    return text
