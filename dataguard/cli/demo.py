"""`dataguard demo`: build a small broken nnU-Net dataset with the real nnunetv2 and scan it."""
from __future__ import annotations

from pathlib import Path

from ..demo.project import run_demo
from .common import ExitCode, note, progress, render
from .render import fit_lines, screen_width


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="build a small broken nnU-Net dataset with the real nnunetv2 and scan it",
                       description="Create synthetic cardiac MRI-like cases, preprocess them with nnunetv2 "
                       "(2d), inject the classic faults (AppleDouble ._ files, .DS_Store, a zlib-corrupt "
                       ".npz in a legacy-layout copy, a truncated .b2nd, a missing .pkl) and scan.")
    p.add_argument("dir", nargs="?", type=Path, default=Path("dataguard-demo"),
                   help="where to build it (default: ./dataguard-demo)")
    p.add_argument("--cases", type=int, default=10, help="number of training cases (default: 10)")
    p.add_argument("--force", action="store_true", help="rebuild even if DIR already holds a demo")
    p.add_argument("--format", choices=("table", "json", "csv"), default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:

    args.fail_on = "never"   # the demo's findings are the point, not a failure
    def log(msg: str) -> None:           # each message at words (a path after its slashes) to the screen
        note(fit_lines(msg, screen_width(), "    "))

    result = run_demo(args.dir, n_cases=args.cases, force=args.force, log=log, progress=progress(args))
    code = render(result, args)
    # an injected fault that no scan found and no repair explains: the demo failed at its one job
    return ExitCode.FINDINGS if getattr(result, "demo_missed", None) else code
