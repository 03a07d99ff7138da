"""The TUI's label audit: the ranked suspect annotations of a dataset (`a` in the case list),
and one suspect's slice with that label's outline (enter)."""
from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..findings import printable
from ..report.images import outline_rgb
from ..visual import fit, label_colour
from .halfblock import to_text

SHOWN = 200          # rows of the list (the ranking is long: every case x label)


class AuditScreen(Screen):
    """Every (case, label) of one raw dataset, most suspect first, from the data alone."""
    BINDINGS = [Binding("escape", "app.pop_screen", "back"),
                Binding("enter", "open", "show slice", show=True)]
    DEFAULT_CSS = """
    AuditScreen #title { height: 1; padding: 0 1; background: $boost; }
    AuditScreen #suspects { height: 1fr; }
    AuditScreen #why { height: 4; padding: 0 1; border-top: solid $primary; }
    """

    def __init__(self, ws, dataset: str):
        super().__init__()
        self.ws, self.dataset = ws, dataset
        self.suspects: list = []

    def compose(self) -> ComposeResult:
        yield Static(Text(f"{printable(self.dataset)}: auditing labels ...", style="bold"), id="title")
        yield DataTable(id="suspects", cursor_type="row", zebra_stripes=True)
        yield Static(id="why")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#suspects", DataTable).focus()
        self.load()

    @work(thread=True, exclusive=True, group="audit")
    def load(self) -> None:
        try:
            data, _, _ = self.ws.dataset(self.dataset).audit()
        except Exception as e:  # noqa: BLE001 - said on screen, never a traceback
            self.app.call_from_thread(self.show, None, e)
            return
        self.app.call_from_thread(self.show, data, None)

    def show(self, data, err) -> None:
        title = Text(f"{printable(self.dataset)}: ", style="bold")
        if err is not None:
            title.append(f"{type(err).__name__}: {err}", style="bold red")
            self.query_one("#title", Static).update(title)
            return
        self.suspects = data[:SHOWN]
        if not data:
            title.append("nothing to compare: fewer than 8 training cases hold each label", style="dim")
        else:
            title.append(f"audit from the data alone, {len(data)} (case, label)")
        self.query_one("#title", Static).update(title)
        rows = [(str(i), printable(s.case)[:16], printable(f"{s.label} {s.name}")[:20], f"{s.score:.1f}",
                 printable(s.reasons[0]) if s.reasons else "like the other cases")
                for i, s in enumerate(self.suspects, 1)]
        widths = [max([len(h)] + [len(r[k]) for r in rows]) for k, h in enumerate(("#", "case", "label", "score"))]
        # the reason gets what is left of the screen: padding 2 per column, 2 for the scroll bar
        why_w = max(12, self.app.size.width - sum(widths) - 2 * 5 - 2)
        t = self.query_one("#suspects", DataTable)
        t.clear(columns=True)
        for name, w in zip(("#", "case", "label", "score", "why"), (*widths, why_w)):
            t.add_column(name, key=name, width=w)
        for i, (r, s) in enumerate(zip(rows, self.suspects)):
            t.add_row(*r[:3], Text(r[3], style=_score_style(s.score), justify="right"),
                      Text(r[4][:why_w], style="" if s.reasons else "dim"), key=str(i))
        if self.suspects:
            t.move_cursor(row=0)
            self._explain(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value is not None:
            self._explain(int(event.row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()                  # the app's handler would open the case list's case
        self.action_open()

    def _explain(self, i: int) -> None:
        if not 0 <= i < len(self.suspects):
            return
        s = self.suspects[i]
        out = Text(f"{printable(s.case)}  {s.label} {printable(s.name)}  score {s.score:.1f}", style="bold")
        if s.slice is not None:
            out.append(f"  slice {s.slice}", style="dim")
        for why in s.reasons or ["like the other cases"]:
            out.append(f"\n{printable(why)}")
        self.query_one("#why", Static).update(out)

    def action_open(self) -> None:
        t = self.query_one("#suspects", DataTable)
        if not self.suspects or t.row_count == 0:
            return
        i = t.cursor_row
        if 0 <= i < len(self.suspects):
            self.app.push_screen(SuspectScreen(self.ws, self.dataset, self.suspects[i]))


def _score_style(score: float) -> str:
    """Red from 8, yellow from 4 (DG406's warning and finding thresholds), plain below."""
    return "bold red" if score >= 8 else "yellow" if score >= 4 else ""


class SuspectScreen(Screen):
    """One suspect annotation: its axis-0 slice, channel 0 in grey, the label's outline in its
    colour; the reasons beside it. `[` `]` move through the slices."""
    BINDINGS = [Binding("escape", "app.pop_screen", "back"),
                Binding("left_square_bracket,pageup", "slice(-1)", "prev slice"),
                Binding("right_square_bracket,pagedown", "slice(1)", "next slice")]
    DEFAULT_CSS = """
    SuspectScreen #title { height: 1; padding: 0 1; background: $boost; }
    SuspectScreen #picture-box { width: 1fr; }
    SuspectScreen #slice-title { height: 1; padding: 0 1; }
    SuspectScreen #picture { height: auto; padding: 0 1; }
    SuspectScreen #about { width: 1fr; max-width: 40; padding: 0 1; }
    """

    def __init__(self, ws, dataset: str, suspect):
        super().__init__()
        self.ws, self.dataset, self.s = ws, dataset, suspect
        self.index = suspect.slice
        self.n: int | None = None
        self.spacing = None

    def compose(self) -> ComposeResult:
        s = self.s
        yield Static(Text(f"{printable(s.case)}: label {s.label} {printable(s.name)}  score {s.score:.1f}",
                          style="bold"), id="title")
        with Horizontal():
            with Vertical(id="picture-box"):
                yield Static(id="slice-title")
                yield Static(id="picture")
            with VerticalScroll(id="about"):
                yield Static(self._about(), id="about-text")
        yield Footer()

    def _about(self) -> Text:
        s = self.s
        out = Text()
        out.append("██ ", style="rgb({},{},{})".format(*label_colour(s.label)))
        out.append(f"outline of {s.label} {printable(s.name)}\n\n")
        for why in s.reasons or ["like the other cases"]:
            out.append(f"• {printable(why)}\n")
        out.append("\nfrom the data alone: unlike the same label in the other cases; "
                   "a question, not a verdict", style="dim")
        return out

    def on_mount(self) -> None:
        try:
            facts = self.ws.dataset(self.dataset).case(self.s.case).facts.get("raw")
        except Exception:  # noqa: BLE001 - no facts: square pixels, no slice count
            facts = None
        if facts is not None and facts.shape and len(facts.shape) == 3:
            self.n = int(facts.shape[0])
        if facts is not None and facts.spacing and len(facts.spacing) == 3:
            self.spacing = tuple(facts.spacing[1:])
        self.call_after_refresh(self.draw)

    def draw(self) -> None:
        box = self.query_one("#picture-box")
        w, h = max(10, box.size.width - 2), max(4, box.size.height - 1)
        self.render_slice(self.index, w, h)

    @work(thread=True, exclusive=True, group="suspect-slice")
    def render_slice(self, index, w, h) -> None:
        try:
            img, lab = self.ws.dataset(self.dataset).load_slice(self.s.case, axis=0, index=index, source="raw")
        except Exception as e:  # noqa: BLE001 - a broken file is said, not drawn
            self.app.call_from_thread(self.show_slice, Text(f"cannot draw: {e}", style="bold red"), index)
            return
        rgb = fit(outline_rgb(img, lab, self.s.label), self.spacing, w, 2 * h)
        self.app.call_from_thread(self.show_slice, to_text(rgb), index)

    def show_slice(self, picture, index) -> None:
        idx = index if index is not None else (self.n // 2 if self.n else None)
        title = Text("raw  axis z  ", style="bold")
        if idx is not None:
            title.append(f"slice {idx + 1}/{self.n or '?'}")
            if idx == self.s.slice:
                title.append("  (the audit's)", style="dim")
        self.query_one("#slice-title", Static).update(title)
        self.query_one("#picture", Static).update(picture)
        self.index = idx

    def on_resize(self, event) -> None:
        self.draw()

    def action_slice(self, step: int) -> None:
        if self.n is None or self.index is None:
            return
        self.index = max(0, min(self.n - 1, self.index + step))
        self.draw()
