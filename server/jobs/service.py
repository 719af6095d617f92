from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.jobs import events, scheduler
from server.jobs.kinds import JobKind, default_pool
from server.jobs.schemas import JobEventRead, JobRead
from server.kit.db import utcnow
from server.kit.errors import Conflict, NotFound, Unprocessable
from server.kit.pagination import decode_cursor, page
from server.models.auth import User
from server.models.job import Job, JobEvent, JobState, WorkerRow
from server.projects.auth import member_project_ids
from server.settings import Settings


def submit(
    db: Session,
    settings: Settings,
    kinds: dict[str, JobKind],
    *,
    kind: str,
    user: User | None,
    project_id: int | None,
    params: dict[str, Any],
    pool: str | None = None,
    priority: int = 0,
) -> Job:
    """Records a job. It waits in the table until the scheduler admits it."""
    spec = kinds.get(kind)
    if spec is None:
        raise Unprocessable(f"unknown job kind {kind!r}")
    pool = pool or default_pool(settings, spec)
    if pool not in settings.pools:
        raise Unprocessable(f"unknown pool {pool!r}; pools: {', '.join(settings.pools)}")
    job = Job(
        kind=kind,
        project_id=project_id,
        created_by=user.id if user else None,
        pool=pool,
        priority=priority,
        state=JobState.queued,
        progress=0.0,
        message="",
        attempts=0,
        max_attempts=settings.job_max_attempts,
        params=params,
        created_at=utcnow(),
    )
    db.add(job)
    db.flush()
    events.add(db, job.id, "state", {"state": "queued"})
    events.wake_scheduler(db)
    return job


def read(db: Session, job: Job, *, position: int | None = None) -> JobRead:
    if position is None and job.state == JobState.queued and job.admitted_at is None:
        position = scheduler.positions(db, job.pool).get(job.id)
    elif job.state == JobState.queued and job.admitted_at is not None:
        position = 0  # handed to the broker, about to start
    creator = db.get(User, job.created_by) if job.created_by else None
    return JobRead.model_validate(job).model_copy(
        update={
            "position": position,
            "created_by_name": creator.username if creator else None,
        }
    )


def visible_jobs(user: User) -> sa.ColumnElement[bool]:
    if user.is_admin:
        return sa.true()
    # A project's jobs follow current membership, like authorize_job: someone removed
    # from a project no longer sees even the jobs they started there.
    return sa.or_(
        Job.project_id.in_(member_project_ids(user)),
        sa.and_(Job.project_id.is_(None), Job.created_by == user.id),
    )


def list_for(
    db: Session,
    user: User,
    *,
    project_id: int | None,
    state: JobState | None,
    mine: bool,
    limit: int,
    cursor: str | None,
    kind: str | None = None,
) -> tuple[list[JobRead], str | None]:
    before = decode_cursor(cursor)
    stmt = sa.select(Job).where(visible_jobs(user)).order_by(Job.id.desc()).limit(limit + 1)
    if project_id is not None:
        stmt = stmt.where(Job.project_id == project_id)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if mine:
        stmt = stmt.where(Job.created_by == user.id)
    if before is not None:
        stmt = stmt.where(Job.id < before)
    rows = list(db.scalars(stmt))
    pools = {job.pool for job in rows if job.state == JobState.queued}
    places: dict[int, int] = {}
    for pool in pools:
        places.update(scheduler.positions(db, pool))
    return page(rows, limit, lambda job: read(db, job, position=places.get(job.id)))


def cancel(
    db: Session,
    job: Job,
    user: User,
    ip: str | None,
    *,
    heartbeat_timeout: float | None = None,
) -> Job:
    """Queued: canceled at once and never runs. Running: stops at its next progress (the
    worker's heartbeat also tells it); running on no live process: canceled at once, and
    a worker that comes back to it finds it no longer owns it (its writes are fenced)."""
    db.refresh(job, with_for_update=True)  # a worker may be finishing it right now
    if job.state.finished:
        raise Conflict(f"the job already {job.state.value}")
    job.cancel_requested = True
    if job.state == JobState.queued:
        _end_canceled(db, job, "canceled before it started")
    elif not _attempt_alive(db, job, heartbeat_timeout):
        events.add(db, job.id, "log", {"line": f"cancel requested by {user.username}"})
        _end_canceled(db, job, "canceled; no live worker was running it")
    else:
        events.add(db, job.id, "log", {"line": f"cancel requested by {user.username}"})
    audit.record(
        db,
        "job.cancel",
        actor=user,
        target_type="job",
        target_id=job.id,
        project_id=job.project_id,
        ip=ip,
        kind=job.kind,
    )
    db.flush()
    return job


def _end_canceled(db: Session, job: Job, message: str) -> None:
    job.state = JobState.canceled
    job.finished_at = utcnow()
    job.message = message
    job.admitted_at = None
    job.message_ref = None
    events.add(db, job.id, "state", {"state": "canceled"})
    events.wake_scheduler(db)


def _attempt_alive(db: Session, job: Job, heartbeat_timeout: float | None) -> bool:
    """Whether a live worker process is executing this running job: workers heartbeat
    only the attempts they really execute, so a stale job heartbeat means none is."""
    if heartbeat_timeout is not None:
        cutoff = utcnow() - dt.timedelta(seconds=heartbeat_timeout)
        if job.heartbeat_at is None or job.heartbeat_at < cutoff:
            return False
    worker = db.get(WorkerRow, job.worker_id) if job.worker_id else None
    return worker is not None and worker.stopped_at is None


def events_after(
    db: Session, job_id: int, after: int, kinds: tuple[str, ...] = ()
) -> list[JobEventRead]:
    stmt = (
        sa.select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(1000)
    )
    if kinds:
        stmt = stmt.where(JobEvent.kind.in_(kinds))
    return [JobEventRead.model_validate(e) for e in db.scalars(stmt)]


# JSON has no NaN or Infinity; SQLite's text may hold them (json.dumps writes them).
_NON_FINITE = re.compile(rb"NaN|Infinity")
_DATA = TypeAdapter(dict[str, Any])


def _event_data(text: str) -> bytes:
    raw = text.encode()
    if _NON_FINITE.search(raw) is None:
        return raw
    # As the validated response wrote them: non-finite numbers as null.
    return _DATA.dump_json(json.loads(text))


def events_json(db: Session, job_id: int, kinds: tuple[str, ...]) -> bytes:
    """``events_after(db, job_id, 0, kinds)`` as the JSON array the API sends. The stored
    data is already JSON (jsonb's text on PostgreSQL): it is spliced into the answer, not
    decoded into ORM rows and pydantic models and encoded again, which was nearly all of
    the time of a 300-epoch run's GET /metrics."""
    stmt = (
        sa.select(JobEvent.id, JobEvent.created_at, JobEvent.kind, sa.cast(JobEvent.data, sa.Text))
        .where(JobEvent.job_id == job_id, JobEvent.kind.in_(kinds))
        .order_by(JobEvent.id)
        .limit(1000)
    )
    parts = [
        b'{"id":%d,"created_at":%s,"kind":%s,"data":%s}'
        % (
            event_id,
            # UTCDateTime gives UTC; pydantic writes it with a Z, as here.
            json.dumps(created_at.isoformat().replace("+00:00", "Z")).encode(),
            json.dumps(kind).encode(),
            _event_data(data) if data is not None else b"{}",
        )
        for event_id, created_at, kind, data in db.execute(stmt)
    ]
    return b"[" + b",".join(parts) + b"]"


def get(db: Session, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise NotFound("job not found")
    return job
