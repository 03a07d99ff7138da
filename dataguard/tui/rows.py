"""CaseInfo and stray findings -> table rows (plain data; no Textual here, easy to test)."""
from __future__ import annotations

from dataclasses import dataclass, field

STATUS_STYLE = {"error": "bold red", "warning": "yellow", "ok": "green", "pending": "dim", "stray": "bold red",
                "info": "cyan"}
STATUS_ORDER = {"error": 0, "stray": 0, "warning": 1, "info": 2, "pending": 3, "ok": 4}


@dataclass
class Row:
    key: str                    # "<dataset>/<case>" or "<dataset>::<path>" for a stray file
    dataset: str
    where: str                  # configuration folders (or "raw") / the stray file's folder
    case: str                   # case id, or the stray file's name
    fold: str
    labels: str
    shape: str
    spacing: str
    status: str                 # ok | warning | error | pending | stray
    codes: str
    info: object = None         # the CaseInfo (None for stray files)
    findings: list = field(default_factory=list)
    config: str = ""            # what the config column shows ("2d, 3d_fullres"); "" -> short_config(where)

    def config_cell(self) -> str:
        return self.config or short_config(self.where)

    def cells(self) -> tuple[str, ...]:
        return (f"{short_dataset(self.dataset)} {self.config_cell()}", self.case, self.status,
                self.codes, self.fold, self.labels, self.shape, self.spacing)

    def matches(self, text: str) -> bool:
        """`/` filter: every word matches a case, dataset, status or code (prefix); a comma
        list (`heart_004,heart_007`, what `evaluate --worst` prints) matches any of those cases."""
        if "," in text:
            return self.case.lower() in {c.strip().lower() for c in text.split(",") if c.strip()}
        hay = " ".join((self.dataset, self.where, self.config, self.case, self.status, self.codes)).lower()
        return all(w in hay for w in text.lower().split())


def short_dataset(name: str) -> str:
    """`Dataset901_DemoCardiac` -> `901`: the id is what nnU-Net's -d takes."""
    return name[7:10] if name.startswith("Dataset") and name[7:10].isdigit() else name


def short_config(folder: str) -> str:
    """`nnUNetPlans_2d` -> `2d`; other plans keep their name (`nnUNetResEncUNetMPlans_3d_fullres`)."""
    return folder[len("nnUNetPlans_"):] if folder.startswith("nnUNetPlans_") else folder


def configuration_names(planned) -> dict[str, str]:
    """{configuration folder: configuration name} from the plans (layout.planned_configurations):
    `nnUNetPlans_3d_fullres` -> `3d_fullres`, as nnU-Net's `-c` names it.

    A folder several configurations share (nnU-Net's `3d_cascade_fullres` inherits the data of
    `3d_fullres`) is named after the configuration whose default folder name it is; a name two
    plans share (`3d_fullres` of nnUNetPlans and of a ResEnc plans) keeps the folder's name, so
    the two stay apart (nnU-Net's default plans, nnUNetPlans, keep the bare name: `-c 2d` without
    `-p` means them)."""
    by_folder: dict[str, list] = {}
    for pc in planned:
        by_folder.setdefault(pc.folder, []).append(pc)
    named: dict[str, tuple[str, bool]] = {}
    for folder, pcs in by_folder.items():
        pc = ([pc for pc in pcs if folder.endswith(f"_{pc.name}")] or pcs)[0]
        default = (pc.plans.get("plans_name") or pc.plans_file.stem) == "nnUNetPlans"
        named[folder] = (pc.name, default)
    counts: dict[str, int] = {}
    for name, _ in named.values():
        counts[name] = counts.get(name, 0) + 1
    return {folder: name if counts[name] == 1 or default else folder
            for folder, (name, default) in named.items()}


def config_label(folders, names: dict[str, str] | None = None) -> str:
    """The config column of a case: its configuration folders by configuration name, in the
    plans' terms (`2d, 3d_fullres`); a folder the plans do not name is shortened as before."""
    names = names or {}
    return ", ".join(dict.fromkeys(names.get(f) or short_config(f) for f in folders))


# what matters first (status, codes) comes first: an 80-column terminal shows it
COLUMNS = ("dataset config", "case", "status", "codes", "fold", "labels", "shape (z,y,x)", "spacing (mm)")


def _fmt_shape(shape) -> str:
    return "×".join(str(x) for x in shape) if shape else "-"


def _fmt_spacing(sp) -> str:
    return "×".join(f"{x:.3g}" for x in sp) if sp else "-"


def case_row(c, names: dict[str, str] | None = None) -> Row:
    facts = c.facts.get("raw") or c.facts.get("test") or next(iter(c.facts.values()), None)
    labels = c.labels
    codes = ",".join(sorted({f.code for f in c.findings}))
    where = "+".join(c.configs) or ("test" if c.test else "raw")
    return Row(key=f"{c.dataset}/{c.case}", dataset=c.dataset, where=where,
               config=config_label(c.configs, (names or {}).get(c.dataset)) or where,
               case=c.case, fold="-" if c.val_fold is None else str(c.val_fold),
               labels=",".join(str(v) for v in sorted(labels or {}) if v > 0) or "-",
               shape=_fmt_shape(facts.shape if facts else None),
               spacing=_fmt_spacing(facts.spacing if facts else None),
               status=c.status, codes=codes, info=c, findings=list(c.findings))


def stray_rows(findings) -> list[Row]:
    """Findings that belong to no case get rows of their own, one per file: stray files
    (`._*`, `.DS_Store`: status "stray") and dataset-level files such as dataset.json, the
    plans or splits_final.json (status from their worst finding)."""
    by_path: dict[tuple[str, str], list] = {}
    for f in findings:
        if f.case is None:
            by_path.setdefault((f.dataset, f.path), []).append(f)
    out = []
    for (ds, path), fs in sorted(by_path.items()):
        folder, _, name = path.rpartition("/")
        junk = any(f.code in ("DG101", "DG102", "DG104") for f in fs)
        worst = max(f.severity for f in fs)
        status = "stray" if junk else str(worst)
        out.append(Row(key=f"{ds}::{path}", dataset=ds, where=folder.split("/", 1)[-1] or folder, case=name or path,
                       fold="-", labels="-", shape="-", spacing="-", status=status,
                       codes=",".join(sorted({f.code for f in fs})), findings=fs))
    return out


def rows_for(cases, findings, names: dict[str, dict[str, str]] | None = None) -> list[Row]:
    """names: {dataset: {configuration folder: configuration name}} (configuration_names)."""
    return [case_row(c, names) for c in cases] + stray_rows(findings)


def sort_key(column: int):
    """A key function for sorting rows by column index (numbers and statuses sort sensibly)."""
    def key(row: Row):
        v = row.cells()[column]
        if column == 2:
            return (STATUS_ORDER.get(v, 9), row.case)
        if column == 4:
            return (v == "-", int(v) if v.isdigit() else 0)
        return (v,)
    return key
