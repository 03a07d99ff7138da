"""Rebuild tests/data/kidney_ct_0000.nii.gz and kidney_ct_seg.nii.gz from TotalSegmentator.

Source (Apache-2.0): https://github.com/wasserth/TotalSegmentator, commit
0e65a448d557382b1e925276212b3bec7f5aff83, files tests/reference_files/example_ct_sm.nii.gz
(a 3 mm abdominal CT, 122 x 101 x 30, int16 HU) and tests/reference_files/example_seg.nii.gz
(its segmentation with TotalSegmentator's "total" labels: 1 spleen, 2 kidney_right,
3 kidney_left, 5 liver).

Made by: keeping slices z = 0..23 (both kidneys end by slice 22) and four labels, renumbered
1 kidney_right, 2 kidney_left, 3 spleen, 4 liver (the others become background); voxels,
spacing and orientation unchanged.

    python tests/data/make_kidney_ct.py PATH/TO/TotalSegmentator/tests/reference_files
"""
from __future__ import annotations

import sys
from pathlib import Path

KEEP = {2: 1, 3: 2, 1: 3, 5: 4}          # TotalSegmentator label -> ours
LABELS = {"background": 0, "kidney_right": 1, "kidney_left": 2, "spleen": 3, "liver": 4}
Z = slice(0, 24)


def main(src: Path, out: Path) -> None:
    import nibabel as nib
    import numpy as np

    ct = nib.load(str(src / "example_ct_sm.nii.gz"))
    seg = nib.load(str(src / "example_seg.nii.gz"))
    img = np.asanyarray(ct.dataobj)[:, :, Z].astype(np.int16)
    old = np.asanyarray(seg.dataobj)[:, :, Z]
    lab = np.zeros(old.shape, np.uint8)
    for a, b in KEEP.items():
        lab[old == a] = b
    for arr, ref, name in ((img, ct, "kidney_ct_0000.nii.gz"), (lab, seg, "kidney_ct_seg.nii.gz")):
        im = nib.Nifti1Image(arr, ref.affine)
        im.set_data_dtype(arr.dtype)
        nib.save(im, str(out / name))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parent)
