"""Job kinds for the tests, loaded through OCULAB_JOB_MODULES like any plugin."""

from __future__ import annotations

import os
import time
from typing import Any

from server.jobs.context import JobContext, JobFailed
from server.jobs.kinds import JobKind

SIDE_EFFECTS = "side-effects.log"


def sleep_count(ctx: JobContext) -> dict[str, Any]:
    """Sleeps, then records one completion line: the side effect the tests count."""
    seconds = float(ctx.params.get("seconds", 0.1))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        ctx.progress(1 - max(deadline - time.monotonic(), 0) / seconds if seconds else 1)
    path = ctx.storage.root / SIDE_EFFECTS
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.job_id} {ctx.worker_id} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)
    return {"done": True}


def crash(ctx: JobContext) -> dict[str, Any]:
    """Takes the whole worker process down, like a segfault or the OOM killer."""
    os._exit(17)


def fail(ctx: JobContext) -> dict[str, Any]:
    raise JobFailed("this job always fails")


def explode(ctx: JobContext) -> dict[str, Any]:
    raise RuntimeError("unexpected")


JOB_KINDS = [
    JobKind("test.sleep_count", sleep_count, runs_on="cpu"),
    JobKind("test.crash", crash, runs_on="cpu"),
    JobKind("test.fail", fail, runs_on="cpu"),
    JobKind("test.explode", explode, runs_on="cpu"),
]


def completions(root: os.PathLike[str] | str) -> list[int]:
    path = os.path.join(root, SIDE_EFFECTS)
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [int(line.split()[0]) for line in fh if line.strip()]
