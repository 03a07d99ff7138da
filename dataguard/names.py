""""Did you mean": the one way a command answers a name it does not know.

`dataguard train 901 3d_fulres 0` answered "(have: 2d, 3d_fullres)" from the start; every
command that takes a configuration, a dataset id or a dataset name answers the same way
through `unknown()`: the close matches first (difflib, as git and argparse do), then the names
that exist, wrapped to fit 80 columns. Standard library only: any layer may use it.
"""
from __future__ import annotations

import difflib
import textwrap

__all__ = ["close", "hint", "unknown"]

WIDTH = 78          # "dataguard: error: " starts the first line; the rest are indented
MAX_LISTED = 12     # names listed after "have:"; more are counted


def close(word: str, names, n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The names closest to `word` (best first), case-insensitively; a bare id (`901`) also
    matches the names it is the number of (`Dataset901_Heart`)."""
    names = [str(x) for x in dict.fromkeys(names)]
    if not names or not word:
        return []
    by_lower: dict[str, str] = {}
    for x in names:
        by_lower.setdefault(x.lower(), x)
    w = str(word).lower()
    scored = sorted(((difflib.SequenceMatcher(None, w, k).ratio(), k) for k in by_lower), reverse=True)
    best = scored[0][0] if scored else 0.0
    # the best match and those about as good: "3d_fulres" is 3d_fullres, not also 3d_lowres
    out = [by_lower[k] for r, k in scored[:n] if r >= cutoff and r >= best - 0.05]
    if str(word).isdigit():     # an id: the datasets whose number is near it by digits, too
        ids = {x: x[7:10] for x in names if x.startswith("Dataset") and x[7:10].isdigit()}
        want = f"{int(word):03d}" if len(str(int(word))) <= 3 else str(word)
        for m in difflib.get_close_matches(want, list(dict.fromkeys(ids.values())), n=n, cutoff=0.6):
            out += [x for x, i in ids.items() if i == m and x not in out]
    return out[:n]


def hint(word: str, names, what: str = "names") -> str:
    """The lines that follow "no X 'word'": "did you mean A?" (when one is close) and
    "have: a, b, c" (or "there are none"), each indented, wrapped to 80 columns."""
    names = [str(x) for x in dict.fromkeys(names)]
    lines = []
    near = close(word, names)
    if near:
        lines.append("did you mean " + " or ".join(near) + "?")
    if names:
        shown = names[:MAX_LISTED]
        more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
        lines.append(f"(have: {', '.join(shown)}{more})")
    else:
        lines.append(f"(there are no {what} here)")
    out = []
    for ln in lines:
        out += textwrap.wrap(ln, WIDTH - 2, break_on_hyphens=False, break_long_words=False) or [""]
    return "\n".join("  " + ln for ln in out)


def unknown(what: str, word: str, names, where: str = "") -> str:
    """A whole message: "no configuration '3d_fulres' in nnUNetPlans.json" and its hint lines.
    `what` is singular ("configuration", "dataset"); `where` (optional) follows the name."""
    head = f"no {what} {word!r}" + (f" {where}" if where else "")
    return head + "\n" + hint(word, names, what + "s")
