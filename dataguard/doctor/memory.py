"""RAM, swap, the container's memory limit, `/dev/shm` and free disk where nnU-Net writes,
read from /proc, cgroups and statvfs (no psutil, nothing imported)."""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

SHM = "/dev/shm"
DOCKER_SHM_DEFAULT = 64 << 20


@dataclass
class Memory:
    total: int | None = None              # bytes of RAM this process may use (cgroup limit when lower)
    available: int | None = None
    swap_total: int | None = None
    swap_free: int | None = None
    cgroup_limit: int | None = None
    shm_total: int | None = None
    shm_free: int | None = None
    container: str | None = None          # "docker", "podman", "kubernetes", "container" or None
    cpus: int = 1
    disk: dict = field(default_factory=dict)   # env var -> {"path", "free"}

    def to_dict(self) -> dict:
        return asdict(self)


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[k] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    except OSError:
        pass
    return out


def cgroup_limit() -> tuple[int | None, int | None]:
    """(limit, usage) of this process's memory cgroup, v2 or v1; None where there is none."""
    for lim, use in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                     ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(lim).read_text().strip()
        except OSError:
            continue
        if not text.isdigit() or int(text) >= 1 << 60:     # "max", or v1's "no limit" 0x7fff...
            return None, None
        try:
            usage = int(Path(use).read_text().strip())
        except (OSError, ValueError):
            usage = None
        return int(text), usage
    return None, None


def shm_size(path: str = SHM) -> tuple[int | None, int | None]:
    """(total, free) bytes of the shared-memory file system (statvfs)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None, None
    return st.f_frsize * st.f_blocks, st.f_frsize * st.f_bavail


def container() -> str | None:
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    try:
        text = Path("/proc/1/cgroup").read_text()
    except OSError:
        return None
    for word, name in (("kubepods", "kubernetes"), ("docker", "docker"), ("containerd", "container"),
                       ("lxc", "container")):
        if word in text:
            return name
    return None


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def free_disk(path: str | None) -> dict | None:
    """{"path": the folder that exists (path or its nearest parent), "free": bytes}."""
    if not path:
        return None
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return {"path": str(probe), "free": shutil.disk_usage(probe).free}
    except OSError:
        return None


def read_memory(disk_vars=("nnUNet_preprocessed", "nnUNet_results")) -> Memory:
    info = meminfo()
    m = Memory(total=info.get("MemTotal"), available=info.get("MemAvailable", info.get("MemFree")),
               swap_total=info.get("SwapTotal"), swap_free=info.get("SwapFree"), cpus=cpus())
    limit, usage = cgroup_limit()
    if limit is not None:
        m.cgroup_limit = limit
        m.total = min(m.total or limit, limit)
        if usage is not None:
            m.available = min(m.available if m.available is not None else limit, max(limit - usage, 0))
    m.shm_total, m.shm_free = shm_size()
    m.container = container()
    for var in disk_vars:
        d = free_disk(os.environ.get(var))
        if d:
            m.disk[var] = d
    return m
