"""The ensemble weight search on synthetic probabilities whose right answer is known: never
below nnU-Net's own candidates, and the streaming (pruned) search equal to the plain one."""
from __future__ import annotations

import numpy as np
import pytest

from dataguard.errors import DataguardError
from dataguard.evaluate.crossval import overlap
from dataguard.evaluate.weights import OOF, VoxelStore, nnunet_candidates, reduce_case, search
from dataguard.submit.ensemble import Weights, combine

LABELS = {1: "myo", 2: "lv", 3: "rv"}


def _onehot(ref, p_right: float, n_classes: int = 4):
    """Probabilities with p_right on the reference class, the rest shared."""
    out = np.full((n_classes, *ref.shape), (1 - p_right) / (n_classes - 1), dtype=np.float32)
    np.put_along_axis(out, ref[None], p_right, axis=0)
    return out


def _one_better_everywhere(seed: int = 0, cases: int = 5):
    """B is right everywhere but unsure (0.6); A is sure and wrong on half the voxels, so the
    equal ensemble follows A there: the case where nnU-Net picks one model alone."""
    rng = np.random.default_rng(seed)
    refs, probs = {}, {}
    for i in range(cases):
        ref = rng.integers(0, 4, size=(6, 10, 10))
        wrong = (ref + rng.integers(1, 4, size=ref.shape)) % 4
        a_says = np.where(rng.random(ref.shape) < 0.5, wrong, ref)
        refs[f"c{i}"] = ref
        probs[f"c{i}"] = [_onehot(a_says, 0.9), _onehot(ref, 0.6)]
    return OOF(["A", "B"], LABELS, sorted(refs), probs, refs)


def _dice_as_submit_scores(oof: OOF, weights_file: dict) -> dict[int, float]:
    """combine() on the full arrays with the weights file's numbers, then evaluate's rule."""
    w = Weights.parse(weights_file, oof.models)
    per: dict[int, list[float]] = {lab: [] for lab in oof.labels}
    for c in oof.cases:
        seg, _ = combine(oof.probs[c], w.matrix(oof.models, oof.probs[c][0].shape[0]))
        for lab, (tp, r, p) in overlap(oof.refs[c], seg, list(oof.labels)).items():
            if r:
                per[lab].append(2 * tp / (r + p))
    return {lab: sum(v) / len(v) for lab, v in per.items() if v}


def _mean(d: dict) -> float:
    vals = [v for v in d.values() if v is not None]
    return sum(vals) / len(vals)


def test_one_model_better_everywhere_is_never_lost():
    oof = _one_better_everywhere()
    sug = search(oof)
    by_name = {c.name: c for c in sug.candidates}
    assert by_name["equal A+B"].mean < by_name["B alone"].mean             # averaging hurts here
    assert sug.best_candidate.name == "B alone" and sug.candidates[0].mean == max(c.mean for c in sug.candidates)
    assert _mean(sug.chosen) >= sug.best_candidate.mean
    assert _mean(sug.chosen) >= by_name["B alone"].mean > _mean(sug.equal)
    assert sug.chosen == pytest.approx(_dice_as_submit_scores(oof, sug.weights_file()), abs=0)


def test_candidates_are_nnunets_singles_and_equal_subsets():
    names = [n for n, _ in nnunet_candidates(["2d", "3d_lowres", "3d_fullres"])]
    assert names == ["2d alone", "3d_lowres alone", "3d_fullres alone", "equal 2d+3d_lowres", "equal 2d+3d_fullres",
                     "equal 3d_lowres+3d_fullres", "equal 2d+3d_lowres+3d_fullres"]


def _uncertain(seed: int = 1, cases: int = 6):
    """Soft, disagreeing models: some voxels are settled, many are contested."""
    rng = np.random.default_rng(seed)
    refs, probs = {}, {}
    for i in range(cases):
        ref = rng.integers(0, 4, size=(5, 12, 12))
        ps = []
        for m in range(2):
            logits = np.eye(4, dtype=np.float32)[ref].transpose(3, 0, 1, 2) * (2.0 + m)
            logits += rng.normal(0, 1.2, size=logits.shape).astype(np.float32)
            e = np.exp(logits - logits.max(0, keepdims=True))
            ps.append((e / e.sum(0, keepdims=True)).astype(np.float16))   # what nnU-Net's --npz holds
        refs[f"c{i}"], probs[f"c{i}"] = ref, ps
    return OOF(["A", "B"], LABELS, sorted(refs), probs, refs)


def test_pruned_search_equals_the_search_over_every_voxel():
    oof = _uncertain()
    pruned, plain = search(oof), search(oof, prune=False)
    assert 0 < pruned.contested < pruned.voxels == plain.contested        # pruning left voxels out
    assert pruned.weights == plain.weights and pruned.chosen == plain.chosen
    assert pruned.equal == plain.equal and pruned.single == plain.single and pruned.table == plain.table
    assert [(c.name, c.dice) for c in pruned.candidates] == [(c.name, c.dice) for c in plain.candidates]
    assert pruned.chosen == _dice_as_submit_scores(oof, pruned.weights_file())
    assert _mean(pruned.chosen) >= pruned.best_candidate.mean


def test_a_fixed_voxel_keeps_its_class_under_any_weights():
    oof = _uncertain(seed=2, cases=1)
    case = oof.cases[0]
    probs, ref = oof.probs[case], oof.refs[case]
    cv = reduce_case(case, probs, ref)
    lo = np.stack(probs).reshape(2, 4, -1).min(0).astype(np.float32)
    hi = np.stack(probs).reshape(2, 4, -1).max(0).astype(np.float32)
    star = lo.argmax(0)
    others = hi.copy()
    others[star, np.arange(star.size)] = -np.inf
    fixed = lo[star, np.arange(star.size)] > others.max(0) + 1e-6
    assert cv.contested == (~fixed).sum() and fixed.any()
    rng = np.random.default_rng(3)
    for _ in range(200):
        W = rng.random((2, 4)) * (rng.random((2, 4)) > 0.3) + 1e-12      # zeros included
        seg, _ = combine(probs, W)
        assert (seg.reshape(-1)[fixed] == star[fixed]).all()
    assert cv.fixed_pred.sum() == fixed.sum()


def test_contested_voxels_spilled_to_disk_give_the_same_answer():
    oof = _uncertain(seed=4)
    in_memory = search(oof)
    store = VoxelStore(memory_budget=0)                     # every case goes to the temporary file
    for c in oof.cases:
        store.add(reduce_case(c, oof.probs[c], oof.refs[c]))
    assert store.spilled
    spilled = OOF(oof.models, oof.labels, oof.cases, reduced=store)
    on_disk = search(spilled)
    assert on_disk.weights == in_memory.weights and on_disk.chosen == in_memory.chosen


def test_probability_files_read_by_isal_equal_numpy_and_corruption_is_not_silent(tmp_path):
    import zipfile

    from dataguard.submit.ensemble import read_probabilities

    probs = np.random.default_rng(5).random((4, 6, 7, 8)).astype(np.float16)
    path = tmp_path / "case.npz"
    np.savez_compressed(path, probabilities=probs)
    got = read_probabilities(path)
    assert got.dtype == probs.dtype and np.array_equal(got, probs)
    fortran = tmp_path / "f.npz"
    np.savez_compressed(fortran, probabilities=np.asfortranarray(probs))
    assert np.array_equal(read_probabilities(fortran), probs)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("probabilities.npy")
    data = bytearray(path.read_bytes())
    at = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    data[at] ^= 0xFF                                       # one flipped byte inside the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(DataguardError, match="CRC|zlib") as e:
        read_probabilities(path)
    assert str(path) in str(e.value)


def test_a_probability_file_claiming_gigabytes_is_refused_by_its_real_size(tmp_path):
    import io
    import struct

    from dataguard.submit.ensemble import read_probabilities

    buf = io.BytesIO()
    np.savez_compressed(buf, probabilities=np.zeros((2, 3), np.float16))
    data = bytearray(buf.getvalue())
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 3 << 30)           # the directory claims 3 GiB uncompressed
    path = tmp_path / "case.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataguardError, match="length mismatch") as e:
        read_probabilities(path)
    assert str(path) in str(e.value)
