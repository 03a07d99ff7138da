"""One 2D slice of a case's image and label, from raw NIfTI or a preprocessed folder.

Every source is returned in nnU-Net's array order (z, y, x), so `axis=0` is the
through-plane axis for raw and preprocessed data alike. Only the requested slice is
materialised where the format allows it (uncompressed NIfTI and .b2nd chunks); nothing
is unpickled (`np.load(allow_pickle=False)`).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import SliceError  # noqa: F401 - defined in errors


def _pick(shape: tuple[int, ...], axis: int, index: int | None) -> int:
    if not 0 <= axis < len(shape):
        raise SliceError(f"axis must be 0..{len(shape) - 1}")
    n = shape[axis]
    i = n // 2 if index is None else index
    if not 0 <= i < n:
        raise SliceError(f"slice index {i} outside 0..{n - 1} along axis {axis}")
    return i


def _take(arr, axis: int, i: int):
    import numpy as np

    return np.take(arr, i, axis=axis)


def raw_slice(raw_root: Path, case: str, ending: str, axis: int, index: int | None):
    """(image float32 2D, label int 2D or None) from imagesTr/labelsTr, channel 0."""
    import nibabel as nib
    import numpy as np

    img_path = Path(raw_root) / "imagesTr" / f"{case}_0000{ending}"
    lab_path = Path(raw_root) / "labelsTr" / f"{case}{ending}"
    if not img_path.is_file():
        raise SliceError(f"no raw image {img_path.name} in imagesTr")
    try:
        img = nib.load(str(img_path))
        shape_zyx = tuple(reversed(img.shape[:3]))
        i = _pick(shape_zyx, axis, index)
        xyz_axis = 2 - axis
        sl = [slice(None)] * 3
        sl[xyz_axis] = i
        image = np.asarray(img.dataobj[tuple(sl) + (0,) * (len(img.shape) - 3)], dtype=np.float32).T
        label = None
        if lab_path.is_file():
            lab = nib.load(str(lab_path))
            label = np.rint(np.asarray(lab.dataobj[tuple(sl)], dtype=np.float64)).astype(np.int32).T
    except SliceError:
        raise
    except Exception as e:  # nibabel raises many types on damaged files
        raise SliceError(f"cannot read {case}: {type(e).__name__}: {e}") from None
    return image, label


def config_slice(folder: Path, case: str, axis: int, index: int | None):
    """(image float32 2D, label int 2D or None) from a preprocessed .b2nd or .npz case."""
    import numpy as np

    folder = Path(folder)
    try:
        if (folder / f"{case}.b2nd").is_file():
            import blosc2

            data = blosc2.open(str(folder / f"{case}.b2nd"), mode="r")
            i = _pick(tuple(data.shape[1:]), axis, index)
            sl = [0, slice(None), slice(None), slice(None)][: len(data.shape)]
            sl[axis + 1] = i
            image = np.asarray(data[tuple(sl)], dtype=np.float32)
            seg_path = folder / f"{case}_seg.b2nd"
            label = None
            if seg_path.is_file():
                seg = blosc2.open(str(seg_path), mode="r")
                label = np.asarray(seg[tuple(sl)]).astype(np.int32)
            return image, label
        if (folder / f"{case}.npz").is_file():
            with np.load(folder / f"{case}.npz", allow_pickle=False) as z:
                data = z["data"]
                seg = z["seg"] if "seg" in z.files else None
            i = _pick(tuple(data.shape[1:]), axis, index)
            image = _take(data[0], axis, i).astype(np.float32)
            label = _take(seg[0], axis, i).astype(np.int32) if seg is not None else None
            return image, label
    except SliceError:
        raise
    except Exception as e:
        raise SliceError(f"cannot read {case} in {folder.name}: {type(e).__name__}: {e}") from None
    raise SliceError(f"no .b2nd or .npz for case {case} in {folder.name}")
