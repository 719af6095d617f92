"""Diagnostic job kinds: an admin's smoke test of a pool, and the queue benchmark."""

from __future__ import annotations

import time
from typing import Any

from server.jobs.context import JobContext
from server.jobs.kinds import JobKind


def noop(ctx: JobContext) -> dict[str, Any]:
    return {"worker": ctx.worker_id}


def sleep(ctx: JobContext) -> dict[str, Any]:
    seconds = float(ctx.params.get("seconds", 0))
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))
        ctx.progress(1 - max(deadline - time.monotonic(), 0) / seconds if seconds else 1.0)
    return {"slept": seconds, "worker": ctx.worker_id}


JOB_KINDS = [
    JobKind("diagnostics.noop", noop, runs_on="cpu", time_limit_hours=0.1),
    JobKind("diagnostics.sleep", sleep, runs_on="cpu", time_limit_hours=1.5),
]
