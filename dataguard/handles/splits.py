"""`ws.dataset(name).splits`: the folds view, stratified rebalancing, the splits writer, groups."""
from __future__ import annotations

import os
from pathlib import Path

from ..engine.groups_store import save_rule
from ..errors import SplitError, UsageError
from ..findings import ActionKind
from ..folds import NNUNET_FOLDS, label_table, nnunet_default_split
from ..repair.plan import Action, prepare
from ..splits.context import context_from_result
from ..splits.folds import write_splits
from .scope import Scoped


class Splits(Scoped):
    """A dataset's splits_final.json and its patient groups."""

    def context(self):
        """Training cases and their labels, from the latest scan (no second scan)."""
        return context_from_result(self._ws._result(), self._ds())

    def plan_rebalance(self) -> list:
        """The one action that writes stratified splits (apply it like any plan: `repair.apply`)."""
        ds = self._ds()
        if ds.preprocessed is None:
            raise UsageError(f"{ds.name} has no preprocessed folder: splits_final.json lives there")
        actions = [Action(kind=ActionKind.REGENERATE_SPLITS, dataset=ds.name, target="preprocessed/splits_final.json",
                          files=["preprocessed/splits_final.json"])]
        prepare(actions, self._ws._result())        # the plan carries the case labels its handler needs
        return actions

    def write(self, splits, dry_run: bool = False):
        """The one splits writer (`splits rebalance` and repair both use splits.write_splits)."""
        ds = self._ds()
        backup = write_splits(Path(ds.preprocessed) / "splits_final.json", splits, dry_run=dry_run)
        if not dry_run:
            self._ws.last = None
        return backup

    def folds_view(self):
        """The folds x labels table every face shows: of splits_final.json, or of the split
        nnU-Net will write when there is none yet. (context, splits or None, table or None, note)."""
        ctx = self.context()
        note = None
        view = self._ws._result().views.get(self._ds().name)
        parsed = view.splits if view is not None else None      # read once per scan, by the view
        if parsed is None and not os.path.lexists(ctx.splits_path):
            splits = nnunet_default_split(ctx.cases) if len(ctx.cases) >= NNUNET_FOLDS else None
            note = (f"no {ctx.splits_path.name} yet: shown is the unstratified split nnU-Net will write "
                    f"at the first training")
        elif parsed is None:
            splits, note = None, f"{ctx.splits_path.name} is not a regular file: not read (see DG105)"
        elif isinstance(parsed, SplitError):
            splits, note = None, f"{ctx.splits_path.name} is unusable: {parsed}"
        else:
            splits = parsed
        table = label_table(splits, ctx.case_labels, ctx.names) if splits else None
        return ctx, splits, table, note

    def groups(self) -> dict[str, str] | None:
        """case -> patient of the training cases, from the remembered rule (None: none)."""
        ds = self._ds()
        view = self._ws._scan_dataset(ds).views.get(ds.name)
        return None if view is None else view.groups

    def set_groups(self, file: Path | str | None = None, regex: str | None = None) -> dict:
        """Remember a case -> patient rule (a CSV/JSON file, or a regex over case ids) for this
        dataset (for `ws`-wide handles: every dataset); later scans, splits and training gates
        use it (DG506, `splits rebalance` keeps patients together)."""
        ws = self._ws
        names = [self._ds().name] if self._name is not None else [d.name for d in ws.datasets]
        rule = {}
        for name in names:
            rule = save_rule(ws._manifest_home(name), name, file=file, regex=regex)
        ws.last = None
        return rule
