"""The admin's view and levers: who waits, who runs, on which worker and GPU.

The view is what the admin's wall screen polls or streams every couple of seconds with
thousands of jobs queued, so it costs a fixed number of statements (workers, active
jobs with their user and project names, when each user was last served) whatever the
queue's length, and loads columns, not ORM rows with their parameters and results.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from server.audit import service as audit
from server.jobs import events, scheduler
from server.jobs.schemas import QuotaPut, QuotaRead
from server.jobs.stream import format_sse
from server.kit.db import utcnow
from server.kit.errors import Conflict, NotFound, Unprocessable
from server.kit.schemas import ReadSchema, from_row
from server.models.auth import User
from server.models.job import Job, JobState, Quota, WorkerRow
from server.models.project import Project
from server.settings import Settings


class PoolSummary(BaseModel):
    name: str
    gpu: bool
    queued: int
    running: int
    workers: int
    slots: int
    gpus: int
    per_user_limit: int


class QueuedJob(ReadSchema):
    """One line of the queue: what the wall screen shows, without params or results."""

    id: int
    kind: str
    project_id: int | None
    project_name: str | None
    state: JobState
    pool: str
    priority: int
    position: int | None = Field(
        description="Place in the pool's line while waiting (1 = next); 0 once handed to "
        "a worker's queue; null while running."
    )
    progress: float
    message: str
    worker: str | None
    gpu: int | None
    attempts: int
    max_attempts: int
    created_by: int | None
    created_by_name: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    cancel_requested: bool


class WorkerSummary(ReadSchema):
    """A live worker: one whose heartbeat is within the timeout and that has not
    stopped (a lost worker's jobs are requeued and it leaves the view)."""

    id: str
    hostname: str
    pools: list[str]
    slots: int
    gpus: list[dict[str, Any]]
    started_at: dt.datetime
    last_heartbeat: dt.datetime
    draining: bool
    current_jobs: list[int]
    version: str = Field(description="The Oculab version the worker runs.")
    torch_version: str | None = Field(description="Its torch build; null when not found.")
    cuda_version: str | None = Field(
        description="The CUDA version its torch was built for; null for a CPU build."
    )
    driver_version: str | None = Field(
        description="The NVIDIA driver on its node, from NVML; null without one."
    )


class UserUsage(BaseModel):
    user_id: int | None
    username: str | None
    running: dict[str, int]
    queued: dict[str, int]


class QueueView(BaseModel):
    generated_at: dt.datetime = Field(
        description="The server's clock when this view was taken: ages shown from it "
        "do not depend on the browser's clock."
    )
    heartbeat_interval_seconds: float
    heartbeat_timeout_seconds: float
    pools: list[PoolSummary]
    jobs: list[QueuedJob]
    workers: list[WorkerSummary]
    users: list[UserUsage]


_ACTIVE = (JobState.queued, JobState.running)


def view(db: Session, settings: Settings) -> QueueView:
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=settings.heartbeat_timeout_seconds)
    workers = list(
        db.scalars(
            sa.select(WorkerRow)
            .where(WorkerRow.stopped_at.is_(None), WorkerRow.last_heartbeat >= cutoff)
            .order_by(WorkerRow.hostname, WorkerRow.id)
        )
    )
    active = db.execute(
        sa.select(
            Job.id,
            Job.kind,
            Job.project_id,
            Project.name.label("project_name"),
            Job.state,
            Job.pool,
            Job.priority,
            Job.progress,
            Job.message,
            Job.worker_id.label("worker"),
            Job.gpu_index.label("gpu"),
            Job.attempts,
            Job.max_attempts,
            Job.created_by,
            User.username.label("created_by_name"),
            Job.created_at,
            Job.started_at,
            Job.admitted_at,
            Job.cancel_requested,
        )
        .outerjoin(User, User.id == Job.created_by)
        .outerjoin(Project, Project.id == Job.project_id)
        .where(Job.state.in_(_ACTIVE))
        .order_by(Job.id)
    ).all()

    # The scheduler's own fair order over the same rows (scheduler.waiting_jobs' filter),
    # with one statement for every pool's "last served" instead of two per pool.
    waiting: dict[str, list[scheduler.Waiting]] = defaultdict(list)
    for row in active:
        if row.state == JobState.queued and row.admitted_at is None and not row.cancel_requested:
            waiting[row.pool].append(
                scheduler.Waiting(row.id, row.priority, row.created_by, row.kind)
            )
    served = scheduler.last_admitted_by_pool_and_user(
        db, {pool: {w.created_by for w in rows} for pool, rows in waiting.items()}, now
    )
    places: dict[int, int] = {}
    for pool, rows in waiting.items():
        ordered_waiting = scheduler.fair_order(rows, served.get(pool, {}))
        places.update({job.id: index for index, job in enumerate(ordered_waiting, start=1)})

    def line(row: Any, position: int | None) -> QueuedJob:
        return from_row(QueuedJob, row, position=position)

    by_pool: dict[str, list[Any]] = defaultdict(list)
    running_by_worker: dict[str, list[int]] = defaultdict(list)
    for row in active:
        by_pool[row.pool].append(row)
        if row.state == JobState.running and row.worker:
            running_by_worker[row.worker].append(row.id)

    ordered: list[QueuedJob] = []
    pools: list[PoolSummary] = []
    for pool in settings.pools:
        in_pool = by_pool.get(pool, [])
        running = [r for r in in_pool if r.state == JobState.running]
        admitted = [r for r in in_pool if r.state == JobState.queued and r.admitted_at]
        line_up = sorted((r for r in in_pool if r.id in places), key=lambda r: places[r.id])
        ordered += [line(r, None) for r in running]
        ordered += [line(r, 0) for r in admitted]
        ordered += [line(r, places[r.id]) for r in line_up]
        serving = [w for w in workers if pool in w.pools]
        pools.append(
            PoolSummary(
                name=pool,
                gpu=settings.is_gpu_pool(pool),
                # Asked-to-cancel jobs still queued end at the scheduler's next pass.
                queued=len(admitted) + len(line_up),
                running=len(running),
                workers=len(serving),
                slots=scheduler.pool_capacity(serving, pool),
                gpus=sum(len(w.gpus) for w in serving),
                per_user_limit=settings.jobs_per_user(pool),
            )
        )

    usage: dict[int | None, UserUsage] = {}
    for row in active:
        entry = usage.setdefault(
            row.created_by,
            UserUsage(user_id=row.created_by, username=row.created_by_name, running={}, queued={}),
        )
        bucket = entry.running if row.state == JobState.running else entry.queued
        bucket[row.pool] = bucket.get(row.pool, 0) + 1

    return QueueView(
        generated_at=now,
        heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        pools=pools,
        jobs=ordered,
        workers=[
            from_row(WorkerSummary, w, current_jobs=running_by_worker.get(w.id, []))
            for w in workers
        ],
        users=sorted(usage.values(), key=lambda u: (u.username or "", u.user_id or 0)),
    )


async def stream(
    maker: sessionmaker[Session],
    settings: Settings,
    is_disconnected: Callable[[], Awaitable[bool]],
    interval_seconds: float,
    *,
    keepalive_seconds: float = 15.0,
) -> AsyncIterator[str]:
    """Server-sent events: the whole view (`event: queue`) at once, then, checked every
    ``interval_seconds``, only its parts (``pools``, ``jobs``, ``users``, ``workers``)
    that changed, with ``generated_at``; a keepalive comment when nothing did for
    ``keepalive_seconds``. Ends when the client goes away.

    GPU figures change with every heartbeat while a thousand waiting jobs mostly do
    not: sending only what changed keeps each update a few KiB instead of the whole
    queue, for the network and for the browser that parses it."""
    from starlette.concurrency import run_in_threadpool

    def take() -> dict[str, Any]:
        with maker() as db:
            return view(db, settings).model_dump(mode="json")

    sent: dict[str, bytes] = {}
    quiet = 0.0
    while True:
        if await is_disconnected():
            return
        payload = await run_in_threadpool(take)
        changed: dict[str, Any] = {}
        for key, value in payload.items():
            if key == "generated_at":
                continue
            digest = hashlib.blake2b(json.dumps(value).encode(), digest_size=16).digest()
            if sent.get(key) != digest:
                sent[key] = digest
                changed[key] = value
        if changed:
            quiet = 0.0
            yield format_sse("queue", {"generated_at": payload["generated_at"], **changed})
        elif quiet >= keepalive_seconds:
            quiet = 0.0
            yield ": keepalive\n\n"
        await asyncio.sleep(interval_seconds)
        quiet += interval_seconds


def set_priority(db: Session, job_id: int, priority: int, actor: User, ip: str | None) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise NotFound("job not found")
    if job.state != JobState.queued:
        raise Conflict(f"only waiting jobs can be re-prioritised (this one is {job.state.value})")
    previous = job.priority
    job.priority = priority
    events.add(
        db, job.id, "log", {"line": f"priority {previous} -> {priority} by {actor.username}"}
    )
    audit.record(
        db,
        "job.priority",
        actor=actor,
        target_type="job",
        target_id=job.id,
        project_id=job.project_id,
        ip=ip,
        priority=priority,
        previous=previous,
    )
    events.wake_scheduler(db)
    db.flush()
    return job


def drain(db: Session, worker_id: str, draining: bool, actor: User, ip: str | None) -> WorkerRow:
    worker = db.get(WorkerRow, worker_id)
    if worker is None or worker.stopped_at is not None:
        raise NotFound("worker not found")
    worker.draining = draining
    audit.record(
        db,
        "worker.drain" if draining else "worker.undrain",
        actor=actor,
        target_type="worker",
        target_id=worker_id[:64],
        ip=ip,
    )
    events.wake_scheduler(db)
    db.flush()
    return worker


def list_quotas(db: Session) -> list[QuotaRead]:
    rows = db.execute(
        sa.select(Quota, User.username)
        .join(User, User.id == Quota.user_id)
        .order_by(User.username, Quota.pool)
    ).all()
    return [
        QuotaRead(user_id=q.user_id, username=name, pool=q.pool, max_running=q.max_running)
        for q, name in rows
    ]


def put_quota(db: Session, settings: Settings, body: QuotaPut, actor: User, ip: str | None) -> None:
    if body.pool not in settings.pools:
        raise Unprocessable(f"unknown pool {body.pool!r}; pools: {', '.join(settings.pools)}")
    if db.get(User, body.user_id) is None:
        raise NotFound("user not found")
    quota = db.get(Quota, (body.user_id, body.pool))
    if body.max_running is None:
        if quota is not None:
            db.delete(quota)
    elif quota is None:
        db.add(Quota(user_id=body.user_id, pool=body.pool, max_running=body.max_running))
    else:
        quota.max_running = body.max_running
    audit.record(
        db,
        "quota.set",
        actor=actor,
        target_type="user",
        target_id=body.user_id,
        ip=ip,
        pool=body.pool,
        max_running=body.max_running,
    )
    events.wake_scheduler(db)
    db.flush()
