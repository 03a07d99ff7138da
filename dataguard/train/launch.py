"""Start nnU-Net's training process with dataguard's trainer, and follow it.

nnU-Net >= 2.8 finds the trainer through `nnUNet_extTrainer` (dataguard's `ext` folder) and
runs as plain `nnUNetv2_train`; older versions run `python -m dataguard.train.runner`, the
same command line with the trainer registered in-process. Either way nnU-Net's console
output goes to `dataguard_console.log` in the fold folder, and the trainer's JSON-lines
events feed the live view.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .settings import ENV, TrainSettings

EXT_DIR = Path(__file__).resolve().parent / "ext"
EVENTS, CONSOLE = "dataguard_events.jsonl", "dataguard_console.log"


EXPORT_WORKERS = "nnUNet_def_n_proc"
NNUNET_DEFAULT_WORKERS = 8


def export_workers() -> int:
    """nnU-Net starts `nnUNet_def_n_proc` (default 8) spawned export/scoring workers for the final
    validation, each importing torch: on a 2-core machine that alone took minutes. One per
    usable core, at most nnU-Net's 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(NNUNET_DEFAULT_WORKERS, cores))


def nnunet_version() -> tuple[int, ...]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("nnunetv2")
    except PackageNotFoundError:
        return (0,)
    parts = []
    for p in v.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def finds_external_trainers(v: tuple[int, ...] | None = None) -> bool:
    return (v or nnunet_version()) >= (2, 8)


@dataclass
class TrainCall:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)     # added to the environment

    def shell(self, width: int | None = None) -> str:
        """The exact call a user can paste: one line, or with `width`, lines of at most that
        many columns joined by backslash-newlines (a single word longer than that, such as a
        long path, stays whole on its own line)."""
        words = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()] + [shlex.quote(a) for a in self.argv]
        if width is None:
            return " ".join(words)
        grouped: list[str] = []                  # "-tr NAME" stays on one line
        for w in words:
            if grouped and grouped[-1].startswith("-") and " " not in grouped[-1] and not w.startswith("-"):
                grouped[-1] += " " + w
            else:
                grouped.append(w)
        words = grouped
        lines, cur = [], ""
        for w in words:
            indent = "    " if lines or cur else ""
            if cur and len(cur) + 1 + len(w) + 2 > width:
                lines.append(cur + " \\")
                cur = "    " + w
            else:
                cur = (cur + " " + w) if cur else indent + w
        lines.append(cur)
        return "\n".join(lines)


def _nnunet_train_exe() -> str:
    beside = Path(sys.executable).with_name("nnUNetv2_train")
    found = shutil.which("nnUNetv2_train")
    if found and (not beside.exists() or Path(found).resolve() == beside.resolve()):
        return "nnUNetv2_train"
    return str(beside) if beside.exists() else "nnUNetv2_train"


def training_call(dataset: str, configuration: str, fold: str, *, trainer: str, plans: str, device: str,
                  npz: bool, cont: bool, settings: TrainSettings, external: bool | None = None) -> TrainCall:
    args = [dataset, configuration, str(fold), "-tr", trainer, "-p", plans, "-device", device]
    args += ["--npz"] * npz + ["--c"] * cont
    env = {ENV: settings.to_json()}
    if not os.environ.get(EXPORT_WORKERS):
        env[EXPORT_WORKERS] = str(export_workers())
    if finds_external_trainers() if external is None else external:
        prior = os.environ.get("nnUNet_extTrainer")
        env["nnUNet_extTrainer"] = str(EXT_DIR) + (os.pathsep + prior if prior else "")
        return TrainCall([_nnunet_train_exe(), *args], env)
    return TrainCall([sys.executable, "-m", "dataguard.train.runner", *args], env)


class EventReader:
    """New complete JSON lines of the events file, read as they are appended."""
    def __init__(self, path: Path):
        self.path, self.pos, self.buf = Path(path), 0, b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


@dataclass
class Outcome:
    returncode: int
    events: list[dict]
    console_log: Path
    interrupted: bool = False
    seconds: float = 0.0

    def last(self, kind: str) -> dict | None:
        return next((e for e in reversed(self.events) if e.get("event") == kind), None)


def run_training(call: TrainCall, fold_folder: Path, on_event=None, poll: float = 0.25) -> Outcome:
    """Run the training process to its end, handing each event to `on_event`."""
    fold_folder.mkdir(parents=True, exist_ok=True)
    events_path, console_path = fold_folder / EVENTS, fold_folder / CONSOLE
    events_path.unlink(missing_ok=True)
    settings = TrainSettings.from_json(call.env[ENV])
    settings.events = str(events_path)
    env = {**os.environ, **call.env, ENV: settings.to_json()}
    reader, got, t0, interrupted = EventReader(events_path), [], time.monotonic(), False
    with open(console_path, "ab") as console:
        console.write(f"\n$ {call.shell()}\n".encode())
        console.flush()
        proc = subprocess.Popen(call.argv, env=env, stdout=console, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            while True:
                done = proc.poll() is not None
                for ev in reader.read():
                    got.append(ev)
                    if on_event:
                        on_event(ev)
                if done:
                    break
                time.sleep(poll)
        except KeyboardInterrupt:
            interrupted = True
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return Outcome(proc.returncode, got, console_path, interrupted, time.monotonic() - t0)


def console_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
