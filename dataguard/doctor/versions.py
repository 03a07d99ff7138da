"""Installed versions (from package metadata: nothing is imported) and the combinations known
to break nnU-Net (DG901), each with the nnU-Net issue that shows it."""
from __future__ import annotations

import platform
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..findings import Finding, Severity, finding

# (distribution, the name it is shown under)
PACKAGES = (("nnunetv2", "nnunetv2"), ("torch", "torch"), ("torchvision", "torchvision"), ("blosc2", "blosc2"),
            ("numpy", "numpy"), ("SimpleITK", "SimpleITK"), ("acvl-utils", "acvl-utils"),
            ("batchgenerators", "batchgenerators"), ("batchgeneratorsv2", "batchgeneratorsv2"))


def installed(dist: str) -> str | None:
    from importlib import metadata          # 10 ms: only when doctor runs, not at every CLI start

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def read_versions() -> dict[str, str | None]:
    """{"python": "3.11.9", "nnunetv2": "2.8.1", ..., "torchvision": None when not installed}."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist, name in PACKAGES:
        out[name] = installed(dist)
    return out


def parse(v: str | None) -> tuple[int, ...]:
    """"2.6.0+cu124" -> (2, 6, 0); "3.0.0b1" -> (3, 0, 0); None -> ()."""
    if not v:
        return ()
    out = []
    for part in v.split("+")[0].split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.group() != part:                 # 0b1, 3rc1: what follows is a pre-release tag
            break
    return tuple(out)


def torchvision_for(torch_version: str | None) -> tuple[int, int] | None:
    """The torchvision (major, minor) built against this torch: torch 2.N pairs with 0.(N+15)."""
    t = parse(torch_version)
    if len(t) < 2 or t[0] != 2:
        return None
    return 0, t[1] + 15


@dataclass(frozen=True)
class Rule:
    """A known-bad combination: `when(versions)` says whether it applies."""
    name: str
    when: Callable[[dict], bool]
    severity: Severity
    message: str            # may use {versions[...]} fields
    fix: str
    issue: str | None       # the nnU-Net issue (or CVE) that shows it


def _v(versions: dict, name: str) -> tuple[int, ...]:
    return parse(versions.get(name))


def _tv_mismatch(v: dict) -> bool:
    want = torchvision_for(v.get("torch"))
    return bool(v.get("torchvision")) and want is not None and _v(v, "torchvision")[:2] != want


KNOWN_BAD: tuple[Rule, ...] = (
    Rule("torch-torchvision", _tv_mismatch, Severity.ERROR,
         "torch {torch} with torchvision {torchvision}: built for different versions, `import torchvision` "
         "fails (\"operator torchvision::nms does not exist\") and nnUNetv2_train / nnUNetv2_predict, which "
         "import every trainer (timm -> torchvision), fail with it",
         "install matching versions: let pip choose both (`pip install -U torch torchvision`)", None),
    Rule("nnunetv2-without-blosc2", lambda v: _v(v, "nnunetv2") >= (2, 6) and not v.get("blosc2"), Severity.ERROR,
         "nnunetv2 {nnunetv2} writes and reads `.b2nd` files, but blosc2 is not installed",
         "pip install blosc2", "MIC-DKFZ/nnUNet#2589"),
    Rule("blosc2-codec", lambda v: _v(v, "nnunetv2") >= (2, 8) and v.get("blosc2") and _v(v, "blosc2") < (3, 3, 2),
         Severity.ERROR,
         "nnunetv2 {nnunetv2} writes `.b2nd` with the LZ4HC codec and per-image filters; blosc2 {blosc2} "
         "(older than 3.3.2) cannot write or read them",
         "pip install -U 'blosc2>=3.3.2'", "MIC-DKFZ/nnUNet#3003, MIC-DKFZ/nnUNet#2821"),
    Rule("numpy1-blosc2", lambda v: bool(v.get("numpy")) and _v(v, "numpy") < (2,) and _v(v, "blosc2") >= (3,),
         Severity.WARNING,
         "numpy {numpy} with blosc2 {blosc2}: recent blosc2 releases use numpy 2 functions (np.isdtype) "
         "and fail on import under numpy 1.x",
         "pip install -U 'numpy>=2'", "MIC-DKFZ/nnUNet#2913"),
    Rule("acvl-utils-0.2.1", lambda v: v.get("acvl-utils") in ("0.2.1",), Severity.ERROR,
         "acvl-utils {acvl-utils} breaks `import nnunetv2.inference` (No module named 'blosc2', "
         "cannot import crop_to_bbox)",
         "pip install -U acvl-utils (0.2.5 or newer)", "MIC-DKFZ/nnUNet#2589, MIC-DKFZ/nnUNet#2299"),
    Rule("torch-weights-only", lambda v: bool(v.get("torch")) and _v(v, "torch") < (2, 10), Severity.WARNING,
         "torch {torch}: `torch.load(weights_only=True)` can run code from a crafted checkpoint before torch "
         "2.6 (CVE-2025-32434) and before 2.10 (CVE-2026-24747); dataguard refuses checkpoints it did not "
         "record on such a torch",
         "pip install -U 'torch>=2.10' torchvision", "CVE-2025-32434, CVE-2026-24747"),
    Rule("no-nnunetv2", lambda v: not v.get("nnunetv2"), Severity.WARNING,
         "nnunetv2 is not installed in this Python: dataguard checks data, but cannot preprocess, train or "
         "predict here", "pip install nnunetv2", None),
)


def check_versions(versions: dict, rules: tuple[Rule, ...] = KNOWN_BAD) -> list[Finding]:
    """DG901 for each known-bad combination among `versions`."""
    out = []
    shown = {k: (v or "not installed") for k, v in versions.items()}
    for r in rules:
        try:
            applies = r.when(versions)
        except (TypeError, ValueError):
            applies = False
        if not applies:
            continue
        msg = r.message.format_map(_Fmt(shown)) + (f" ({r.issue})" if r.issue else "")
        out.append(finding("DG901", "versions", msg, severity=r.severity,
                           help=f"{r.name}: {r.fix}"))
    return out


class _Fmt(dict):
    def __missing__(self, key):
        return "?"

    def __getitem__(self, key):
        return super().get(key, "?")
