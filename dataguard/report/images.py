"""Pictures for the report, as `data:image/png;base64,...` URIs (nothing to fetch)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

from ..visual import label_colour, slice_rgb

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


def case_thumbnail(ws, dataset: str, case: str, info=None) -> tuple[str | None, str | None]:
    """(picture, None), or (None, why there is none).

    The middle axial slice with the label overlaid (the TUI preview's renderer): from raw, else
    from a configuration folder. A test image (`info.test`: only in imagesTs) has no label and is
    in neither place: its channel 0 is drawn alone.
    """
    if info is not None and getattr(info, "test", False):
        return _test_thumbnail(ws, dataset, case, info)
    why = None
    for source in ("raw", "preprocessed"):
        try:
            image, label = ws.dataset(dataset).load_slice(case, source=source)
        except Exception as e:                         # noqa: BLE001 - a broken case has no picture
            why = why or str(e)
            continue
        return png_uri(_resize(slice_rgb(image, label))), None
    return None, why or "unreadable"


def _test_thumbnail(ws, dataset: str, case: str, info) -> tuple[str | None, str | None]:
    """A test image's middle axial slice, channel 0 (`CASE_0000.ext` in imagesTs), no overlay."""
    import numpy as np

    rels = sorted(f.rel for f in info.files if f.rel.startswith("raw/imagesTs/"))
    rel = next((r for r in rels if r.rsplit("/", 1)[-1].startswith(f"{case}_0000.")), rels[0] if rels else None)
    raw = ws.dataset(dataset).raw
    if rel is None or raw is None:
        return None, "test image: no image file recorded by the scan"
    path = Path(raw) / rel.split("/", 1)[1]
    try:
        import nibabel as nib

        img = nib.load(str(path))
        if len(img.shape) < 3:
            raise ValueError(f"a {len(img.shape)}D image")
        sl = (slice(None), slice(None), img.shape[2] // 2) + (0,) * (len(img.shape) - 3)
        image = np.asarray(img.dataobj[sl], dtype=np.float32).T            # (y, x), as the training cases
    except Exception as e:                             # noqa: BLE001 - said on the card, not raised
        return None, f"cannot read test image {path.name}: {type(e).__name__}: {str(e).replace(str(path), path.name)}"
    return png_uri(_resize(slice_rgb(image))), None


def pred_vs_ref(image, ref, pred, spacing=None) -> str:
    """Reference | prediction over the same slice, side by side."""
    import numpy as np


    a, b = _resize(slice_rgb(image, ref), spacing), _resize(slice_rgb(image, pred), spacing)
    gap = np.full((a.shape[0], 4, 3), 255, np.uint8)
    return png_uri(np.concatenate([a, gap, b], axis=1))


def outline_rgb(image, label, value: int, *, window: str = "auto"):
    """(H, W, 3) uint8: the windowed image in grey with the outline of one label value drawn in
    its colour (the voxels of the label with a 4-neighbour outside it), the inside left as it is
    so that what the outline should follow stays visible."""
    import numpy as np

    rgb = slice_rgb(image, window=window, overlay=False)
    if label is None:
        return rgb
    mask = np.asarray(label) == value
    if not mask.any():
        return rgb
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1]
                         & mask[1:-1, :-2] & mask[1:-1, 2:])
    rgb[mask & ~inner] = label_colour(value)
    return rgb


def suspect_picture(image, label, value: int, spacing=None, size: int = 200) -> str:
    """A suspect's slice for the report: the label's outline over the image, `size` pixels on
    the longest side (nearest neighbour: voxels stay crisp, the outline a line)."""
    return png_uri(_resize(outline_rgb(image, label, value), spacing, size))


def intensity_strip(summary: dict) -> str | None:
    """Per channel, each case's median intensity with its 1st-99th percentile bar (training
    cases blue, test images orange); cases far from the others circled and named."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chans = sorted(summary.get("channels") or {})
    if not chans:
        return None
    fig = Figure(figsize=(10, 2.4 * len(chans)))
    FigureCanvasAgg(fig)
    for i, c in enumerate(chans):
        rows = sorted(summary["channels"][c], key=lambda r: (r["split"] != "Tr", r["case"]))
        ax = fig.add_subplot(len(chans), 1, i + 1)
        x = np.arange(len(rows))
        med = np.array([r["p50"] for r in rows])
        lo, hi = med - np.array([r["p1"] for r in rows]), np.array([r["p99"] for r in rows]) - med
        colours = ["#1f77b4" if r["split"] == "Tr" else "#ff7f0e" for r in rows]
        ax.errorbar(x, med, yerr=[lo, hi], fmt="none", ecolor=colours, alpha=0.5)
        ax.scatter(x, med, c=colours, s=14, zorder=3)
        train = med[[r["split"] == "Tr" for r in rows]]
        if train.size >= 4:
            q1, q3 = np.percentile(train, [25, 75])
            far = (med < q1 - 3 * (q3 - q1)) | (med > q3 + 3 * (q3 - q1))
            for k in np.flatnonzero(far):
                ax.scatter([x[k]], [med[k]], s=80, facecolors="none", edgecolors="black", zorder=4)
                ax.annotate(rows[k]["case"], (x[k], med[k]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        name = (summary.get("channel_names") or {}).get(c, "")
        ax.set_title(f"channel {c} ({name}): median and 1st-99th percentile per case "
                     f"(blue: imagesTr, orange: test images)", fontsize=9)
        ax.set_xticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
