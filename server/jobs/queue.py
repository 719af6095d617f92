"""The admin's view and levers: who waits, who runs, on which worker and GPU."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.auth.models import User
from server.jobs import events, scheduler
from server.jobs.models import Job, JobState, Quota, WorkerRow
from server.jobs.schemas import JobRead, QuotaPut, QuotaRead
from server.jobs.service import read
from server.kit.db import utcnow
from server.kit.errors import Conflict, NotFound, Unprocessable
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


class WorkerSummary(BaseModel):
    id: str
    hostname: str
    pools: list[str]
    slots: int
    gpus: list[dict[str, Any]]
    started_at: dt.datetime
    last_heartbeat: dt.datetime
    alive: bool
    draining: bool
    current_jobs: list[int]


class UserUsage(BaseModel):
    user_id: int | None
    username: str | None
    running: dict[str, int]
    queued: dict[str, int]


class QueueView(BaseModel):
    pools: list[PoolSummary]
    jobs: list[JobRead]
    workers: list[WorkerSummary]
    users: list[UserUsage]


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
    active = list(
        db.scalars(sa.select(Job).where(Job.state.in_((JobState.queued, JobState.running))))
    )
    running_by_worker: dict[str, list[int]] = defaultdict(list)
    for job in active:
        if job.state == JobState.running and job.worker_id:
            running_by_worker[job.worker_id].append(job.id)

    ordered: list[JobRead] = []
    pools: list[PoolSummary] = []
    for pool in settings.pools:
        in_pool = [j for j in active if j.pool == pool]
        running = sorted((j for j in in_pool if j.state == JobState.running), key=lambda j: j.id)
        admitted = sorted(
            (j for j in in_pool if j.state == JobState.queued and j.admitted_at), key=lambda j: j.id
        )
        places = scheduler.positions(db, pool)
        waiting = sorted((j for j in in_pool if j.id in places), key=lambda j: places[j.id])
        ordered += [read(db, j) for j in running]
        ordered += [read(db, j, position=0) for j in admitted]
        ordered += [read(db, j, position=places[j.id]) for j in waiting]
        serving = [w for w in workers if pool in w.pools]
        pools.append(
            PoolSummary(
                name=pool,
                gpu=settings.is_gpu_pool(pool),
                queued=len(admitted) + len(waiting),
                running=len(running),
                workers=len(serving),
                slots=scheduler.pool_capacity(serving, pool),
                gpus=sum(len(w.gpus) for w in serving),
                per_user_limit=settings.jobs_per_user(pool),
            )
        )

    usage: dict[int | None, UserUsage] = {}
    names = dict(
        db.execute(
            sa.select(User.id, User.username).where(
                User.id.in_({j.created_by for j in active if j.created_by is not None})
            )
        ).all()
    )
    for job in active:
        entry = usage.setdefault(
            job.created_by,
            UserUsage(
                user_id=job.created_by,
                username=names.get(job.created_by) if job.created_by is not None else None,
                running={},
                queued={},
            ),
        )
        bucket = entry.running if job.state == JobState.running else entry.queued
        bucket[job.pool] = bucket.get(job.pool, 0) + 1

    return QueueView(
        pools=pools,
        jobs=ordered,
        workers=[
            WorkerSummary(
                id=w.id,
                hostname=w.hostname,
                pools=w.pools,
                slots=w.slots,
                gpus=w.gpus,
                started_at=w.started_at,
                last_heartbeat=w.last_heartbeat,
                alive=True,
                draining=w.draining,
                current_jobs=running_by_worker.get(w.id, []),
            )
            for w in workers
        ],
        users=sorted(usage.values(), key=lambda u: (u.username or "", u.user_id or 0)),
    )


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
