"""One base class for every error a user can cause or fix; faces catch `DataguardError`.

Anything else escaping the engine is a bug (exit 3 in the CLI). Every exception class the
package defines is a DataguardError defined here, and only here: the module that raises one
imports it from here (and re-exports it, so `from dataguard.splits.folds import SplitError`
still works). This module imports nothing of dataguard. tests/test_small_fixes.py walks them all.
"""
from __future__ import annotations

import pickle


class DataguardError(Exception):
    """A problem with what the user asked for or with their files (the CLI exits 2)."""


class UsageError(DataguardError):
    """Arguments that cannot work together, unknown codes, a missing confirmation."""


class Cancelled(DataguardError):
    """Work stopped because the caller set its cancel event."""


class UnsafeInput(DataguardError):
    """A file from someone else's machine asks for code to run (a pickle's callables, an object
    array): refused before anything of it ran. The message names the file and what it asked."""


class NnUNetError(DataguardError):
    """nnU-Net itself failed (its child process exited non-zero); the message ends with the
    tail of its output. Neither a usage error nor a bug of dataguard: the CLI exits 1."""
    exit_code = 1


def nnunet_failed(what: str, returncode: int, output: str, lines: int = 15, where: str = "") -> NnUNetError:
    """The NnUNetError for a child that exited `returncode`: the last `lines` lines of its output."""
    tail = "\n".join(output.strip().splitlines()[-lines:]) or "(it printed nothing)"
    return NnUNetError(f"{what} failed (exit {returncode}){where}; nnU-Net's last output:\n{tail}")


class UnsafeState(DataguardError):
    """`.dataguard/` in a dataset is or holds a link or a special file, or a journal is not one
    dataguard wrote: repair and restore stop before any change (exit 2)."""


class OutsideError(DataguardError, OSError):
    """A path that would leave its dataset, or pass through a link or a non-folder on the way
    (an OSError too, so a reader's `except OSError` still holds)."""


class JournalKeyError(DataguardError):
    """The per-user journal key cannot be made, or others can read it (exit 2)."""


# --- raised inside the checks, turned into findings there (they never reach a face) ---------
class RawError(DataguardError):
    """A raw file cannot be read as an image (DG302)."""


class MemberError(DataguardError):
    """A zip member (or an .npy) is unreadable: DG201 in a scan; exit 2 where the ensemble reads it."""


class Malformed(DataguardError, pickle.UnpicklingError):
    """The opcode stream is not a well-formed pickle (a stack underflow, a missing memo key...).
    An UnpicklingError too, so code that catches pickle's own error catches this one."""


class Refused(DataguardError, pickle.UnpicklingError):
    """The pickle asked for something outside plain data; nothing of it was executed."""
    def __init__(self, what: str):
        super().__init__(f"pickle asks for {what}: not executed")
        self.what = what


class ForbiddenGlobal(Refused):
    """GLOBAL / STACK_GLOBAL named a (module, name) pair outside the safe unpickler's table."""
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


# --- raised by the engine and the features (each module imports its own from here) ----------
class LayoutError(DataguardError):
    """The user named something that is not an nnU-Net folder or dataset (exit 2)."""


class ManifestError(DataguardError):
    """The manifest cannot be used (exit 2 with a one-line message)."""


class SliceError(DataguardError):
    """The case or its files cannot be found or read as arrays."""


class UnsafeCheckpoint(DataguardError):
    """The checkpoint holds objects outside the plain types an nnU-Net checkpoint needs, or this
    torch cannot load a checkpoint of unknown origin safely. `fix` says what to do."""
    def __init__(self, message: str, fix: str = "move the checkpoint away; dataguard never unpickles code"):
        super().__init__(message)
        self.fix = fix


class LockedError(DataguardError):
    """Another repair holds the dataset (exit 2)."""


class RepairError(DataguardError):
    """A repair step failed in a way the user must hear about (nothing was lost)."""


class NotWritableError(RepairError):
    """A folder the plan must write cannot be written (read-only mount, no permission): exit 2."""


class RestoreError(DataguardError):
    """Nothing to restore, unknown run, or a file that no longer matches (exit 2)."""


class SplitError(DataguardError):
    """Splits cannot be read, or cannot be made as asked (the CLI exits 2 with the message)."""


class SubmissionError(DataguardError):
    """The archive failed its own verification (it was not kept)."""


class LogError(DataguardError):
    """No training log where the user pointed."""


class RecordError(DataguardError, ValueError):
    """A fold's run record (dataguard_train.json) that is not one dataguard can trust: wrong
    types, not JSON, too big, not a regular file (a resume refuses it by name)."""
