"""Cross-validation splits: make stratified ones, write them (journalled), plot them. The
read-only model of splits_final.json (read, validate, count) is `dataguard.folds`.

nnU-Net's own split is an unstratified KFold(5, seed 12345). With a rare label, a fold's
validation set can hold no case of it: that fold's Dice for the label is 0/NaN and model
selection is misled. `rebalance` makes splits where that cannot happen whenever any split
can avoid it, and says so (SplitError) when none can.

The engine never prints: `dataguard splits` (cli_splits.py) renders what it returns.
numpy, scipy, pandas and matplotlib are imported inside the functions that need them.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SplitError  # noqa: F401 - defined in errors
from ..folds import (  # noqa: F401 - the fold model lives in dataguard.folds; re-exported here
    SPLITS_NAME,
    NNUNET_FOLDS,
    NNUNET_SEED,
    case_classes,
    class_heading,
    class_shares,
    classes_of,
    coverage_gaps,
    fold_label_counts,
    fold_sizes,
    label_counts,
    label_names,
    label_table,
    load_splits,
    nnunet_default_split,
    parse_splits,
    structure_problems,
)
from ..fsio import atomic_write_bytes, atomic_write_text
from ..engine.journal import Journal, new_run_id
from ..engine.lock import DatasetLock

MILP_TIME_LIMIT = 30.0       # seconds; a safety net, the node limit below normally ends first
MILP_NODE_LIMIT = 2000       # deterministic work limit (a time limit alone is not reproducible)


# --- stratified splits -----------------------------------------------------------------------
@dataclass
class _Problem:
    cases: list[str]                     # sorted
    members: dict[int, list[int]]        # label -> indices of cases containing it
    sizes: list[int]
    seed: int
    names: dict[int, str] = field(default_factory=dict)     # key -> name, for error messages

    @property
    def n(self) -> int:
        return len(self.cases)

    @property
    def k(self) -> int:
        return len(self.sizes)

    def must_cover(self) -> list[int]:
        """Labels that can and so must appear in every validation set."""
        return [lab for lab, m in self.members.items() if len(m) >= self.k]


def _problem(case_labels: dict[str, set[int]], folds: int, seed: int) -> _Problem:
    cases = sorted(case_labels)
    if folds < 2:
        raise SplitError(f"need at least 2 folds, got {folds}")
    if len(cases) < folds:
        raise SplitError(f"{len(cases)} cases cannot fill {folds} validation sets; use at most "
                         f"{len(cases)} folds" if len(cases) >= 2 else
                         f"{len(cases)} case(s): cross-validation needs at least 2")
    members: dict[int, list[int]] = {}
    for i, c in enumerate(cases):
        for lab in sorted(int(v) for v in case_labels[c] if int(v) > 0):
            members.setdefault(lab, []).append(i)
    return _Problem(cases, dict(sorted(members.items())), fold_sizes(len(cases), folds), seed)


def rebalance(case_labels: dict[str, set[int]], folds: int = 5, seed: int = 0, *,
              method: str = "auto", time_limit: float = MILP_TIME_LIMIT,
              names: dict[int, str] | None = None) -> list[dict[str, list[str]]]:
    """Stratified cross-validation splits for cases with the given foreground labels.

    Guarantees, whenever any split can meet them (SplitError otherwise):
    (a) every label found in >= `folds` cases is in every fold's validation set;
    (b) validation set sizes differ by at most one; (c) every case is in exactly one
    validation set and each fold trains on all other cases; (d) the same input and seed
    give the same splits. Within those, label counts per fold are kept as close to
    proportional as the solver finds (e).

    method: "milp" (scipy HiGHS, exact within a deterministic node limit), "greedy"
    (iterative stratification; cannot promise (a) and raises SplitError when it misses),
    or "auto": milp, falling back to greedy when scipy is missing or finds nothing in time.
    `case_labels` holds class keys (`case_classes`: label values, or region positions);
    `names` (key -> name) only words the errors.
    """
    if method not in ("auto", "milp", "greedy"):
        raise ValueError(f"unknown method {method!r}")
    p = _problem(case_labels, folds, seed)
    p.names = dict(names or {})
    assign = None
    if method in ("auto", "milp"):
        assign = _solve_milp(p, time_limit)
        if assign is None and method == "milp":
            raise SplitError("the MILP solver is unavailable or found no split within its limits")
    if assign is None:
        assign = _greedy(p)
    splits = _to_splits(p, assign)
    gaps = coverage_gaps(splits, {c: case_labels[c] for c in p.cases})
    if gaps:   # only the greedy fallback can get here
        raise SplitError(f"greedy stratification left {_label_word(p, gaps[0][1])} out of fold {gaps[0][0]}'s "
                         f"validation set; install scipy for the exact solver")
    return splits


def _label_word(p: _Problem, key: int, bare: bool = False) -> str:
    """`label 2` without names, `label 2 (whole_tumor)` with them (the key, then its name)."""
    name = p.names.get(key)
    if name is None:
        return str(key) if bare else f"label {key}"
    return f"{key} ({name})" if bare else f"label {key} ({name})"


def _to_splits(p: _Problem, assign: list[int]) -> list[dict[str, list[str]]]:
    val = [[c for c, f in zip(p.cases, assign) if f == fold] for fold in range(p.k)]
    return [{"train": [c for c, f in zip(p.cases, assign) if f != fold], "val": val[fold]}
            for fold in range(p.k)]


def _infeasible(p: _Problem) -> SplitError:
    labs = ", ".join(_label_word(p, lab, bare=True) for lab in p.must_cover())
    return SplitError(
        f"no split of {p.n} cases into {p.k} validation sets of sizes {p.sizes} puts every label "
        f"found in >= {p.k} cases (labels {labs}) into every validation set; use fewer folds")


def _constraints():
    """Sparse constraint rows for scipy's milp: (rows, cols, vals, lo, hi, add), where
    add([(column, coefficient), ...], low, high) appends one row low <= a.x <= high."""
    rows, cols, vals, lo, hi = [], [], [], [], []

    def add(entries, low, high):
        for col, v in entries:
            rows.append(len(lo))
            cols.append(col)
            vals.append(v)
        lo.append(low)
        hi.append(high)
    return rows, cols, vals, lo, hi, add


def _solve_milp(p: _Problem, time_limit: float) -> list[int] | None:
    """Exact stratification as a small MILP. None when scipy is missing or out of limits.

    x[c, f] = 1 when case c validates in fold f; d[l, f] >= |cases with l in fold f - target|
    with target = count(l) * size(f) / n. Minimise sum d / count(l) (every label's relative
    imbalance weighs the same) plus seed-dependent tie-breakers far below any real
    difference, so the seed only picks among equally balanced splits.
    """
    try:
        import numpy as np
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_array
    except ImportError:
        return None
    n, k, labels = p.n, p.k, list(p.members)
    nx, nd = n * k, len(labels) * k
    rows, cols, vals, lo, hi, add = _constraints()

    for c in range(n):                                     # (c) exactly one val set per case
        add([(c * k + f, 1) for f in range(k)], 1, 1)
    for f in range(k):                                     # (b) fixed fold sizes
        add([(c * k + f, 1) for c in range(n)], p.sizes[f], p.sizes[f])
    cover = set(p.must_cover())
    for li, lab in enumerate(labels):
        m = p.members[lab]
        for f in range(k):
            xs = [(c * k + f, 1) for c in m]
            if lab in cover:                               # (a) coverage
                add(xs, 1, np.inf)
            target = len(m) * p.sizes[f] / n               # (e) |count - target| <= d
            add(xs + [(nx + li * k + f, -1)], -np.inf, target)
            add(xs + [(nx + li * k + f, 1)], target, np.inf)
    weights = np.repeat([1.0 / len(p.members[lab]) for lab in labels], k)
    rng = np.random.default_rng(p.seed)
    tie = rng.random(nx) * (1e-4 / n) * (weights.min() if nd else 1.0)
    res = milp(np.concatenate([tie, weights]),
               integrality=np.r_[np.ones(nx), np.zeros(nd)],
               bounds=Bounds(np.zeros(nx + nd), np.r_[np.ones(nx), np.full(nd, np.inf)]),
               constraints=LinearConstraint(coo_array((vals, (rows, cols)), shape=(len(lo), nx + nd)),
                                            lo, hi),
               options={"time_limit": time_limit, "node_limit": MILP_NODE_LIMIT})
    if res.status == 2:
        raise _infeasible(p)
    if res.x is None:
        return None
    return [int(f) for f in res.x[:nx].reshape(n, k).argmax(axis=1)]


def _greedy(p: _Problem) -> list[int]:
    """Iterative stratification (Sechidis et al. 2011), the fallback without scipy.

    Rarest label first: each of its cases goes to the fold that still lacks the label
    (if it must be covered), else the one furthest below its proportional share, with
    free places. Cases without foreground fill the remaining places.
    """
    import numpy as np

    rank = {c: int(r) for c, r in zip(range(p.n), np.random.default_rng(p.seed).permutation(p.n))}
    free = list(p.sizes)
    want = {lab: [len(m) * s / p.n for s in p.sizes] for lab, m in p.members.items()}
    have = {lab: [0] * p.k for lab in p.members}
    cover = set(p.must_cover())
    labels_of: dict[int, list[int]] = {c: [] for c in range(p.n)}
    for lab, m in p.members.items():
        for c in m:
            labels_of[c].append(lab)
    assign: list[int | None] = [None] * p.n
    todo = set(range(p.n))
    while True:
        left = {lab: [c for c in m if c in todo] for lab, m in p.members.items()}
        live = [lab for lab, cs in left.items() if cs]
        if not live:
            break
        lab = min(live, key=lambda x: (len(left[x]), x))
        for c in sorted(left[lab], key=rank.get):
            f = max((f for f in range(p.k) if free[f] > 0),
                    key=lambda f: (lab in cover and have[lab][f] == 0, want[lab][f] - have[lab][f],
                                   free[f], -f))
            assign[c], free[f] = f, free[f] - 1
            todo.discard(c)
            for other in labels_of[c]:
                have[other][f] += 1
    for c in sorted(todo, key=rank.get):
        f = max(range(p.k), key=lambda f: (free[f], -f))
        assign[c], free[f] = f, free[f] - 1
    return [int(f) for f in assign]


# --- writing and plotting --------------------------------------------------------------------
def splits_text(splits) -> str:
    """The file text, formatted as nnU-Net's own save_json writes it."""
    return json.dumps(splits, sort_keys=True, indent=4) + "\n"


def backup_path(path: Path, now: float | None = None) -> Path:
    """A free `splits_final.json.bak-YYYYmmdd-HHMMSS[-N]` name next to path."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    cand = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while cand.exists():
        n += 1
        cand = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    return cand


def _copy_durably(src: Path, dst: Path) -> None:
    """Copy bytes to a temp file in dst's folder, fsync, rename: never a torn backup."""
    atomic_write_bytes(dst, src.read_bytes())


LEFTOVER_REASON = "temp file left by an interrupted splits write"


def leftover_temps(path: Path | str) -> list[Path]:
    """Temp files a killed write of `path` (or of one of its backups) left next to it.

    Exactly atomic_write_bytes's `.{name}.{12 hex}.tmp`, which nothing else names so. The
    sweep holds the dataset lock, so it never races a repair; a live rebalance's temp file
    exists only for the milliseconds of its write.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}(\.bak-\d{{8}}-\d{{6}}(-\d+)?)?\.[0-9a-f]{{12}}\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    found = [path.parent / n for n in sorted(names) if pattern.fullmatch(n)]
    return [p for p in found if p.is_file() and not p.is_symlink()]


def quarantine_leftovers(path: Path | str, journal=None) -> list[str]:
    """Move `leftover_temps(path)` into a repair quarantine, journalled, so `quarantine list`
    shows them and `restore` can put them back (nothing is deleted). Returns their names.

    Without a journal (`splits rebalance`) a run of its own is opened under the dataset lock,
    and only when there is something to move: a clean dataset gets no `.dataguard/`.
    """
    path = Path(path)
    if not leftover_temps(path):
        return []
    if journal is not None:
        return [_hold(journal, p) for p in leftover_temps(path)]

    try:
        with DatasetLock(path.parent):
            j = Journal(path.parent, new_run_id())
            return [_hold(j, p) for p in leftover_temps(path)]
    except OSError as e:
        raise SplitError(f"cannot move leftover temp files out of {path.parent}: {e.strerror or e}") from None


def _hold(journal, p: Path) -> str:
    journal.quarantine_file(p.relative_to(journal.root).as_posix(), reason=LEFTOVER_REASON)
    return p.name


def write_splits(path: Path | str, splits, dry_run: bool = False, *, journal=None,
                 reason: str = "") -> Path | None:
    """The one splits writer (`splits rebalance`, repair, the TUI): validate, then write atomically.

    Without a journal the previous file is kept as a timestamped backup next to it; with
    a repair journal it goes to that run's quarantine, so `dataguard restore` undoes it.
    Returns where the previous file went (None when there was none, or on dry_run, which
    writes nothing). Nothing is ever deleted.
    """
    problems = structure_problems(splits)
    if problems:
        raise SplitError(f"refusing to write malformed splits: {problems[0]}")
    path = Path(path)
    if dry_run:
        return None
    if journal is not None:
        staged = journal.staging / path.name
        atomic_write_text(staged, splits_text(splits))
        held = None
        if path.exists():
            held = journal.quarantine_file(path.name, reason=reason)
        journal.place_file(staged, path.name)
        return held
    backup = None
    if path.exists():
        backup = backup_path(path)
        _copy_durably(path, backup)
    atomic_write_text(path, splits_text(splits))
    return backup


def plot_heatmap(table, path: Path | str, regions: dict[int, tuple[int, ...]] | None = None) -> Path:
    """PNG heatmap: folds x labels, each cell the number of validation cases with the label.

    Uses matplotlib's object API with the Agg canvas, so no GUI backend or global pyplot
    state is touched. `regions` (key -> values) names region columns (see `class_heading`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = table.pivot(index="fold", columns="label", values="val").sort_index()
    names = table.drop_duplicates("label").set_index("label")["name"]
    fig = Figure(figsize=(1.6 + 1.1 * max(1, grid.shape[1]), 1.2 + 0.5 * max(1, grid.shape[0])))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(grid.to_numpy(), cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(grid.shape[1]), [class_heading(int(lab), names.to_dict(), regions) for lab in grid.columns],
                  rotation=30, ha="right")
    ax.set_yticks(range(grid.shape[0]), [f"fold {f}" for f in grid.index])
    top = grid.to_numpy().max() if grid.size else 0
    for (i, j), v in _cells(grid):
        ax.text(j, i, str(v), ha="center", va="center",
                color="red" if v == 0 else ("black" if v > top / 2 else "white"),
                fontweight="bold" if v == 0 else "normal")
    ax.set_title("validation cases containing each label")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=100)
    return Path(path)


def _cells(grid):
    arr = grid.to_numpy()
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            yield (i, j), int(arr[i, j])

# --- patients: one validation fold per patient -------------------------------------------------
def rebalance_grouped(case_labels: dict[str, set[int]], groups: dict[str, str], folds: int = 5, seed: int = 0, *,
                      time_limit: float = MILP_TIME_LIMIT, names: dict[int, str] | None = None,
                      ) -> tuple[list[dict[str, list[str]]], list[str]]:
    """Stratified splits that never put one patient on both sides of a fold: (splits, notes).

    Hard: (c) every case in exactly one validation set and (p) all cases of a patient in the
    same one. Then, as far as (p) allows: (a) every label found in >= `folds` patients is in
    every validation set; validation sizes as close to equal as the patients' sizes allow;
    label counts close to proportional. When (a) cannot hold without splitting a patient,
    (a) gives way and `notes` says for which labels; (p) never does.
    """
    cases = sorted(case_labels)
    if len(set(groups.get(c, c) for c in cases)) < folds:
        raise SplitError(f"{len(set(groups.get(c, c) for c in cases))} patients cannot fill {folds} validation "
                         f"sets without splitting one; use fewer folds")
    p = _problem(case_labels, folds, seed)
    p.names = dict(names or {})
    gid: dict[str, int] = {}
    group_of = [gid.setdefault(groups.get(c, c), len(gid)) for c in p.cases]
    notes: list[str] = []
    assign = _solve_grouped(p, group_of, cover=True, time_limit=time_limit)
    if assign is None:
        assign = _solve_grouped(p, group_of, cover=False, time_limit=time_limit)
        if assign is not None:
            splits = _to_splits(p, assign)
            missing = sorted({lab for _, lab in coverage_gaps(splits, {c: case_labels[c] for c in p.cases})})
            if missing:
                notes.append("keeping every patient in one validation set leaves "
                             + ", ".join(_label_word(p, lab) for lab in missing)
                             + " out of some validation sets: the label guarantee gives way, the patients do not")
    if assign is None:
        assign = _greedy_grouped(p, group_of)
    splits = _to_splits(p, assign)
    sizes = sorted(len(s["val"]) for s in splits)
    if sizes[-1] - sizes[0] > 1:
        notes.append(f"validation sets of {sizes[0]} to {sizes[-1]} cases: patients of several cases do not "
                     f"divide evenly")
    return splits, notes


def _group_cover(p: _Problem, group_of: list[int]) -> list[int]:
    """Labels found in at least k patients: those can be in every validation set."""
    return [lab for lab, m in p.members.items() if len({group_of[c] for c in m}) >= p.k]


def _solve_grouped(p: _Problem, group_of: list[int], cover: bool, time_limit: float) -> list[int] | None:
    """The MILP of _solve_milp over patients: one 0/1 variable per (patient, fold)."""
    try:
        import numpy as np
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_array
    except ImportError:
        return None
    n, k, labels = p.n, p.k, list(p.members)
    g = max(group_of) + 1
    size = np.bincount(group_of, minlength=g)
    nx, nd, ne = g * k, len(labels) * k, k
    rows, cols, vals, lo, hi, add = _constraints()

    for q in range(g):                                     # (c)+(p) one val set per patient
        add([(q * k + f, 1) for f in range(k)], 1, 1)
    for f in range(k):                                     # sizes: |size_f - target_f| <= e_f, size_f >= 1
        xs = [(q * k + f, int(size[q])) for q in range(g)]
        add(xs, 1, np.inf)
        add(xs + [(nx + nd + f, -1)], -np.inf, p.sizes[f])
        add(xs + [(nx + nd + f, 1)], p.sizes[f], np.inf)
    covered = set(_group_cover(p, group_of)) if cover else set()
    for li, lab in enumerate(labels):
        per_group = np.bincount([group_of[c] for c in p.members[lab]], minlength=g)
        for f in range(k):
            xs = [(q * k + f, int(per_group[q])) for q in range(g) if per_group[q]]
            if lab in covered:
                add(xs, 1, np.inf)
            target = len(p.members[lab]) * p.sizes[f] / n
            add(xs + [(nx + li * k + f, -1)], -np.inf, target)
            add(xs + [(nx + li * k + f, 1)], target, np.inf)
    weights = np.repeat([1.0 / len(p.members[lab]) for lab in labels], k)
    size_weight = np.full(ne, float(len(labels) + 1))     # a case of size imbalance outweighs label balance
    rng = np.random.default_rng(p.seed)
    tie = rng.random(nx) * (1e-4 / max(n, 1)) * (weights.min() if nd else 1.0)
    res = milp(np.concatenate([tie, weights, size_weight]),
               integrality=np.r_[np.ones(nx), np.zeros(nd + ne)],
               bounds=Bounds(np.zeros(nx + nd + ne), np.r_[np.ones(nx), np.full(nd + ne, np.inf)]),
               constraints=LinearConstraint(coo_array((vals, (rows, cols)), shape=(len(lo), nx + nd + ne)), lo, hi),
               options={"time_limit": time_limit, "node_limit": MILP_NODE_LIMIT})
    if res.x is None:
        return None
    per_group = res.x[:nx].reshape(g, k).argmax(axis=1)
    return [int(per_group[group_of[c]]) for c in range(n)]


def _greedy_grouped(p: _Problem, group_of: list[int]) -> list[int]:
    """Without scipy: patients largest first, each to the fold that lacks one of its labels
    (must-cover ones first), else the one with the fewest cases."""
    g = max(group_of) + 1
    cases_of: dict[int, list[int]] = {q: [] for q in range(g)}
    for c, q in enumerate(group_of):
        cases_of[q].append(c)
    labels_of = {q: {lab for lab, m in p.members.items() for c in cases_of[q] if c in m} for q in range(g)}
    cover = set(_group_cover(p, group_of))
    have = [set() for _ in range(p.k)]
    load = [0] * p.k
    out = [0] * p.n
    for q in sorted(range(g), key=lambda q: (-len(cases_of[q]), q)):
        f = max(range(p.k), key=lambda f: (len((labels_of[q] & cover) - have[f]), -load[f], -f))
        for c in cases_of[q]:
            out[c] = f
        load[f] += len(cases_of[q])
        have[f] |= labels_of[q]
    return out
