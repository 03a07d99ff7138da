"""One base class for every error a user can cause or fix; faces catch `DataguardError`.

Anything else escaping the engine is a bug (exit 3 in the CLI).
"""
from __future__ import annotations


class DataguardError(Exception):
    """A problem with what the user asked for or with their files (the CLI exits 2)."""


class UsageError(DataguardError):
    """Arguments that cannot work together, unknown codes, a missing confirmation."""


class Cancelled(DataguardError):
    """Work stopped because the caller set its cancel event."""


class UnsafeInput(DataguardError):
    """A file from someone else's machine asks for code to run (a pickle's callables, an object
    array): refused before anything of it ran. The message names the file and what it asked."""
