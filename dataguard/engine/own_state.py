"""dataguard's own state inside a dataset (`.dataguard/`), trusted only when it proves it is ours.

A dataset from someone else's machine can arrive with a `.dataguard/` folder of its own: a
journal whose records would make `restore` move files anywhere, a quarantine that is a link
out of the dataset. So:

- every journal record carries a MAC: keyed blake3 over the run id, the record's sequence
  number and its canonical JSON, with a per-user key that never lives in a dataset (beside the
  checkpoint trust store, created on first use, mode 600). A record that does not verify
  was not written by dataguard for this user, and nothing acts on it;
- `.dataguard/` and everything in it is looked at with lstat only: a `.dataguard` that is a
  link, or holds a link or a special file that no verified quarantine record accounts for,
  stops `repair` and `restore` (UnsafeState, exit 2) before any change, and is DG106 in a scan.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..errors import DataguardError, JournalKeyError, UnsafeState
from ..findings import Finding, display, finding
from .checkpoint_trust import trust_store
from ..fsio import check_rel, create_secret, open_nonblocking, what_is

DG_DIR = ".dataguard"
KEY_BYTES = 32
JOURNAL_LIMIT = 256 << 20        # a journal of a repair of 100,000 files is ~30 MB
NOT_OURS = "not written by dataguard for this user: not restored"


# --- the per-user key ------------------------------------------------------------------------------
def key_path() -> Path:
    """`$DATAGUARD_JOURNAL_KEY`, else `journal.key` beside the checkpoint trust store (per user,
    outside every dataset)."""
    if os.environ.get("DATAGUARD_JOURNAL_KEY"):
        return Path(os.environ["DATAGUARD_JOURNAL_KEY"])
    return trust_store().parent / "journal.key"


def _read_key(path: Path) -> bytes:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise JournalKeyError(f"journal key {path} is {what_is(st.st_mode)}, not a file; move it away")
    if os.name == "posix" and (st.st_mode & 0o077 or st.st_uid != os.getuid()):
        raise JournalKeyError(f"journal key {path} is readable by others or not yours: "
                        f"`chmod 600 {path}` (or remove it: journals written with it then stop verifying)")
    with open_nonblocking(path) as f:
        key = bytes.fromhex(f.read(4 * KEY_BYTES).decode("ascii", "replace").strip() or "00")
    if len(key) != KEY_BYTES:
        raise JournalKeyError(f"journal key {path} is malformed; move it away (journals written with it stop verifying)")
    return key


def load_key(create: bool) -> bytes | None:
    """This user's key; created (mode 600) when `create` and missing, else None when missing."""
    path = key_path()
    try:
        return _read_key(path)
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    create_secret(path, (os.urandom(KEY_BYTES).hex() + "\n").encode("ascii"))
    return _read_key(path)


# --- records ---------------------------------------------------------------------------------------
def _canonical(run_id: str, record: dict) -> bytes:
    body = {k: v for k, v in record.items() if k != "mac"}
    return json.dumps([run_id, body], sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()


def sign(key: bytes, run_id: str, record: dict) -> str:
    from blake3 import blake3

    return blake3(_canonical(run_id, record), key=key).hexdigest()


def verifies(key: bytes | None, run_id: str, record: dict) -> bool:
    import hmac

    mac = record.get("mac")
    return (key is not None and isinstance(mac, str) and isinstance(record.get("seq"), int)
            and hmac.compare_digest(mac, sign(key, run_id, record)))


def read_records(path: Path) -> list[dict]:
    """Every whole JSON-object line of a journal, in order (a torn last line from a crash ends it).
    Opened without following a link, bounded in size."""
    out: list[dict] = []
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeState(f"{path} is {what_is(st.st_mode)}, not a journal: nothing was changed")
    if st.st_size > JOURNAL_LIMIT:
        raise UnsafeState(f"{path} is larger than {JOURNAL_LIMIT >> 20} MB: not a journal dataguard wrote")
    with open_nonblocking(path) as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line.decode("utf-8"))
            except ValueError:
                break          # a torn last line from a crash: everything before it is whole
            if isinstance(rec, dict):
                out.append(rec)
    return out


def verified_records(path: Path, key: bytes | None) -> tuple[list[dict], list[int]]:
    """(records that verify with this user's key, in order; 1-based line numbers that do not)."""
    good, bad = [], []
    seen: set[int] = set()
    for i, rec in enumerate(read_records(path), 1):
        if verifies(key, path.stem, rec) and rec["seq"] not in seen:
            seen.add(rec["seq"])
            good.append(rec)
        else:
            bad.append(i)
    return good, bad


def confined(rec: dict, run_id: str) -> str | None:
    """Why a verified record still must not be obeyed (None: it may): every path relative,
    normalised, inside the root; every quarantine copy inside its own run's quarantine folder."""
    try:
        for k in ("path", "to", "from"):
            if k in rec:
                check_rel(rec[k])
        for k in ("to", "from"):
            if k in rec and rec.get("op") in ("quarantine", "restore", "unquarantine") and \
                    not rec[k].startswith(f"{DG_DIR}/quarantine/"):
                return f"{k} {rec[k]!r} is outside the quarantine"
        if rec.get("op") == "quarantine" and not rec["to"].startswith(f"{DG_DIR}/quarantine/{run_id}/"):
            return f"to {rec['to']!r} is outside run {run_id}'s quarantine"
        if "path" in rec and (rec["path"] == DG_DIR or rec["path"].startswith(DG_DIR + "/")):
            return f"path {rec['path']!r} is dataguard's own state"
    except OSError as e:
        return f"{e.strerror}: {e.filename}"
    return None


# --- the folder as a whole ---------------------------------------------------------------------------
def journal_paths(root: Path) -> list[Path]:
    """Every `*.jsonl` entry of `root/.dataguard/journal/`, sorted, listed without following a
    link (a `.dataguard` or `journal/` that is a link lists nothing: `ensure_safe` names it).
    Entries are not opened; what is not a regular file is the caller's to refuse or report."""
    d = Path(root) / DG_DIR / "journal"
    try:
        if not (stat.S_ISDIR(os.lstat(d.parent).st_mode) and stat.S_ISDIR(os.lstat(d).st_mode)):
            return []
        return sorted(d / n for n in os.listdir(d) if n.endswith(".jsonl"))
    except OSError:
        return []


def _quarantined_odd(root: Path, key: bytes | None) -> set[str]:
    """Relative paths of links and special files that verified quarantine records put there."""
    out: set[str] = set()
    for p in journal_paths(root):
        if not stat.S_ISREG(os.lstat(p).st_mode):
            continue
        try:
            good, _ = verified_records(p, key)
        except (OSError, UnsafeState):
            continue
        out |= {r["to"] for r in good if r.get("op") == "quarantine" and ("link" in r or "special" in r)
                and confined(r, p.stem) is None}
    return out


def odd_entries(root: Path, key: bytes | None) -> list[str]:
    """What makes `root/.dataguard` unsafe to use, in words (empty: safe or absent)."""
    top = Path(root) / DG_DIR
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        target = f" to {display(os.readlink(top))!r}" if stat.S_ISLNK(st.st_mode) else ""
        return [f"{top} is {what_is(st.st_mode)}{target}"]
    allowed = None
    out: list[str] = []
    stack = [(os.fspath(top), DG_DIR)]
    while stack:
        d, rel = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as e:
            out.append(f"{d} cannot be listed ({e.strerror or e})")
            continue
        for e in entries:
            erel = f"{rel}/{e.name}"
            mode = e.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                stack.append((e.path, erel))
            elif not stat.S_ISREG(mode):
                if allowed is None:
                    allowed = _quarantined_odd(Path(root), key)
                if erel not in allowed:
                    what = what_is(mode)
                    if stat.S_ISLNK(mode):
                        what += f" to {display(os.readlink(e.path))!r}"
                    out.append(f"{display(e.path)} is {what}")
    return sorted(out)


def ensure_safe(root: Path, create_key: bool = True) -> bytes:
    """Refuse (UnsafeState) a `.dataguard` that is or holds a link or a special file no verified
    record explains; this user's key otherwise. Called by repair and restore before any change."""
    key = load_key(create=create_key)
    bad = odd_entries(root, key)
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise UnsafeState("dataguard's state folder is not dataguard's: " + "; ".join(bad[:3]) + more
                          + "; nothing was changed (check it, then move it away)")
    return key


def foreign_state(root: Path, part: str) -> list[Finding]:
    """DG106: `.dataguard/` in a dataset that this user's dataguard did not write, or that is or
    holds a link. Read-only: creates no key, follows no link."""
    top = Path(root) / DG_DIR
    if not os.path.lexists(top):
        return []
    try:
        key = load_key(create=False)
    except DataguardError as e:
        return [finding("DG106", f"{part}/{DG_DIR}", str(e))]
    out = [finding("DG106", f"{part}/{DG_DIR}", f"{b}: repair and restore will not use it")
           for b in odd_entries(Path(root), key)[:20]]
    if out:
        return out
    for path in journal_paths(Path(root)):
        name = path.name
        try:
            good, bad = verified_records(path, key)
        except (OSError, UnsafeState) as e:
            out.append(finding("DG106", f"{part}/{DG_DIR}/journal/{display(name)}", str(e)))
            continue
        if bad:
            whole = not good
            out.append(finding(
                "DG106", f"{part}/{DG_DIR}/journal/{display(name)}",
                ("journal" if whole else f"{len(bad)} record(s) of this journal (line {bad[0]}"
                 + (" ..." if len(bad) > 1 else "") + ")") + f" {NOT_OURS.split(':')[0]}: `restore` will not act on "
                + ("it" if whole else "them")))
    return out
