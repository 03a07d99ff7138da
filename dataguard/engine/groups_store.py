"""Where a dataset's case -> patient rule is remembered: `<manifest dir>/<Dataset>.groups.json`.

`--groups FILE` / `--group-regex RE` save the rule once; every later command that scans,
shows or writes splits uses it without the flag. The rule, not the map, is stored: new
cases are mapped as they come, and a groups file edited later is read again (its content
is part of every cache key, so findings follow it).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..checks.groups import MAX_GROUP_FILE, compile_regex, parse_group_file, resolve
from ..errors import UsageError
from ..fsio import atomic_write_text, read_json

SUFFIX = ".groups.json"


def rule_path(manifest_dir: Path | str, dataset: str) -> Path:
    return Path(manifest_dir) / f"{dataset}{SUFFIX}"


def load_rule(manifest_dir: Path | str, dataset: str) -> dict | None:
    """The remembered rule ({"file": path} or {"regex": pattern}), None when there is none
    (or it cannot be read: a broken rule file must not stop a scan)."""
    p = rule_path(manifest_dir, dataset)
    try:
        doc = read_json(p)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not (isinstance(doc.get("file"), str) or isinstance(doc.get("regex"), str)):
        return None
    return {k: doc[k] for k in ("file", "regex") if isinstance(doc.get(k), str)}


def save_rule(manifest_dir: Path | str, dataset: str, file: Path | str | None = None,
              regex: str | None = None) -> dict:
    """Check and remember a rule (exactly one of file and regex)."""
    if (file is None) == (regex is None):
        raise UsageError("give --groups FILE or --group-regex RE, not both")
    if regex is not None:
        compile_regex(regex)
        rule = {"regex": regex}
    else:
        path = Path(file).expanduser().resolve()
        parse_group_file(_read_text(path), str(path))          # a usage error now, not at every scan
        rule = {"file": str(path)}
    p = rule_path(manifest_dir, dataset)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps(rule, indent=2) + "\n")
    return rule


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_GROUP_FILE + 1)
    except OSError as e:
        raise UsageError(f"cannot read the groups file {path}: {e.strerror or e}") from None
    if len(data) > MAX_GROUP_FILE:
        raise UsageError(f"{path}: larger than {MAX_GROUP_FILE >> 20} MB, not a case -> patient table")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


def rule_digest(manifest_dir: Path | str, dataset: str) -> str:
    """What the recorded findings depend on besides the files: the rule and its file's text."""
    return groups_for(manifest_dir, dataset, ())[1]


def groups_for(manifest_dir: Path | str, dataset: str, cases) -> tuple[dict[str, str] | None, str]:
    """(case -> patient, a digest of the rule and its file's content) for a dataset's cases;
    (None, "") without a rule. A groups file that went missing or broke maps nothing (every
    case its own patient) and changes the digest, so the findings are recomputed."""
    rule = load_rule(manifest_dir, dataset)
    if rule is None:
        return None, ""
    text = None
    if "file" in rule:
        try:
            text = _read_text(Path(rule["file"]))
        except UsageError:
            text = None
    digest = hashlib.blake2b(json.dumps([rule, text]).encode(), digest_size=12).hexdigest()
    try:
        return resolve(rule, cases, text), digest
    except UsageError:
        return {c: c for c in cases}, digest
