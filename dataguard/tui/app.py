"""`dataguard tui`: see what is wrong with a dataset, look at its cases, repair them.

The app only calls `Workspace` and renders: no check, repair, split or geometry logic
lives here. Slow work (scans, repairs, restores) runs in thread workers that report
back with `call_from_thread`; the UI stays responsive and a traceback never reaches the
screen (errors become notifications).
"""
from __future__ import annotations

import threading
import time

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Input, ProgressBar, Static

from .audit import AuditScreen
from .rows import (
    COLUMNS,
    STATUS_STYLE,
    Row,
    config_label,
    configuration_names,
    rows_for,
    short_dataset,
    sort_key,
)
from .screens import CaseScreen, ConfirmModal, HelpScreen, PlanModal, SplitsScreen

FIRST_ROWS = 200      # rows added before the first paint (more than any screen shows)
MORE_ROWS = 1000      # rows added per refresh after that


class CaseTable(DataTable):
    """A DataTable that trusts the column widths it is given.

    DataTable measures every new cell as a renderable to size auto-width columns (0.8 ms
    a row: 4 s for 5,000 cases). `refill` sets every column's width from the plain
    strings, so the measuring pass is skipped; with an auto-width column it runs as usual.
    """
    def _update_dimensions(self, new_rows):
        if self.columns and not any(c.auto_width for c in self.columns.values()) and \
                not self._labelled_row_exists:
            new_rows = ()
        return super()._update_dimensions(new_rows)


class DataguardApp(App):
    """Cases of nnU-Net datasets with their findings; case view, splits view, repair."""
    TITLE = "dataguard"
    CSS = """
    #stats { height: 1; padding: 0 1; background: $boost; }
    #busy { height: 1; padding: 0 1; }
    #busy ProgressBar { width: 40; }
    #busy-label { width: 1fr; }
    #filter { display: none; }
    #filter.visible { display: block; }
    DataTable { height: 1fr; }
    """
    BINDINGS = [
        Binding("slash", "filter", "filter"),
        Binding("n", "next_problem", "next problem"),
        Binding("N", "prev_problem", "prev problem", show=False),
        Binding("enter", "open_case", "open case", show=False),
        Binding("space", "mark", "mark"),
        Binding("r", "repair", "repair"),
        Binding("R", "repair_all", "repair all"),
        Binding("u", "undo", "undo"),
        Binding("f", "splits", "folds"),
        Binding("a", "audit", "audit labels", show=False),     # in help and the palette (the footer: snapshot)
        Binding("s", "rescan", "rescan"),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit_safely", "quit"),
    ]

    def __init__(self, workspace, *, show_times: bool = True, scan_on_start: bool = True, initial_filter: str = ""):
        super().__init__()
        self.ws = workspace
        self.show_times = show_times
        self.scan_on_start = scan_on_start
        self.rows: list[Row] = []
        self.marked: set[str] = set()
        self.filter_text = initial_filter
        self.sort_column: int | None = None
        self.sort_reverse = False
        self.repair_cancel: threading.Event | None = None
        self.repairing = False
        self.recorded_at: float | None = None
        self.started = time.perf_counter()
        self.table_filled_after: float | None = None   # seconds from start to a filled table

    # --- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="stats")
        yield Input(placeholder="filter: text, code (DG2) or severity (error); enter applies, "
                                "escape clears", id="filter")
        yield CaseTable(id="cases", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="busy"):
            yield Static("", id="busy-label")
            yield ProgressBar(total=None, show_eta=False, id="progress")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#cases", DataTable)
        self.query_one("#busy").display = False
        self.query_one("#filter", Input).disabled = True      # hidden: never takes the focus
        table.focus()
        self.doctor_note = self._doctor_note()
        self.load_recorded()
        if self.scan_on_start:
            # after the recorded table is painted: the scan thread would compete for the GIL
            self.set_timer(0.3, self.rescan)

    # --- data -> table -----------------------------------------------------------------------
    def load_recorded(self) -> None:
        """The table at once, from what the last scan recorded (nothing read from the data)."""
        try:
            cases, findings, when = self.ws.recorded()
        except Exception as e:  # noqa: BLE001 - an unreadable manifest must not stop the app
            self.notify(f"{type(e).__name__}: {e}", severity="error", title="cannot read the manifest")
            cases, findings, when = [], [], None
        self.recorded_at = when
        if cases or findings:
            self.set_rows(rows_for(cases, findings, self.config_names()))
            self.call_after_refresh(self._painted)
        self.update_stats()

    def _painted(self) -> None:
        """The recorded table is on screen (bench_tui.py reads this)."""
        self.table_painted_at = time.perf_counter()

    table_painted_at: float | None = None

    def set_rows(self, rows: list[Row]) -> None:
        self.rows = rows
        self.refill()
        if rows and self.table_filled_after is None:
            self.table_filled_after = time.perf_counter() - self.started

    def visible_rows(self) -> list[Row]:
        rows = [r for r in self.rows if not self.filter_text or r.matches(self.filter_text)]
        if self.sort_column is not None:
            rows.sort(key=sort_key(self.sort_column), reverse=self.sort_reverse)
        return rows

    @property
    def many_datasets(self) -> bool:
        return len({r.dataset for r in self.rows}) > 1

    def refill(self) -> None:
        """Rebuild the table from the model, keeping the cursor on the same case.

        Column widths are computed here from the plain strings: DataTable would otherwise
        measure all 40,000 cells of a 5,000-case table as renderables (seconds).
        """
        table = self.query_one("#cases", DataTable)
        many = self.many_datasets
        current = self.current_key()
        rows = self.visible_rows()
        cells = [self.styled(r, many) for r in rows]
        headers = [name if i or many else "config" for i, name in enumerate(COLUMNS)]
        widths = [len(h) for h in headers]
        for row in cells:
            for i, c in enumerate(row):
                n = len(c) if isinstance(c, str) else c.cell_len
                if n > widths[i]:
                    widths[i] = n
        table.clear(columns=True)
        for i, name in enumerate(headers):
            table.add_column(name, key=str(i), width=min(widths[i], 48))
        self._fill_generation += 1
        pending = list(zip(rows, cells))
        # the first screenful now, the rest after it is painted, in chunks (toolong's way:
        # a 5,000-case table is on screen at once instead of after every row is added)
        self._add_rows(pending[:FIRST_ROWS], current)
        if len(pending) > FIRST_ROWS:
            self.call_after_refresh(self._add_more, pending[FIRST_ROWS:], current, self._fill_generation)
        self.update_stats()

    def _add_rows(self, pending, current) -> None:
        table = self.query_one("#cases", DataTable)
        for r, c in pending:
            table.add_row(*c, key=r.key)
        if current is not None and current in {r.key for r, _ in pending}:
            table.move_cursor(row=table.get_row_index(current))

    def _add_more(self, pending, current, generation: int) -> None:
        if generation != self._fill_generation:
            return                       # the table was rebuilt meanwhile
        self._add_rows(pending[:MORE_ROWS], current)
        if len(pending) > MORE_ROWS:
            self.call_after_refresh(self._add_more, pending[MORE_ROWS:], current, generation)

    _fill_generation = 0

    def styled(self, r: Row, many: bool | None = None) -> list:
        cells = list(r.cells())
        if not (self.many_datasets if many is None else many):       # the name is in the header: keep 80 columns readable
            cells[0] = r.config_cell()
        mark = "● " if r.key in self.marked else ""
        cells[1] = Text(mark + cells[1], style="bold" if mark else "")
        cells[2] = Text(cells[2], style=STATUS_STYLE.get(r.status, ""))
        cells[3] = Text(cells[3], style="red" if r.status in ("error", "stray") else
                        "yellow" if r.status == "warning" else "cyan" if cells[3] else "")
        return cells

    def current_key(self) -> str | None:
        table = self.query_one("#cases", DataTable)
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001
            return None

    def current_row(self) -> Row | None:
        key = self.current_key()
        return next((r for r in self.rows if r.key == key), None)

    DOCTOR_CODES = ("DG901", "DG904", "DG905", "DG906", "DG907")    # DG902/DG903: the TUI opens any folder

    def _doctor_note(self) -> str:
        """The header's doctor warning: an environment that will break nnU-Net (`dataguard doctor`)."""
        try:
            errs = [f for f in self.ws.doctor().errors if f.code in self.DOCTOR_CODES]
        except Exception:  # noqa: BLE001 - the environment report must never stop the app
            return ""
        return f"doctor: {errs[0].code} {errs[0].message[:60]}" + (f" (+{len(errs) - 1})" if len(errs) > 1 else "") \
            if errs else ""

    _config_names: dict | None = None

    def config_names(self, fresh: bool = False) -> dict[str, dict[str, str]]:
        """{dataset: {configuration folder: configuration name}} from each dataset's plans, read
        once (a rescan reads them again): the config column says `2d, 3d_fullres`."""
        if self._config_names is None or fresh:
            out = {}
            for d in self.ws.datasets:
                try:
                    planned = self.ws.dataset(d.name).planned_configurations()
                except Exception:  # noqa: BLE001 - no plans to read (or no handle): folders keep their names
                    continue
                if planned:
                    out[d.name] = configuration_names(planned)
            self._config_names = out
        return self._config_names

    def update_stats(self) -> None:
        counts = {"error": 0, "warning": 0, "info": 0}
        for r in self.rows:
            for f in r.findings:
                counts[str(f.severity)] = counts.get(str(f.severity), 0) + 1
        datasets = sorted({r.dataset for r in self.rows}) or [d.name for d in self.ws.datasets]
        names = self.config_names()
        configs = sorted({config_label([c], names.get(r.dataset)) for r in self.rows if r.info is not None
                          for c in r.info.configs})
        n_cases = sum(1 for r in self.rows if r.info is not None)
        t = Text()
        t.append(datasets[0] if len(datasets) == 1 else
                 f"{len(datasets)} datasets ({', '.join(short_dataset(d) for d in datasets)})", style="bold")
        t.append(f"  {', '.join(configs) or '-'}  {n_cases} cases  ")
        plural = lambda n, word: f"{n} {word}{'s' * (n != 1)}"  # noqa: E731
        t.append(plural(counts["error"], "error"), style="bold red" if counts["error"] else "green")
        t.append("  ")
        t.append(plural(counts["warning"], "warning"), style="yellow" if counts["warning"] else "green")
        t.append("  ")
        t.append(f"{counts['info']} info", style="cyan")
        if getattr(self, "doctor_note", ""):
            t.append(f"  {self.doctor_note}", style="bold red")
        if self.filter_text:
            t.append(f"  /{self.filter_text}", style="italic")
        if self.marked:
            t.append(f"  marked: {len(self.marked)}", style="bold")
        if self.show_times and self.recorded_at is not None:
            t.append(f"  recorded {time.strftime('%Y-%m-%d %H:%M', time.localtime(self.recorded_at))}",
                     style="dim")
        self.query_one("#stats", Static).update(t)

    # --- background work ---------------------------------------------------------------------
    def busy(self, label: str | None, done: int = 0, total: int | None = None) -> None:
        box = self.query_one("#busy")
        box.display = label is not None
        if label is not None:
            self.query_one("#busy-label", Static).update(label)
            self.query_one("#progress", ProgressBar).update(total=total, progress=done)

    @work(thread=True, exclusive=True, group="scan")
    def rescan(self) -> None:
        """Incremental scan in a worker thread; rows are updated in place when it ends."""
        self.call_from_thread(self.busy, "scanning ...")
        last = [0.0]

        def progress(done, total, rel):
            now = time.perf_counter()
            if now - last[0] > 0.1:
                last[0] = now
                self.call_from_thread(self.busy, f"scanning {rel.rsplit('/', 1)[-1]}", done, total or None)

        try:
            res = self.ws.scan(on_progress=progress)
            rows = rows_for(self.ws.cases(), res.findings, self.config_names(fresh=True))
        except Exception as e:  # noqa: BLE001 - notified, never a traceback on screen
            self.call_from_thread(self.fail, "scan failed", e)
            return
        self.call_from_thread(self.scanned, rows)

    def scanned(self, rows: list[Row]) -> None:
        self.recorded_at = time.time()
        self.busy(None)
        self.set_rows(rows)

    def fail(self, what: str, err: BaseException) -> None:
        self.busy(None)
        self.notify(f"{type(err).__name__}: {err}", title=what, severity="error", timeout=8)

    # --- actions -------------------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.disabled = False
        box.add_class("visible")
        box.value = self.filter_text
        box.focus()

    @on(Input.Submitted, "#filter")
    def apply_filter(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        event.input.remove_class("visible")
        event.input.disabled = True
        self.refill()
        self.query_one("#cases", DataTable).focus()

    def on_key(self, event) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_class("visible"):
            box.remove_class("visible")
            box.disabled = True
            self.filter_text = ""
            self.refill()
            self.query_one("#cases", DataTable).focus()
            event.stop()

    def _jump(self, step: int) -> None:
        table = self.query_one("#cases", DataTable)
        rows = self.visible_rows()[: table.row_count]      # the rows added so far
        if not rows:
            return
        start = table.cursor_row
        for i in range(1, len(rows) + 1):
            j = (start + step * i) % len(rows)
            if rows[j].status in ("error", "warning", "stray"):
                table.move_cursor(row=j)
                return
        self.notify("no case with an error or warning")

    def action_next_problem(self) -> None:
        self._jump(1)

    def action_prev_problem(self) -> None:
        self._jump(-1)

    @on(DataTable.HeaderSelected)
    def sort_by(self, event: DataTable.HeaderSelected) -> None:
        col = int(event.column_key.value)
        self.sort_reverse = not self.sort_reverse if self.sort_column == col else False
        self.sort_column = col
        self.refill()

    @on(DataTable.RowSelected, "#cases")      # not a table of another screen (a case's files)
    def row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_case()

    def action_open_case(self) -> None:

        row = self.current_row()
        if row is None:
            return
        self.push_screen(CaseScreen(self.ws, row))

    def action_mark(self) -> None:
        row = self.current_row()
        if row is None:
            return
        self.marked.symmetric_difference_update({row.key})
        table = self.query_one("#cases", DataTable)
        cursor = table.cursor_row
        table.update_cell(row.key, "1", self.styled(row)[1], update_width=False)
        table.move_cursor(row=min(cursor + 1, table.row_count - 1))
        self.update_stats()

    def _targets(self) -> list[Row]:
        keys = self.marked or ({self.current_key()} if self.current_key() else set())
        return [r for r in self.rows if r.key in keys]

    def action_repair(self) -> None:
        rows = self._targets()
        if not rows:
            self.notify("no case selected")
            return
        self.plan_and_confirm(rows)

    def action_repair_all(self) -> None:
        self.plan_and_confirm(None)

    @work(thread=True, exclusive=True, group="plan")
    def plan_and_confirm(self, rows: list[Row] | None) -> None:
        try:
            plan = self.ws.repair.plan()
        except Exception as e:  # noqa: BLE001
            self.call_from_thread(self.fail, "cannot plan a repair", e)
            return
        if rows is not None:
            cases = {(r.dataset, r.info.case) for r in rows if r.info is not None}
            paths = {(r.dataset, f.path) for r in rows for f in r.findings}
            plan = [a for a in plan if (a.dataset, a.case) in cases or (a.dataset, a.target) in paths]
        self.call_from_thread(self.show_plan, plan)

    def show_plan(self, plan) -> None:

        if not plan:
            self.notify("nothing to repair for the selection")
            return

        def chosen(ok: bool | None) -> None:
            if ok:
                self.apply_plan(plan)
        self.push_screen(PlanModal(plan), chosen)

    @work(thread=True, exclusive=True, group="repair")
    def apply_plan(self, plan) -> None:
        todo = [a for a in plan if not a.blocked]
        self.repairing = True
        self.repair_cancel = threading.Event()
        self.call_from_thread(self.busy, "repairing ...", 0, len(todo))

        def event(e: dict) -> None:
            if e["event"] in ("done", "failed"):
                self.call_from_thread(self.busy, f"{e['event']}: {e['action'].kind} {e['action'].target}",
                                      e["index"] + 1, e["total"])

        try:
            run = self.ws.repair.apply(plan, on_event=event, cancel=self.repair_cancel)
            rows = rows_for(self.ws.cases(), run.after.findings if run.after else [], self.config_names())
        except Exception as e:  # noqa: BLE001
            self.repairing = False
            self.call_from_thread(self.fail, "repair failed", e)
            return
        self.repairing = False
        self.call_from_thread(self.repaired, run, rows)

    def repaired(self, run, rows) -> None:
        self.busy(None)
        self.marked.clear()
        self.set_rows(rows)
        failed = len(run.failed)
        done = sum(len(r.outcomes) for r in run.reports) - failed
        msg = f"{done} action(s) done, {failed} failed; `u` undoes run {', '.join(run.run_ids)}"
        self.notify(msg, severity="error" if failed else "information", title="repair")
        if self._exit_after_repair:
            self.exit()

    _exit_after_repair = False

    def action_undo(self) -> None:

        def chosen(ok: bool | None) -> None:
            if ok:
                self.undo()
        self.push_screen(ConfirmModal("Undo the latest repair run? Every file it replaced goes back, "
                                      "byte for byte; what it wrote moves to quarantine."), chosen)

    @work(thread=True, exclusive=True, group="repair")
    def undo(self) -> None:
        self.call_from_thread(self.busy, "restoring ...")
        try:
            reports = self.ws.restore()
            res = self.ws.scan()
            rows = rows_for(self.ws.cases(), res.findings, self.config_names())
        except Exception as e:  # noqa: BLE001
            self.call_from_thread(self.fail, "undo failed", e)
            return
        n = sum(len(r.restored) for r in reports)
        self.call_from_thread(self.undone, rows, n)

    def undone(self, rows, n: int) -> None:
        self.busy(None)
        self.set_rows(rows)
        self.notify(f"{n} file(s) restored", title="undo")

    def action_rescan(self) -> None:
        self.rescan()

    def action_splits(self) -> None:

        row = self.current_row()
        names = [d.name for d in self.ws.datasets if d.preprocessed is not None]
        name = row.dataset if row is not None and row.dataset in names else (names[0] if names else None)
        if name is None:
            self.notify("no preprocessed dataset: splits live in nnUNet_preprocessed", severity="warning")
            return
        self.push_screen(SplitsScreen(self.ws, name))

    def action_audit(self) -> None:

        row = self.current_row()
        names = [d.name for d in self.ws.datasets if d.raw is not None]
        name = row.dataset if row is not None and row.dataset in names else (names[0] if names else None)
        if name is None:
            self.notify("no raw dataset: the label audit reads imagesTr and labelsTr", severity="warning")
            return
        self.push_screen(AuditScreen(self.ws, name))

    def action_help(self) -> None:

        self.push_screen(HelpScreen())

    def action_quit_safely(self) -> None:

        if not self.repairing:
            self.exit()
            return

        def chosen(ok: bool | None) -> None:
            if ok and self.repair_cancel is not None:
                self.repair_cancel.set()       # stops between actions; the journal keeps it consistent
                self._exit_after_repair = True
                self.notify("stopping after the current action ...")
        self.push_screen(ConfirmModal("A repair is running. Stop it after the current action and quit? "
                                      "What was done stays journalled (`u` / `dataguard restore`)."), chosen)

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        for title, help_text, action in (
            ("Rescan", "scan again (incremental)", self.action_rescan),
            ("Filter cases", "by text, finding code or severity", self.action_filter),
            ("Next problem", "jump to the next case with an error or warning", self.action_next_problem),
            ("Open case", "files, findings, slice preview", self.action_open_case),
            ("Mark case", "mark for repair", self.action_mark),
            ("Repair selection", "plan and repair the marked or selected cases", self.action_repair),
            ("Repair everything fixable", "plan and repair every finding", self.action_repair_all),
            ("Undo latest repair", "restore the latest repair run", self.action_undo),
            ("Cross-validation folds", "folds x labels; rebalance", self.action_splits),
            ("Audit labels", "suspect annotations, ranked, with their slice", self.action_audit),
            ("Help", "key bindings", self.action_help),
        ):
            yield SystemCommand(title, help_text, action)
