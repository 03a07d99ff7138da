"""Drawing helpers every face shares: label colours, intensity windows, slice + overlay as RGB.

The TUI turns the RGB array into half-block characters, the HTML report into a PNG;
both get the same colours for the same labels. numpy only, imported where used.
"""
from __future__ import annotations

# one colour per label value (RGB), ITK-SNAP-like: 1 red, 2 green, 3 blue, ...
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    1: (230, 60, 60), 2: (60, 200, 90), 3: (70, 130, 255), 4: (240, 210, 60), 5: (200, 90, 220),
    6: (60, 210, 210), 7: (255, 150, 60), 8: (150, 255, 150), 9: (255, 120, 170), 10: (160, 160, 255),
}
OVERLAY_ALPHA = 0.55

# name -> (low, high) in the image's units; "auto" is the 1st-99th percentile of the slice
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft tissue": (40 - 400 / 2, 40 + 400 / 2),     # W400 L40
    "lung": (-600 - 1500 / 2, -600 + 1500 / 2),       # W1500 L-600
    "bone": (400 - 1800 / 2, 400 + 1800 / 2),         # W1800 L400
}
WINDOWS = ("auto", *CT_WINDOWS)


def label_colour(value: int) -> tuple[int, int, int]:
    """The colour of a label value; values past the table cycle through it."""
    if value in LABEL_COLOURS:
        return LABEL_COLOURS[value]
    keys = sorted(LABEL_COLOURS)
    return LABEL_COLOURS[keys[(value - 1) % len(keys)]]


def window_bounds(image, window: str = "auto") -> tuple[float, float]:
    import numpy as np

    if window in CT_WINDOWS:
        return CT_WINDOWS[window]
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(finite, (1, 99)))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def slice_rgb(image, label=None, *, window: str = "auto", overlay: bool = True):
    """(H, W, 3) uint8: the windowed image in grey with each label blended in its colour."""
    import numpy as np

    lo, hi = window_bounds(image, window)
    grey = np.clip((np.nan_to_num(image.astype(np.float32), nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.repeat((grey * 255.0)[..., None], 3, axis=2)
    if overlay and label is not None:
        for value in np.unique(label):
            v = int(value)
            if v <= 0:
                continue
            mask = label == value
            rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * np.array(label_colour(v), np.float32)
    return rgb.astype(np.uint8)


def fit(rgb, spacing: tuple[float, float] | None, max_w: int, max_h: int):
    """Nearest-neighbour resample so that pixels are square in millimetres and the picture
    fits max_w x max_h output pixels (rows follow spacing[0], columns spacing[1])."""
    import numpy as np

    h, w = rgb.shape[:2]
    sy, sx = spacing if spacing and all(s and s > 0 for s in spacing) else (1.0, 1.0)
    phys_h, phys_w = h * sy, w * sx
    scale = min(max_w / phys_w, max_h / phys_h)
    out_w, out_h = max(1, int(round(phys_w * scale))), max(1, int(round(phys_h * scale)))
    rows = np.minimum((np.arange(out_h) + 0.5) * h / out_h, h - 1).astype(int)
    cols = np.minimum((np.arange(out_w) + 0.5) * w / out_w, w - 1).astype(int)
    return rgb[rows][:, cols]
