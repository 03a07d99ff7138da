"""The TUI's screens: a case (files, findings, slice preview), the folds, the modals, help."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static

from ..errors import SplitError
from ..findings import catalogue, name_breaks, path_lines, printable
from ..visual import WINDOWS, fit, label_colour, slice_rgb
from .halfblock import to_text
from .rows import STATUS_STYLE


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def plan_table(plan, width: int = 58):
    """The repair plan as scan groups findings: one table per dataset (its name the title),
    codes (one per line, never split) -> target -> action with the files it touches under it;
    blocked actions say why (yellow). width: the columns the plan gets (58 in the modal on an
    80-column terminal); paths break after slashes and underscores only."""
    path_width = max(16, (width - 15) // 2)        # codes 5, borders and padding 10
    tables = []
    for name, actions in _by_dataset(plan).items():
        t = Table(title=Text(printable(name), style="bold"), title_justify="left", expand=True,
                  header_style="bold")
        t.add_column("codes", no_wrap=True, min_width=5)
        t.add_column("target", ratio=1, overflow="fold")
        t.add_column("action", ratio=1, overflow="fold")
        for a in actions:
            action = Text(name_breaks(printable(a.describe()), path_width)) if not a.blocked else \
                Text(name_breaks(f"blocked: {printable(a.blocked)}", path_width), style="yellow")
            files = [printable(f) for f in a.files]
            if files and files != [printable(a.target)]:
                action.append("\nfiles touched:", style="dim")
                for f in files:
                    action.append("\n" + path_lines(f, path_width), style="dim")
            codes = "\n".join(c for c in a.codes.split(",") if c) or "-"
            t.add_row(codes, Text(path_lines(printable(a.target), path_width)), action)
        tables.append(t)
    return Group(*tables)


def _by_dataset(plan) -> dict[str, list]:
    out: dict[str, list] = {}
    for a in plan:
        out.setdefault(a.dataset, []).append(a)
    return out


class ConfirmModal(ModalScreen[bool]):
    """A question; `y`/`enter` answers yes, `escape`/`n` no."""
    BINDINGS = [Binding("y,enter", "yes", "yes"), Binding("escape,n", "no", "no")]
    DEFAULT_CSS = """
    ConfirmModal { align: center middle; }
    ConfirmModal > Vertical { width: 80%; max-width: 100; height: auto; max-height: 90%;
                              border: thick $warning; background: $surface; padding: 1 2; }
    ConfirmModal VerticalScroll { height: auto; max-height: 30; }
    ConfirmModal .hint { color: $text-muted; margin-top: 1; }
    """
    HINT = "y / enter: yes    escape: no"

    def __init__(self, question, body=None):
        super().__init__()
        self.question, self.body = question, body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.question, style="bold"))
            if self.body is not None:
                with VerticalScroll():
                    yield Static(self.body)
            yield Static(self.HINT, classes="hint")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class PlanModal(ConfirmModal):
    """The repair plan: what each action does and the files it touches; `y` or `enter` applies it."""
    HINT = "y / enter: apply the plan    escape / n: cancel, nothing changes"

    def __init__(self, plan):
        n = len([a for a in plan if not a.blocked])
        blocked = len(plan) - n
        q = f"Apply {n} repair action(s)? Press y or enter to apply, escape to cancel." + \
            (f" ({blocked} blocked, shown in yellow)" if blocked else "")
        super().__init__(q + "  Nothing is deleted; `u` undoes the run.", plan_table(plan))
        self.plan = plan

    def compose(self) -> ComposeResult:
        # the plan's paths break to the modal's width: 80% of the terminal (at most 100), less
        # the border and padding
        self.body = plan_table(self.plan, min(100, self.app.size.width * 4 // 5) - 6)
        yield from super().compose()


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: 72; max-width: 100%; height: auto; max-height: 100%;
                          border: thick $primary; background: $surface; padding: 0 1; }
    """
    TEXT = """[b]dataguard tui[/b]: your nnU-Net cases, what is wrong, repairs.

[b]cases[/b]
  ↑↓ move       enter open case     / filter (text, DG2, error)
  n / N  next / previous problem    click a header to sort
  space mark    r repair marked or current    R repair all fixable
  u undo the latest repair          f folds x labels    s rescan
  a audit labels (suspects, ranked) ctrl+p commands     ? help
  q quit
[b]case[/b]
  [ ] or PageUp/PageDown slices     a axis    o overlay
  w window (auto, CT presets)       s source (raw / configuration)
  r repair this case                escape back
[b]audit[/b]
  enter the suspect's slice, its label outlined   [ ] slices
[b]folds[/b]
  b rebalance (plan, confirm, apply; u undoes)   escape back

Nothing is ever deleted: `u` or `dataguard restore` puts every
file back byte for byte. Over SSH pictures are Unicode half
blocks in 24-bit colour: no graphics protocol needed."""

    def compose(self) -> ComposeResult:
        yield Static(self.TEXT)

    def action_close(self) -> None:
        self.dismiss(None)


class CaseScreen(Screen):
    """One case: its files, findings with their explanation and fix, and a slice preview."""
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("left_square_bracket,pageup", "slice(-1)", "prev slice"),
        Binding("right_square_bracket,pagedown", "slice(1)", "next slice"),
        Binding("a", "axis", "axis"),
        Binding("o", "overlay", "overlay"),
        Binding("w", "window", "window"),
        Binding("s", "source", "source"),
        Binding("r", "repair", "repair case"),
    ]
    DEFAULT_CSS = """
    CaseScreen #title { height: 1; padding: 0 1; background: $boost; }
    CaseScreen #left { width: 1fr; }
    CaseScreen #right { width: 1fr; min-width: 30; }
    CaseScreen #files { height: auto; max-height: 12; }
    CaseScreen #findings { height: 1fr; padding: 0 1; }
    CaseScreen #preview-title { height: 1; padding: 0 1; }
    CaseScreen #preview { height: auto; padding: 0 1; }
    CaseScreen #legend { height: auto; padding: 0 1; }
    """
    def __init__(self, ws, row):
        super().__init__()
        self.ws, self.row = ws, row
        self.info = row.info
        self.axis, self.index, self.overlay, self.window = 0, None, True, 0
        self.sources = []
        self.source = 0
        self.names: dict[int, str] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Horizontal():
            with Vertical(id="left"):
                yield DataTable(id="files", cursor_type="row")
                with VerticalScroll(id="findings"):
                    yield Static(id="findings-text")
            with Vertical(id="right"):
                yield Static(id="preview-title")
                yield Static(id="preview")
                yield Static(id="legend")
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#files", DataTable)
        for col in ("file", "in", "size", "blake3", "status", "findings"):
            t.add_column(col)
        parts = [(f"{self.row.case}   ", "bold"), (f"{self.row.status}   ", STATUS_STYLE.get(self.row.status, "")),
                 (f"{self.row.dataset}   ", "")]
        if self.info is not None and self.info.val_fold is not None:
            parts += [(f"validation fold {self.info.val_fold}", "")]
        title = Text.assemble(*parts)
        self.query_one("#title", Static).update(title)
        self.load_case()

    @work(thread=True, exclusive=True, group="case")
    def load_case(self) -> None:
        """Full case (files) and the repair plan for it; both from the Workspace."""
        info, plan, names, err = self.info, [], {}, None
        try:
            if self.info is not None:
                info = self.ws.case(self.row.dataset, self.row.case)
            plan = [a for a in self.ws.repair.plan() if a.dataset == self.row.dataset and (
                (info is not None and a.case == info.case) or a.target in {f.path for f in self.row.findings})]
            names = self.ws.dataset(self.row.dataset).label_names()
        except Exception as e:  # noqa: BLE001 - shown on screen, never a traceback
            err = e
        self.app.call_from_thread(self.show_case, info, plan, names, err)

    def show_case(self, info, plan, names, err) -> None:
        self.info, self.names = info, names
        t = self.query_one("#files", DataTable)
        t.clear()
        files = info.files if info is not None else []
        for f in files:
            worst = max((x.severity for x in f.findings), default=None)
            status = "ok" if worst is None else str(worst)
            folder, _, name = f.rel.rpartition("/")
            t.add_row(name, folder.split("/", 1)[-1], _human(f.size), (f.blake3 or "-")[:10],
                      Text(status, style=STATUS_STYLE.get(status, "")),
                      ",".join(sorted({x.code for x in f.findings})) or "-")
        findings = info.findings if info is not None else self.row.findings
        self.query_one("#findings-text", Static).update(self.findings_text(findings, plan, err))
        if info is not None:
            self.sources = (["raw"] if "raw" in info.facts else []) + list(info.configs)
            self.draw()
        else:
            self.query_one("#preview", Static).update(Text("a stray file: no image to show", style="dim"))

    def findings_text(self, findings, plan, err) -> Text:

        out = Text()
        if err is not None:
            out.append(f"{type(err).__name__}: {err}\n", style="bold red")
        if not findings:
            out.append("no findings: this case is clean\n", style="green")
        by_target = {}
        for a in plan:
            for f in a.findings:
                by_target[(f.code, f.path)] = a
        seen = set()
        for f in findings:
            out.append(f"{f.code} ", style=STATUS_STYLE.get(str(f.severity), ""))
            out.append(f"{f.path}\n", style="bold")
            out.append(f"  {f.message}\n")
            if f.help:
                out.append(f"  help: {f.help}\n", style="dim")
            a = by_target.get((f.code, f.path)) or next((a for a in plan if a.case == f.case), None)
            if a is not None:
                out.append("  fix: ", style="bold")
                out.append(f"{a.describe()}\n" if not a.blocked else f"blocked: {a.blocked}\n",
                           style="green" if not a.blocked else "yellow")
            if f.code not in seen:
                seen.add(f.code)
                info = catalogue().get(f.code)
                if info is not None:
                    out.append(f"  {info.what.replace('`', '')}\n", style="dim")
            out.append("\n")
        return out

    # --- the slice preview -------------------------------------------------------------------------
    def draw(self) -> None:
        if not self.sources:
            test = self.info is not None and getattr(self.info, "test", False)
            self.query_one("#preview", Static).update(Text(
                "a test image (imagesTs): the preview draws imagesTr and the configuration folders "
                "only; `dataguard report` shows its middle slice" if test else "no image files for this case",
                style="dim"))
            return
        right = self.query_one("#right")
        legend_lines = 2 + len([v for v in (self.info.labels or {}) if v > 0]) if self.info else 2
        w, h = max(10, right.size.width - 2), max(5, right.size.height - 1 - legend_lines)
        self.render_slice(self.sources[self.source], self.axis, self.index, self.overlay,
                          WINDOWS[self.window], w, h)

    @work(thread=True, exclusive=True, group="slice")
    def render_slice(self, source, axis, index, overlay, window, w, h) -> None:
        import numpy as np


        info = self.info
        facts = info.facts.get(source) if info is not None else None
        try:
            img, lab = self.ws.dataset(self.row.dataset).load_slice(self.row.case, axis=axis, index=index,
                                                                    source="raw" if source == "raw" else "preprocessed",
                                                                    config=None if source == "raw" else source)
        except Exception as e:  # noqa: BLE001 - a broken file is said, not drawn
            msg = Text(f"cannot draw {source}: {e}", style="bold red")
            self.app.call_from_thread(self.show_slice, msg, Text(), source, axis, None, None)
            return
        shape = facts.shape if facts is not None and facts.shape else None
        n = shape[axis] if shape else None
        idx = index if index is not None else (n // 2 if n else None)
        sp = facts.spacing if facts is not None and facts.spacing else None
        pix_spacing = tuple(s for i, s in enumerate(sp) if i != axis) if sp and len(sp) == 3 else None
        rgb = fit(slice_rgb(img, lab, window=window, overlay=overlay), pix_spacing, w, 2 * h)
        legend = Text()
        whole = info.labels or {}
        if lab is not None:
            for v in sorted(set(int(x) for x in np.unique(lab)) | {k for k in whole if k > 0}):
                if v <= 0:
                    continue
                legend.append("██ ", style="rgb({},{},{})".format(*label_colour(v)))
                in_case = whole.get(v, 0)
                legend.append(f"{v} {self.names.get(v, '?')}: {int(np.count_nonzero(lab == v))} px "
                              f"(case {in_case if in_case >= 0 else 'has it'})\n")
        self.app.call_from_thread(self.show_slice, to_text(rgb), legend, source, axis, idx, n)

    def show_slice(self, picture, legend, source, axis, idx, n) -> None:
        title = Text(f"{source}  axis {'zyx'[axis]}  ", style="bold")
        if idx is not None:
            title.append(f"slice {idx + 1}/{n}  ")
        title.append(f"window {WINDOWS[self.window]}  overlay {'on' if self.overlay else 'off'}", style="dim")
        self.query_one("#preview-title", Static).update(title)
        self.query_one("#preview", Static).update(picture)
        self.query_one("#legend", Static).update(legend)
        if idx is not None:
            self.index = idx

    def on_resize(self, event) -> None:
        if self.info is not None and self.sources:
            self.draw()

    def _n_slices(self) -> int | None:
        facts = self.info.facts.get(self.sources[self.source]) if self.info and self.sources else None
        return facts.shape[self.axis] if facts is not None and facts.shape else None

    def action_slice(self, step: int) -> None:
        n = self._n_slices()
        if n is None or self.index is None:
            return
        self.index = max(0, min(n - 1, self.index + step))
        self.draw()

    def action_axis(self) -> None:
        self.axis, self.index = (self.axis + 1) % 3, None
        self.draw()

    def action_overlay(self) -> None:
        self.overlay = not self.overlay
        self.draw()

    def action_window(self) -> None:
        self.window = (self.window + 1) % len(WINDOWS)
        self.draw()

    def action_source(self) -> None:
        if self.sources:
            self.source, self.index = (self.source + 1) % len(self.sources), None
            self.draw()

    def action_repair(self) -> None:
        self.app.pop_screen()
        self.app.plan_and_confirm([self.row])


class SplitsScreen(Screen):
    """Folds x labels: how many validation cases of each fold contain each label (0 in red)."""
    BINDINGS = [Binding("escape", "app.pop_screen", "back"), Binding("b", "rebalance", "rebalance")]
    DEFAULT_CSS = """
    SplitsScreen #title { height: 1; padding: 0 1; background: $boost; }
    SplitsScreen #matrix { height: auto; max-height: 24; }
    SplitsScreen #notes { height: 1fr; padding: 1 1; }
    """
    def __init__(self, ws, dataset: str):
        super().__init__()
        self.ws, self.dataset = ws, dataset
        self.ctx = None
        self.splits = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f"{self.dataset}: validation cases containing each label, per fold", style="bold"),
                     id="title")
        yield DataTable(id="matrix", cursor_type="none")
        with VerticalScroll(id="notes"):
            yield Static(id="notes-text")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="splits")
    def load(self) -> None:
        try:
            ctx, splits, table, note = self.ws.dataset(self.dataset).splits.folds_view()
            if note and not ctx.splits_path.exists():
                note += "; `b` writes a stratified one now"
        except Exception as e:  # noqa: BLE001
            self.app.call_from_thread(self.show, None, None, None, f"{type(e).__name__}: {e}")
            return
        self.app.call_from_thread(self.show, ctx, splits, table, note)

    def show(self, ctx, splits, table, note) -> None:
        self.ctx, self.splits = ctx, splits
        m = self.query_one("#matrix", DataTable)
        m.clear(columns=True)
        m.display = table is not None
        notes = Text()
        if note:
            notes.append(note + "\n", style="yellow")
        if ctx is not None and ctx.regions:
            self.query_one("#title", Static).update(
                Text(f"{self.dataset}: validation cases containing each region, per fold", style="bold"))
        if table is not None:
            fill_matrix(m, table, ctx.heading if ctx is not None else None)
        if ctx is not None:
            for f in ctx.findings:
                notes.append(f"{f.code} ", style=STATUS_STYLE.get(str(f.severity), ""))
                notes.append(f"{f.message}\n")
            if not ctx.findings and table is not None:
                notes.append(f"every fold validates every {ctx.kind} it can\n", style="green")
            notes.append("\nb: rebalance (stratified; plan, confirm, apply; `u` in the case list undoes it)",
                         style="dim")
        self.query_one("#notes-text", Static).update(notes)

    def action_rebalance(self) -> None:
        if self.ctx is None:
            return
        try:
            after = self.ctx.rebalanced(folds=len(self.splits) if self.splits else 5)
        except SplitError as e:
            self.app.notify(str(e), severity="error", title="cannot rebalance")
            return
        body = Table.grid(padding=(0, 4))
        body.add_row(Text("before", style="bold"), Text("after", style="bold"))
        before = (matrix_text(self.ctx.table(self.splits), self.ctx.heading) if self.splits
                  else Text("no usable splits_final.json"))
        body.add_row(before, matrix_text(self.ctx.table(after), self.ctx.heading))
        plan = self.ws.dataset(self.dataset).splits.plan_rebalance()
        wrapper = Table.grid()
        wrapper.add_row(body)
        wrapper.add_row(plan_table(plan))

        def chosen(ok: bool | None) -> None:
            if ok:
                self.apply(plan)
        self.app.push_screen(ConfirmModal("Write stratified splits? The current file goes to quarantine.",
                                          wrapper), chosen)

    @work(thread=True, exclusive=True, group="repair")
    def apply(self, plan) -> None:
        try:
            run = self.ws.repair.apply(plan)
        except Exception as e:  # noqa: BLE001
            self.app.call_from_thread(self.app.notify, f"{type(e).__name__}: {e}", severity="error")
            return
        ok = not run.failed
        self.app.call_from_thread(self.app.notify, "stratified splits written" if ok else
                                  f"failed: {run.failed[0].detail}", severity="information" if ok else "error")
        self.app.call_from_thread(self.load)


def _headings(table, heading) -> list[tuple[int, str]]:
    """(class key, column name) per label or region column: `heading` is SplitContext.heading
    (`2 left_ventricle`, `tumor_core [2,3]`); without it, `key name`."""
    labels = table.drop_duplicates("label")[["label", "name"]].values.tolist()
    return [(int(lab), heading(int(lab)) if heading else f"{lab} {name}") for lab, name in labels]


def fill_matrix(m: DataTable, table, heading=None) -> None:
    """fold rows x label (or region) columns, `val` counts (train in the cell too), zeros in red."""
    labels = _headings(table, heading)
    m.add_column("fold")
    m.add_column("val cases")
    for _, title in labels:
        m.add_column(title)
    for fold, rows in table.groupby("fold", sort=True):
        cells = [f"fold {int(fold)}", str(int(rows["n_val"].iloc[0]))]
        by_label = {int(r.label): (int(r.train), int(r.val)) for r in rows.itertuples()}
        for lab, _ in labels:
            tr, va = by_label.get(int(lab), (0, 0))
            cells.append(Text(f"{va}  (train {tr})", style="bold red" if va == 0 else ""))
        m.add_row(*cells)


def matrix_text(table, heading=None) -> Text:
    """The same matrix as text (val counts only), for the rebalance confirmation."""
    labels = [(lab, title[:12]) for lab, title in _headings(table, heading)]
    out = Text("fold  " + "  ".join(title for _, title in labels) + "\n", style="bold")
    for fold, rows in table.groupby("fold", sort=True):
        out.append(f"{int(fold):>4}  ")
        by_label = {int(r.label): int(r.val) for r in rows.itertuples()}
        for lab, title in labels:
            v = by_label.get(int(lab), 0)
            out.append(f"{v:>{len(title)}}  ", style="bold red" if v == 0 else "")
        out.append("\n")
    return out
