"""Moved to `dataguard.engine.journal` (0.3.0, architecture v4): repair and splits both write
through the journal, so it sits below both. This alias keeps user scripts working for one release."""
from ..engine.journal import *  # noqa: F401,F403 - the public names
from ..engine.journal import (  # noqa: F401 - private names restore and user scripts used from here
    DG_DIR,
    UNDONE_BY,
    _crash_point,
    _ident_of,
    _move,
    _next_seq,
    blake3_file,
    matches,
    move_durably,
    without_rolled_back,
)
