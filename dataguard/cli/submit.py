"""`dataguard submit`, `check-submission` and `ensemble`: predictions that are verified before they leave."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..findings import Severity
from .common import (
    ExitCode,
    UsageError,
    add_engine_args,
    console,
    note,
    shown,
    workspace,
)
from .evaluate import add_postprocess_parser, add_suggest_parser, wrapped
from .progress import CountProgress
from .render import render_findings

SUBMIT_EPILOG = """\
two ways in:
  1. predictions that exist:
     dataguard submit PRED_DIR --images imagesTs -o sub.zip \\
         --labels dataset.json
  2. through nnU-Net:
     dataguard submit -d 1 --images imagesTs -o sub.zip --model 2d:0,1 \\
         --model 3d_fullres --weights w.json --postprocess lcc

checks before any archive exists: DG601 float labels (--fix-dtype casts values
within 1e-3 of an integer to uint8), DG602 values outside the labels, DG603
geometry vs the test image, DG604 a test case without prediction or a prediction
without test case, DG605 (warning) empty or missing a label most training cases
have. The test images are checked too (orientation, duplicates, intensities;
against the training data with -d), either way in.
The zip is flat (case.nii.gz members), re-opened and verified member by member,
and described in OUT.zip.manifest.json (case hashes, models, folds, checkpoint,
weights, versions). A model's probabilities are reused while its checkpoints
and the test images are unchanged: a new --weights file runs no inference.
A model uses its finished folds (with checkpoint_final.pth) and names those it
skips (DG806); --include-unfinished takes the others too (with --checkpoint
best), and the manifest says so. Weights from `ensemble suggest` must be tuned
on the checkpoint submit predicts with (checkpoint_final by default).
exit codes: 0 archive written, 1 findings stopped it, 2 usage error
"""

ENSEMBLE_EPILOG = """\
weights from out-of-fold predictions instead of trial uploads:
  dataguard ensemble suggest -h
weights file:
  {"labels": {"3": {"2d": 1.0, "3d": 0.0}}, "default": {"2d": 0.5, "3d": 0.5},
   "checkpoint": "final"}
  models are named by input folder name; for each class c (background 0
  included) P_c = sum_m w_mc p_mc / sum_m w_mc with w from labels[c], else
  default, else equal weights (what nnUNetv2_ensemble does); the label map is
  argmax_c P_c. Probability files may be named case.npz (nnU-Net) or
  case.nii.gz.npz (older scripts). "checkpoint": whose out-of-fold
  probabilities tuned the weights (absent: final).
"""


def add_parser(sub) -> None:
    p = sub.add_parser("submit", help="check predictions, (predict and ensemble,) write a verified submission zip",
                       description="Validate predictions against the test images and write a flat, verified\n"
                       "zip with a manifest; or produce them first through nnU-Net with per-label\n"
                       "weighted ensembling and post-processing.", epilog=SUBMIT_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", nargs="?", type=Path, metavar="PRED_DIR", help="existing predictions (case.nii.gz)")
    p.add_argument("--images", type=Path, required=True, metavar="DIR", help="the test images (case_0000.nii.gz ...)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.zip", help="the archive to write")
    p.add_argument("--labels", type=Path, metavar="DATASET_JSON", help="dataset.json declaring the labels")
    p.add_argument("-d", "--dataset", metavar="ID", help="dataset id or name (labels, training data, models)")
    p.add_argument("--model", action="append", default=[], metavar="CONFIG[:FOLDS[:TRAINER[:PLANS]]]",
                   help="predict with this model through nnU-Net; repeat for an ensemble")
    p.add_argument("--weights", type=Path, metavar="WEIGHTS.json", help="per-label ensemble weights (see ensemble -h)")
    p.add_argument("--postprocess", type=postprocess_arg, default="none", metavar="none|lcc|lcc+fill|PP.json",
                   help="PP.json: exactly what `dataguard ensemble postprocess` decided out of fold; lcc: largest "
                        "connected component per label (+fill: enclosed background holes filled), undecided")
    p.add_argument("--no-tta", action="store_true", help="no test-time mirroring (faster)")
    p.add_argument("--device", choices=("cuda", "cpu", "mps"), default="cuda",
                   help="where nnU-Net predicts (default cuda; checked before predicting)")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final",
                   help="checkpoint_final.pth (the default, as nnUNetv2_predict) or checkpoint_best.pth of "
                        "each fold; --weights must be tuned on the same one")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also predict with folds whose training did not finish (no checkpoint_final.pth; "
                        "with --checkpoint best); recorded in the manifest")
    p.add_argument("--trust-checkpoint", action="append", type=Path, default=[], metavar="PATH",
                   help="predict with this checkpoint on a torch older than 2.10 although dataguard did not "
                        "write it (only for files whose origin you know); every checkpoint must still load "
                        "with weights_only=True")
    p.add_argument("--work-dir", type=Path, help="probabilities and the ensemble (default OUT.zip.work)")
    p.add_argument("--fix-dtype", action="store_true", help="cast float label maps within 1e-3 of integers to uint8")
    p.add_argument("--dry-run", action="store_true", help="check only; write no archive")
    add_engine_args(p)
    p.set_defaults(func=cmd_submit)

    c = sub.add_parser("check-submission", help="run the submission checks on an existing zip",
                       description="Everything `submit` checks, on an archive: plus nested folders, extra files, "
                       "duplicate names, unreadable members and an empty zip (DG606).")
    c.add_argument("archive", type=Path, metavar="OUT.zip")
    c.add_argument("--images", type=Path, required=True, metavar="DIR")
    c.add_argument("--labels", type=Path, metavar="DATASET_JSON")
    c.add_argument("-d", "--dataset", metavar="ID")
    add_engine_args(c)
    c.set_defaults(func=cmd_check)

    e = sub.add_parser("ensemble", help="per-label weighted ensemble of nnU-Net probability folders",
                       description="Combine probability folders as nnUNetv2_ensemble does, with per-label\n"
                       "weights, naming-robust file discovery and optional post-processing.", epilog=ENSEMBLE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _combine_args(e, required=False)            # `dataguard ensemble -i A -i B -o OUT` is `ensemble combine`
    e.set_defaults(func=cmd_ensemble)
    group = e.add_subparsers(dest="ensemble_command", metavar="{combine,suggest,postprocess}")
    comb = group.add_parser("combine", help="combine probability folders (the default without a subcommand)",
                            description="Combine probability folders as nnUNetv2_ensemble does, with\n"
                            "per-label weights and optional post-processing.", epilog=ENSEMBLE_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _combine_args(comb, required=True)
    comb.set_defaults(func=cmd_ensemble)

    add_suggest_parser(group)
    add_postprocess_parser(group)


def _pp(mode) -> str:
    return mode if isinstance(mode, str) else f"decided out of fold: {mode.describe()}"


POSTPROCESS = ("none", "lcc", "lcc+fill")


def postprocess_arg(value: str):
    """--postprocess: a mode name, or a decision file (`ensemble postprocess -o`) as a Path,
    loaded by `_decided` before anything is predicted."""
    if value in POSTPROCESS:
        return value
    if not value.endswith(".json"):
        raise argparse.ArgumentTypeError(f"{value!r}: use none, lcc, lcc+fill or a decision file PP.json")
    return Path(value)


def _decided(ws, args) -> None:
    """Replace a --postprocess decision file's path by the decision (exit 2 when it is wrong)."""
    if isinstance(args.postprocess, Path):
        try:
            args.postprocess = ws.evaluate.load_postprocessing(args.postprocess)
        except (OSError, ValueError) as e:
            raise UsageError(f"--postprocess {args.postprocess}: {e}") from None


def _combine_args(p, required: bool) -> None:
    p.add_argument("-i", "--input", action="append", required=required, type=Path, metavar="DIR",
                   help="a probability folder (case.npz + case.pkl); two or more")
    p.add_argument("-o", "--output", required=required, type=Path, metavar="OUT_DIR")
    p.add_argument("--weights", type=Path, metavar="WEIGHTS.json")
    p.add_argument("--postprocess", type=postprocess_arg, default="none", metavar="none|lcc|lcc+fill|PP.json")


# --- shared ---------------------------------------------------------------------------------
def _workspace(args):
    return workspace(args, [args.dataset] if args.dataset else [])


def _labels(args, ws) -> Path | None:
    if args.labels:
        if not args.labels.is_file():
            raise UsageError(f"--labels {args.labels}: no such file")
        return args.labels
    found = ws.dataset().dataset_json() if args.dataset else None
    if found is None:
        note("no --labels or -d: label values are not checked (DG602)")
    return found


def _images(ws, path: Path) -> Path:
    if not path.is_dir():
        raise UsageError(f"--images {path}: not a folder")
    if not ws.submit.test_images(path):
        raise UsageError(f"--images {path}: no test images named case_0000.nii.gz")
    return path


def _blocking(findings, fix_dtype: bool):
    return [f for f in findings if f.severity >= Severity.ERROR
            and not (fix_dtype and f.code == "DG601" and f.fix is not None)]


def _show(findings, title: str) -> None:
    if findings:
        render_findings(findings, title, console())


def _validate_and_package(ws, args, source: Path, images: Path, labels: Path | None, **provenance) -> int:
    n = len(ws.submit.test_images(images))
    with CountProgress("reading predictions", n) as bar:
        ps, findings = (ws.dataset() if args.dataset else ws).submit.check_predictions(source, images, labels,
                                                                                        on_case=bar.tick)
    blocking = _blocking(findings, args.fix_dtype)
    _show(findings, f"predictions {source}")
    out = console()
    if blocking:
        out.print(f"[bold red]no archive written[/]: {len(blocking)} error(s) in {len(ps.cases)} predictions "
                  f"for {n} test cases")
        return ExitCode.FINDINGS
    if args.dry_run:
        out.print(f"[green]checks passed[/]: {len(ps.cases)} predictions for {n} test cases (dry run: no archive)")
        return ExitCode.CLEAN
    with CountProgress("writing the archive", len(ps.cases)) as bar:
        report, manifest = ws.submit.package(ps, args.output, images, labels, fix_dtype=args.fix_dtype,
                                                 on_member=bar.tick, **provenance)
    cast = f", {len(report.cast)} cast to uint8" if report.cast else ""
    out.print(f"[bold green]wrote {shown(args.output)}[/]: {len(report.members)} members{cast}, re-opened and verified "
              f"(CRC, NIfTI, dtype, values, geometry, count)")
    out.print(f"manifest: {shown(manifest)}", soft_wrap=True, highlight=False)
    return ExitCode.CLEAN


# --- commands -------------------------------------------------------------------------------
def cmd_submit(args) -> int:
    if args.model and args.pred_dir:
        raise UsageError("give PRED_DIR (existing predictions) or --model (predict through nnU-Net), not both")
    if not args.model and not args.pred_dir:
        raise UsageError("give PRED_DIR (existing predictions) or -d DATASET --model CONFIG (predict)")
    if args.output.suffix != ".zip":
        raise UsageError(f"-o {args.output}: the archive's name must end in .zip")
    ws = _workspace(args)
    _decided(ws, args)
    images = _images(ws, args.images)
    labels = _labels(args, ws)
    if not args.model:
        if args.weights or args.postprocess != "none":
            raise UsageError("--weights and --postprocess apply to --model runs (or use `dataguard ensemble`)")
        if args.include_unfinished or args.checkpoint != "final":
            raise UsageError("--include-unfinished and --checkpoint apply to --model runs")
        found = (ws.dataset() if args.dataset else ws).submit.check_test_images(images)
        if _test_images_stop(found, images):
            return ExitCode.FINDINGS
        return _validate_and_package(ws, args, args.pred_dir, images, labels)
    return _predict_and_submit(ws, args, images, labels)


def _test_images_stop(found, images: Path) -> bool:
    """Show the test images' findings; True when errors among them stop the submission."""
    _show(found, f"test images {images}")
    if any(f.severity >= Severity.ERROR for f in found):
        console().print("[bold red]the test images have errors[/]: no archive written")
        return True
    return False


def folds_used(models) -> None:
    """Which folds each model uses and which it skips (DG806 for the unfinished ones)."""
    for m in models:
        note(wrapped("folds: " + m.describe()))
    _show([f for m in models for f in m.fold_findings()], "unfinished folds")


def _predict_and_submit(ws, args, images: Path, labels: Path | None) -> int:
    if not args.dataset:
        raise UsageError("--model needs -d DATASET")
    ds = ws.dataset()
    models = ds.evaluate.models(args.model, include_unfinished=args.include_unfinished)
    names = [m.spec for m in models]
    if len(set(names)) != len(names):
        raise UsageError("the same --model twice")
    weights = ds.evaluate.load_weights(args.weights, names)
    if args.weights and weights.tuned_on != args.checkpoint:
        raise UsageError(f"{args.weights} was tuned on out-of-fold probabilities of checkpoint_{weights.tuned_on}, "
                         f"this run predicts with checkpoint_{args.checkpoint}: use --checkpoint "
                         f"{weights.tuned_on}, or tune again with ensemble suggest --checkpoint {args.checkpoint}")
    folds_used(models)
    if args.weights:                  # DG803: weight on a model that never got this label right
        try:
            _show(ds.evaluate.check_weights(weights, names, str(args.weights), checkpoint=args.checkpoint,
                                            include_unfinished=args.include_unfinished), f"weights {args.weights}")
        except UsageError as e:       # no splits or validation folders: nothing to judge against
            note(f"weights not judged against out-of-fold Dice: {e}")
    work = args.work_dir or args.output.with_name(args.output.name + ".work")
    n = len(ws.submit.test_images(images))

    def ran(run):
        note(f"model {run.model.spec}: " + ("probabilities reused (checkpoints and images unchanged)" if run.reused
                                            else f"predicted {n} cases in {run.seconds:.0f} s"))

    with CountProgress() as bar:
        res = ds.submit.predict_and_ensemble(models, images, work, weights, args.postprocess, checkpoint=args.checkpoint,
                                             tta=not args.no_tta, trust=tuple(args.trust_checkpoint), device=args.device,
                                             on_event=bar.event, on_run=ran)
    if res.stage == "images":
        _show(res.findings, f"test images {images}")
        console().print("[bold red]the test images have errors[/]: nothing predicted")
        return ExitCode.FINDINGS
    if res.stage == "probabilities":
        _show(res.findings, "probability files")
        return ExitCode.FINDINGS
    note(f"ensembled {res.written} cases from {len(res.runs)} model(s), post-processing {_pp(args.postprocess)}")
    provenance = res.provenance(weights, args.postprocess, ds.manifest_path,
                                include_unfinished=args.include_unfinished)
    return _validate_and_package(ws, args, res.merged, images, labels, **provenance)


def cmd_check(args) -> int:
    ws = _workspace(args)
    images = _images(ws, args.images)
    labels = _labels(args, ws)
    ps, findings = (ws.dataset() if args.dataset else ws).submit.check_predictions(args.archive, images, labels)
    _show(findings, f"submission {args.archive}")
    errors = [f for f in findings if f.severity >= Severity.ERROR]
    out = console()
    if errors:
        out.print(f"[bold red]{len(errors)} error(s)[/]: do not upload {shown(args.archive)}")
        return ExitCode.FINDINGS
    out.print(f"[bold green]ok[/]: {len(ps.cases)} members for {len(ps.images)} test cases")
    return ExitCode.CLEAN


def cmd_ensemble(args) -> int:
    if not args.input or args.output is None:
        raise UsageError("ensemble needs -i DIR (two or more) and -o OUT_DIR, or a subcommand: "
                         "dataguard ensemble combine|suggest --help")
    names = {}
    for folder in args.input:
        name = folder.name if folder.name not in names else f"{folder.parent.name}/{folder.name}"
        if name in names:
            raise UsageError(f"two inputs named {name}")
        names[name] = folder
    ws = workspace(args, [])
    _decided(ws, args)
    weights = ws.evaluate.load_weights(args.weights, list(names))
    pi, missing = ws.submit.check_probabilities(names)
    if missing:
        _show(missing, "probability files")
        return ExitCode.FINDINGS
    n = len(set.intersection(*[set(v) for v in pi.files.values()]))
    with CountProgress("ensembling", n) as bar:
        rep = ws.submit.ensemble(pi, args.output, weights, args.postprocess, on_case=bar.tick)
    console().print(f"wrote {len(rep.written)} label maps to {shown(args.output)} "
                    f"(post-processing {_pp(args.postprocess)})")
    return ExitCode.CLEAN
