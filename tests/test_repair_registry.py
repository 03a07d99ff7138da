"""The repair action registry: one handler per ActionKind, plan order and descriptions from it,
an unknown kind refused before anything changes."""
from __future__ import annotations

import pytest

from dataguard.findings import ActionKind, Fix
from dataguard.repair.actions import HANDLERS, handler
from dataguard.repair.apply import apply_plan
from dataguard.repair.plan import Action


def test_every_kind_has_one_handler_registered_under_it():
    assert set(HANDLERS) == set(ActionKind)
    for kind, h in HANDLERS.items():
        assert h.KIND is kind
        for name in ("describe", "prepare", "files", "run"):
            assert callable(getattr(h, name)), (kind, name)
        assert isinstance(h.ORDER, int)


def test_kinds_keep_their_strings():
    assert [k.value for k in ActionKind] == ["quarantine", "re-preprocess", "cast", "reorient", "regenerate-splits"]
    assert {k.value for k in ActionKind} <= {f.value for f in Fix}
    a = Action(kind="re-preprocess", dataset="D", target="preprocessed/c/x", case="x", config="c")
    assert a.kind is ActionKind.REPREPROCESS and a.kind == "re-preprocess" and str(a.kind) == "re-preprocess"
    assert a.describe() == "rebuild case x in c from raw (old files to quarantine)"


def test_an_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown repair action kind 'rebuild-archive'"):
        Action(kind="rebuild-archive", dataset="D", target="preprocessed/x")
    with pytest.raises(ValueError, match="unknown repair action kind"):
        handler("bogus")


def test_apply_refuses_an_unknown_kind_before_any_change(tmp_path):
    a = Action(kind="quarantine", dataset="D", target="preprocessed/x")
    a.kind = "bogus"                      # changed after planning: never sent to some other handler
    with pytest.raises(ValueError, match="unknown repair action kind"):
        apply_plan([a], [])
    assert list(tmp_path.iterdir()) == []


def test_hand_built_splits_action_without_the_scan_fails_cleanly():
    from dataguard.repair.actions import splits

    a = Action(kind=ActionKind.REGENERATE_SPLITS, dataset="D", target="preprocessed/splits_final.json")
    from dataguard.errors import RepairError
    with pytest.raises(RepairError, match="case labels"):
        splits.run(a, None)
