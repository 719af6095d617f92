"""The CPUs this process may keep busy, which ``os.cpu_count()`` does not say: a pod
limited to 2 CPUs on a 64-core node sees 64 there. Sizes the training child's data
loaders and auto-label's decode threads."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable(affinity: int | None = None, cpu_max: list[str] | None = None) -> int:
    """The CPUs this process may keep busy: those it may run on, capped by any cgroup v2
    CPU quota on the way up to the root (a pod limited to 2 CPUs on a 64-core node gets
    2). ``cpu_max`` holds the contents of those ``cpu.max`` files ("max 100000" for no
    limit, "200000 100000" for two CPUs); read from this process's cgroup when None."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if cpu_max is None:
        cpu_max = _cgroup_cpu_max()
    cpus = max(affinity, 1)
    for text in cpu_max:
        fields = text.split()
        if not fields or fields[0] == "max":
            continue
        try:
            quota = int(fields[0])
            period = int(fields[1]) if len(fields) > 1 else 100_000
        except ValueError:
            continue
        if quota > 0 and period > 0:
            cpus = min(cpus, max(quota // period, 1))
    return cpus


def _cgroup_cpu_max() -> list[str]:
    """CPU quotas over this process, as cgroup v2 ``cpu.max`` contents: those of its
    cgroup and every ancestor (v2), or the v1 CFS quota written the same way."""
    found: list[str] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is not None:
        folder = _CGROUP_ROOT / relative.lstrip("/")
        while True:
            with contextlib.suppress(OSError):
                found.append((folder / "cpu.max").read_text())
            if folder == _CGROUP_ROOT or _CGROUP_ROOT not in folder.parents:
                break
            folder = folder.parent
    v1 = _CGROUP_ROOT / "cpu"
    with contextlib.suppress(OSError, ValueError):
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        period = int((v1 / "cpu.cfs_period_us").read_text())
        found.append(f"{quota if quota > 0 else 'max'} {period}")
    return found
