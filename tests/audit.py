"""Proof that a reader ran no code from the files it read: a Python audit hook.

`sys.addaudithook` hooks cannot be removed, so one hook is installed for the whole test
session and records only while a `watch()` block is open. It records, never blocks (a
test that fails must still show what happened):

- new processes: os.system, os.exec*, os.posix_spawn*, os.spawn*, os.fork*, subprocess.Popen
- code from strings: exec of a code object that comes from no module file on disk, which is
  what eval("...") and exec("...") of a string do; imports of real .py files and frozen
  modules are not code from data, and compile() alone (ast.literal_eval parses numpy's
  .npy headers that way) runs nothing
- the network and native calls: socket.*, ctypes.*, webbrowser.open, urllib.Request
- writes: open() for writing, and os.remove/unlink/rename/replace/rmdir/mkdir/chmod/utime/
  truncate, shutil.*, anywhere outside the folders a test allows (a scan writes its manifest)

Use it as

    from audit import watch

    with watch(allow_writes=[tmp_path / "manifests"]) as events:
        dataguard.cli.main(["scan", str(dataset), "--manifest-dir", str(tmp_path / "manifests")])
    assert events == [], events

Run the code once outside `watch()` first when it imports modules lazily: a module that
builds classes with `dataclasses` or `namedtuple` compiles generated source from strings
the first time it is imported, and that would be recorded too.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

_PROCESS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen",
            "pty.spawn", "os.startfile")
_NATIVE = ("socket.", "ctypes.", "webbrowser.open", "urllib.Request", "http.client.connect")
_WRITES = ("os.remove", "os.unlink", "os.rename", "os.replace", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
           "os.utime", "os.truncate", "os.link", "os.symlink", "shutil.")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

_state = threading.local()
_lock = threading.Lock()
_active: list[tuple[list, tuple[str, ...]]] = []     # (events, allowed write roots) of open watches
_installed = False


def _is_module_source(filename) -> bool:
    name = str(filename)
    return name.startswith("<frozen ") or (name.endswith(".py") and os.path.isfile(name))


def _is_write(event: str, args: tuple) -> tuple[bool, str | None]:
    if event == "open":
        path, mode, flags = (list(args) + [None, None, None])[:3]
        if isinstance(path, int):
            return False, None
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
        return bool(writes), os.fsdecode(path) if writes else None
    if event.startswith(_WRITES):
        paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
        return True, os.fsdecode(paths[-1]) if paths else "?"
    return False, None


def _describe(event: str, args: tuple) -> str | None:
    """What an event did, or None when it is no evidence of code run from data."""
    if event.startswith(_PROCESS) or event.startswith(_NATIVE):
        return f"{event} {args!r:.200}"
    if event == "exec":
        code = args[0] if args else None
        filename = getattr(code, "co_filename", None)
        if filename is not None and not _is_module_source(filename):
            return f"exec of code from {filename} (by {_caller()})"
        return None
    return None


def _caller() -> str:
    """file:line function of the code that ran the exec, for a failing test's message."""
    try:
        f = sys._getframe(2)
    except ValueError:            # the top of a spawn worker's stack: fewer frames than that
        return "?"
    while f is not None and f.f_code.co_filename == __file__:
        f = f.f_back
    while f is not None and f.f_back is not None and f.f_code.co_filename.startswith("<"):
        f = f.f_back
    return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno} {f.f_code.co_name}" if f else "?"


def _hook(event: str, args: tuple) -> None:
    if not _active or getattr(_state, "inside", False):
        return
    _state.inside = True                      # our own work below must not record itself
    try:
        _record(event, args)
    except Exception as e:  # noqa: BLE001 - a hook that raises would break the audited code itself
        for events, _ in list(_active):
            events.append(f"audit hook error on {event}: {type(e).__name__}: {e}")
    finally:
        _state.inside = False


def _record(event: str, args: tuple) -> None:
    what = _describe(event, args)
    is_write, path = _is_write(event, args) if what is None else (False, None)
    if what is None and not is_write:
        return
    for events, allowed in list(_active):
        if is_write:
            real = os.path.realpath(path) if path and path != "?" else "?"
            if any(real == a or real.startswith(a + os.sep) for a in allowed):
                continue
            events.append(f"write: {event} {path}")
        else:
            events.append(what)


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


@contextmanager
def watch(allow_writes=()):
    """Record every audit event that would show code from data ran, or a write outside `allow_writes`."""
    _install()
    events: list[str] = []
    allowed = tuple(os.path.realpath(Path(p)) for p in allow_writes)
    entry = (events, allowed)
    _active.append(entry)
    try:
        yield events
    finally:
        _active.remove(entry)
