"""Moved to `dataguard.engine.lock` (0.3.0, architecture v4): repair and splits both take the
dataset lock, so it sits below both. This alias keeps user scripts working for one release."""
from ..engine.lock import *  # noqa: F401,F403 - the public names
from ..engine.lock import DatasetLock, LockedError, _lock, _unlock  # noqa: F401
