"""The repair action registry: one handler module per `ActionKind`, one table.

pre-commit's `languages` dict is the model: every module in HANDLERS satisfies the
`ActionHandler` protocol (KIND, ORDER, describe, prepare, files, run). The plan's order
and descriptions, apply's dispatch and the JSON kinds all derive from this table; adding
a kind = one enum member, one module, one line here. An unknown kind raises.
"""
from __future__ import annotations

from ...findings import ActionKind
from . import cast, quarantine, rebuild, reorient, splits
from .base import ActionHandler, ApplyContext, Outcome

HANDLERS: dict[ActionKind, ActionHandler] = {
    ActionKind.QUARANTINE: quarantine,
    ActionKind.REPREPROCESS: rebuild,
    ActionKind.CAST: cast,
    ActionKind.REORIENT: reorient,
    ActionKind.REGENERATE_SPLITS: splits,
}

assert all(h.KIND is k for k, h in HANDLERS.items()), "a handler registered under another kind"
assert set(HANDLERS) == set(ActionKind), "an ActionKind without a handler"


def handler(kind) -> ActionHandler:
    """The handler of a kind (an ActionKind or its string); an unknown kind is a ValueError."""
    try:
        return HANDLERS[ActionKind(kind)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown repair action kind {kind!r} (known: {', '.join(k.value for k in HANDLERS)})") \
            from None


__all__ = ["HANDLERS", "ActionHandler", "ActionKind", "ApplyContext", "Outcome", "handler"]
