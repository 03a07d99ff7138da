"""Pictures for the report, as `data:image/png;base64,...` URIs (nothing to fetch)."""
from __future__ import annotations

import base64
import io

from ..visual import slice_rgb

THUMB = 160          # longest side of a case thumbnail, pixels


def png_uri(rgb) -> str:
    """An (h, w, 3) uint8 array as a PNG data URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_uri(path) -> str:
    from pathlib import Path

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _resize(rgb, spacing=None, size: int = THUMB):
    """Nearest-neighbour resize to `size` on the longest side, physical aspect kept."""
    import numpy as np

    h, w = rgb.shape[:2]
    sy, sx = (spacing or (1.0, 1.0))[:2]
    ph, pw = h * sy, w * sx
    scale = size / max(ph, pw)
    nh, nw = max(1, round(ph * scale)), max(1, round(pw * scale))
    yi = np.minimum((np.arange(nh) * h / nh).astype(int), h - 1)
    xi = np.minimum((np.arange(nw) * w / nw).astype(int), w - 1)
    return rgb[yi][:, xi]


def case_thumbnail(ws, dataset: str, case: str) -> str | None:
    """Middle axial slice with the label overlaid (the TUI preview's renderer), or None."""
    for source in ("raw", "preprocessed"):
        try:
            image, label = ws.load_slice(dataset, case, source=source)
        except Exception:                              # noqa: BLE001 - a broken case has no picture
            continue
        return png_uri(_resize(slice_rgb(image, label)))
    return None


def pred_vs_ref(image, ref, pred, spacing=None) -> str:
    """Reference | prediction over the same slice, side by side."""
    import numpy as np


    a, b = _resize(slice_rgb(image, ref), spacing), _resize(slice_rgb(image, pred), spacing)
    gap = np.full((a.shape[0], 4, 3), 255, np.uint8)
    return png_uri(np.concatenate([a, gap, b], axis=1))
