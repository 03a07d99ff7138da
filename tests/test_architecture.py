"""The shape of the code: a layer table no import runs up, no import cycles, the registry dispatches.

Imports are read with `ast` from the source (module level and inside functions alike),
so a lazy import that closes a cycle is caught too.
"""
from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

import dataguard
from conftest import codes
from dataguard.checks import DatasetCheck, FileCheck, Selection, register, unregister
from dataguard.findings import finding

PKG = Path(dataguard.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def import_graph(packages: bool = False) -> dict[str, set[str]]:
    """module -> dataguard modules it imports (anywhere in its body, except type-checking blocks);
    with `packages`, also the package __init__ files those imports run (for the cycle tests; the
    layer tests judge the module imported, which implies its packages)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue                     # `if TYPE_CHECKING:` imports never run
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from . import x` may name a submodule
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in mods else stem for a in node.names]
            elif isinstance(node, ast.Call):
                targets = _import_module_names(node, mod, pkg)
            for t in targets:
                while t and t not in mods:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != mod and t.startswith("dataguard"):
                    graph[mod].add(t)
                    # importing a.b.c runs a/b/__init__ first: an edge to every package above t
                    # that mod is not inside of (its own packages are already initialised)
                    parts = t.split(".") if packages else []
                    for i in range(2, len(parts)):
                        parent = ".".join(parts[:i])
                        if parent in mods and not (mod == parent or mod.startswith(parent + ".")):
                            graph[mod].add(parent)
    return graph


def _import_module_names(call: ast.Call, mod: str, pkg: str) -> list[str]:
    """`importlib.import_module("dataguard.x")`, or `(".x", __name__)` / `(".x", __package__)`:
    the module a string literal names (a name computed at run time cannot be read here)."""
    fn = call.func
    if not (isinstance(fn, ast.Attribute) and fn.attr == "import_module"
            or isinstance(fn, ast.Name) and fn.id == "import_module"):
        return []
    if not call.args or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
        return []
    name = call.args[0].value
    if not name.startswith("."):
        return [name]
    anchor = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "package"), None)
    if isinstance(anchor, ast.Name) and anchor.id in ("__name__", "__package__"):
        base = mod if anchor.id == "__name__" else pkg
    elif isinstance(anchor, ast.Constant) and isinstance(anchor.value, str):
        base = anchor.value
    else:
        return []
    level = len(name) - len(name.lstrip("."))
    parts = base.split(".")
    parts = parts[: len(parts) - (level - 1)]
    return [".".join(parts + ([name.lstrip(".")] if name.lstrip(".") else []))]


def package_of(mod: str) -> str:
    """`dataguard.checks.splits` -> `dataguard.checks`; a top-level module stays itself."""
    parts = mod.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PKG / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return mod


def package_graph() -> dict[str, set[str]]:
    """The module graph collapsed to dataguard's packages and top-level modules."""
    out: dict[str, set[str]] = {}
    for m, ts in import_graph().items():
        out.setdefault(package_of(m), set()).update(package_of(t) for t in ts)
    for p, ts in out.items():
        ts.discard(p)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_packages_an_import_initialises():
    graph = import_graph(packages=True)
    # `from ..engine.journal import ...` runs dataguard/engine/__init__.py first
    assert "dataguard.engine" in graph["dataguard.splits.folds"]


def test_every_module_imports_in_a_fresh_interpreter():
    """The graph test reads source; this runs it: no module fails to import on its own
    (a cycle through a package __init__ shows up here as 'partially initialized')."""
    import subprocess
    import sys

    mods = sorted(m for m in _modules() if m != "dataguard.__main__")
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    for m in mods:                  # one interpreter each: the order of imports must not matter
        out = subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True)
        assert out.returncode == 0, f"import {m}: {out.stderr.strip().splitlines()[-1:]}"


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    src = (PKG / "cli" / "tui.py").read_text()
    assert "from ..tui.app import" in src.split("\ndef ", 1)[1]         # imported inside a function
    assert "dataguard.tui.app" in graph["dataguard.cli.tui"]
    assert "dataguard.engine.scanner" in graph["dataguard.workspace"]


def test_the_graph_sees_import_module_names():
    call = ast.parse('importlib.import_module("dataguard.splits.folds")').body[0].value
    assert _import_module_names(call, "dataguard.x", "dataguard") == ["dataguard.splits.folds"]
    call = ast.parse('importlib.import_module(".folds", __name__)').body[0].value
    assert _import_module_names(call, "dataguard.splits", "dataguard.splits") == ["dataguard.splits.folds"]
    call = ast.parse('import_module("..engine.journal", package=__package__)').body[0].value
    assert _import_module_names(call, "dataguard.splits.folds", "dataguard.splits") == ["dataguard.engine.journal"]
    call = ast.parse('importlib.import_module(f".{name}", __name__)').body[0].value
    assert _import_module_names(call, "dataguard", "dataguard") == []       # computed: cannot be read


def test_no_package_imports_another_in_a_loop():
    """Collapsed to packages (`dataguard.checks.x` -> `dataguard.checks`; a top-level module is
    itself), with function-level imports and `importlib.import_module` names counted, no two
    packages reach each other."""
    graph = package_graph()
    loops = _cycles(graph)
    edges = [f"{a} -> {b}" for comp in loops for a in comp for b in sorted(graph[a] & set(comp))]
    assert loops == [], "package loops: " + "; ".join(edges)


FACES = ("dataguard.__main__", "dataguard.cli", "dataguard.tui", "dataguard.report", "dataguard.demo")


def test_faces_go_through_the_workspace():
    """A face imports other faces, the Workspace and the vocabulary: nothing of the engine or of
    a feature, so no face can re-implement a check or a pipeline step. What a face needs of a
    feature comes back from a Workspace method (with methods of its own: ctx.table, ev.worst)."""
    graph = import_graph()
    reach = sorted((m, t) for m, ts in graph.items() if m.startswith(FACES) for t in ts
                   if not t.startswith(FACES) and LAYERS[layer_of(t)][0] not in ("workspace", "vocabulary"))
    assert reach == [], "faces importing past the Workspace: " + ", ".join(f"{m} -> {t}" for m, t in reach)


HEAVY = ("numpy", "torch", "nnunetv2", "SimpleITK", "pandas", "textual", "dask", "distributed", "matplotlib",
         "scipy", "blosc2", "nibabel", "jinja2", "playwright")


def _loads_heavy_at_import(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    names = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and not n.level and n.module]
    return any(x.split(".")[0] in HEAVY for x in names)


def test_internal_imports_sit_at_the_top():
    """A function-level import is for a heavy third-party package only (so `import dataguard`
    and `--help` stay light); a dataguard module goes at the top of the module, unless importing
    it loads a heavy package at once (the Textual app)."""
    mods = _modules()
    heavy = {m for m, p in mods.items() if _loads_heavy_at_import(p)}
    late = []
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").startswith("dataguard")):
                    continue
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
                stem = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                targets = {f"{stem}.{a.name}" if f"{stem}.{a.name}" in mods else stem for a in node.names}
                if not targets & heavy:
                    late.append(f"{mod}:{node.lineno} {ast.unparse(node)}")
    assert sorted(set(late)) == [], "internal imports inside functions (move them to the top): " + "; ".join(late)


# --- the layer table: faces > workspace > features > engine > checks > vocabulary ----------------
# (layer, module prefixes, why it sits there). An import may go sideways within a layer or
# down; never up. Longest prefix wins; `dataguard` alone names only the package's own __init__.
LAYERS = [
    ("package", ("dataguard",), "the package's __init__: the public names, imported from every layer below"),
    ("faces", ("dataguard.__main__", "dataguard.cli", "dataguard.tui", "dataguard.report", "dataguard.demo"),
     "what a person runs or reads: they render findings and call the Workspace"),
    ("workspace", ("dataguard.workspace", "dataguard.handles"),
     "the one door, and the dataset handles it hands out: every face goes through it"),
    ("features", ("dataguard.repair", "dataguard.nnunet", "dataguard.splits", "dataguard.train", "dataguard.submit",
                  "dataguard.evaluate", "dataguard.doctor", "dataguard.audit"),
     "work built on scans: repair, splits, training, submission, evaluation, the environment and resources"),
    ("engine", ("dataguard.engine",), "finding datasets, walking, scanning, the manifest; knows no feature"),
    ("checks", ("dataguard.checks",), "pure checks of one file or one dataset view; know no engine"),
    ("vocabulary", ("dataguard.version", "dataguard.findings", "dataguard.errors", "dataguard.fsio",
                    "dataguard.spec", "dataguard.folds", "dataguard.visual", "dataguard.names",
                    "dataguard.suspects"),
     "words every layer may use: the version, findings, errors, file I/O, the dataset.json and "
     "splits_final.json models, label colours, did-you-mean for names"),
]
# Arrows that still run up a layer, each with the reason it is not fixed yet. The test fails when
# a new one appears, and also when one of these disappears (then delete its line): the list only shrinks.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def layer_of(mod: str) -> int:
    best = None
    for i, (_, prefixes, _) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or (p != "dataguard" and mod.startswith(p + "."))) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{mod} is in no layer: add it to LAYERS"
    return best[0]


def test_every_module_has_a_layer():
    for mod in import_graph():
        layer_of(mod)


def test_no_import_runs_up_a_layer():
    up = {(m, t) for m, ts in import_graph().items() for t in ts if layer_of(t) < layer_of(m)}
    new = sorted(up - set(KNOWN_UPWARD))
    assert new == [], "imports that run up a layer: " + ", ".join(
        f"{m} ({LAYERS[layer_of(m)][0]}) -> {t} ({LAYERS[layer_of(t)][0]})" for m, t in new)
    gone = sorted(set(KNOWN_UPWARD) - up)
    assert gone == [], f"fixed, so delete from KNOWN_UPWARD: {gone}"


def test_no_import_cycles_at_all():
    """Parent<->child edges included: a package __init__ importing a submodule that imports
    the package back is a cycle too."""
    assert _cycles(import_graph(packages=True)) == []


# --- the registry is the dispatch -------------------------------------------------------------
def _shouting_pkl(inp):
    data = inp.data or b""
    if b"SHOUT" in data:
        return [finding("DG001", inp.task.rel, "test check saw SHOUT", case=inp.task.case)], {"shout": True}
    return [], {"shout": False}


def test_a_check_registered_in_a_test_runs_and_is_selectable(tiny_pre, tmp_path):
    cfg = tiny_pre / "nnUNetPlans_3d_fullres"
    (cfg / "case_1.pkl").write_bytes((cfg / "case_1.pkl").read_bytes() + b"SHOUT")
    check = register(FileCheck("test-shout", ("DG001",), "test only", _shouting_pkl,
                               kinds=frozenset({"pkl"})))
    try:
        ws = dataguard.Workspace([str(tiny_pre)], manifest_dir=tmp_path / "m", jobs=1)
        res = ws.scan()
        shouts = [f for f in codes(res, "DG001") if f.message == "test check saw SHOUT"]
        assert [f.path.rsplit("/", 1)[-1] for f in shouts] == ["case_1.pkl"]
        assert res.views[tiny_pre.name].results["preprocessed/nnUNetPlans_3d_fullres/case_1.pkl"].facts["shout"]
        # its version is recorded: bumping it re-reads only the files it covers (.pkl)
        register(FileCheck("test-shout", ("DG001",), "test only", _shouting_pkl,
                           kinds=frozenset({"pkl"}), version=check.version + 1))
        again = ws.scan()
        assert again.stats.read and all(r.endswith(".pkl") for r in again.stats.read)
        assert len(again.stats.read) == 3
    finally:
        unregister("test-shout")


def test_a_dataset_check_that_raises_becomes_dg001(tiny_pre, tmp_path):
    def boom(view):
        raise KeyError("no such thing")

    register(DatasetCheck("test-boom", ("DG001",), "test only", boom))
    try:
        res = dataguard.Workspace([str(tiny_pre)], manifest_dir=tmp_path / "m", jobs=1).scan()
        [f] = [f for f in codes(res, "DG001") if "test-boom" in f.message]
        assert "KeyError" in f.message and f.dataset == tiny_pre.name
    finally:
        unregister("test-boom")


def test_select_dg5_skips_every_decompressing_check():
    sel = Selection.of(select=["DG5"])
    assert sel.dataset == ("splits",)
    assert sel.for_kind("npz") == () and sel.for_kind("b2nd") == ()
    assert set(sel.for_kind("pkl")) == {"pkl"}          # labels per case come from class_locations
    assert "npz" not in Selection.of(ignore=["DG2"]).for_kind("npz")
    assert "npz" in Selection.of().for_kind("npz")


def test_register_refuses_what_is_not_a_check():
    with pytest.raises(TypeError):
        register(object())


def test_cancel_before_start_reads_nothing(tiny_pre, tmp_path):
    stop = threading.Event()
    stop.set()
    res = dataguard.Workspace([str(tiny_pre)], manifest_dir=tmp_path / "m", jobs=2).scan(cancel=stop)
    assert res.cancelled and res.stats.checked == 0
