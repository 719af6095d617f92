"""Running one job inside a worker: claim the row, call the kind's function, record
the outcome. Every transition is a guarded UPDATE, so a duplicate or stale message,
or a worker that lost its job to the reconciler, changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from server.jobs import events
from server.jobs.kinds import JobKind
from server.jobs.models import Job, JobState
from server.kit.db import utcnow
from server.kit.storage import Storage
from server.settings import Settings

log = logging.getLogger(__name__)


class JobCanceled(Exception):
    """Raised inside a job when someone asked to cancel it."""


class JobFailed(Exception):
    """A clean, expected failure: the message is shown to the user as the job's error."""


class HandBack(Exception):
    """The worker is stopping: the job goes back to the queue without using an attempt."""


@dataclass
class WorkerIdentity:
    id: str
    gpu_index: int | None = None


@dataclass
class JobContext:
    """What a job kind's function gets: its parameters and ways to report back."""

    job_id: int
    kind: str
    params: dict[str, Any]
    project_id: int | None
    created_by: int | None
    attempt: int
    gpu_index: int | None
    worker_id: str
    settings: Settings
    storage: Storage
    sessionmaker: sessionmaker[Session]
    # What an earlier attempt saved with save_checkpoint (empty on the first attempt).
    checkpoint: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work for the job's own writes, committed when the block ends."""
        with self.sessionmaker() as db, db.begin():
            yield db

    def _owned(self) -> sa.ColumnElement[bool]:
        return sa.and_(
            Job.id == self.job_id,
            Job.state == JobState.running,
            Job.worker_id == self.worker_id,
            Job.attempts == self.attempt,
        )

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Reports progress (0..1) and is the point where cancellation takes effect."""
        fraction = min(max(fraction, 0.0), 1.0)
        with self.session() as db:
            row = db.execute(
                sa.select(Job.cancel_requested, Job.state, Job.worker_id, Job.attempts).where(
                    Job.id == self.job_id
                )
            ).first()
            if row is None:
                raise JobCanceled("the job no longer exists")
            cancel, state, worker_id, attempts = row
            if state != JobState.running or worker_id != self.worker_id or attempts != self.attempt:
                # The reconciler gave the job to someone else; stop quietly.
                raise JobCanceled("this worker no longer owns the job")
            if cancel:
                raise JobCanceled("canceled on request")
            values: dict[str, Any] = {"progress": fraction, "heartbeat_at": utcnow()}
            if message is not None:
                values["message"] = message[:500]
            db.execute(sa.update(Job).where(self._owned()).values(**values))
            events.add(
                db,
                self.job_id,
                "progress",
                {"progress": fraction, **({"message": message} if message else {})},
            )

    def save_checkpoint(self, data: dict[str, Any], db: Session | None = None) -> None:
        """Records progress that a redelivered attempt of this job can resume from; pass
        the job's own session to commit it atomically with the work it describes."""
        self.checkpoint = dict(data)
        statement = (
            sa.update(Job)
            .where(self._owned())
            .values(checkpoint=self.checkpoint)
            .execution_options(synchronize_session=False)
        )
        if db is not None:
            db.execute(statement)
            return
        with self.session() as own:
            own.execute(statement)

    def check_canceled(self) -> None:
        with self.session() as db:
            cancel = db.scalar(sa.select(Job.cancel_requested).where(Job.id == self.job_id))
        if cancel:
            raise JobCanceled("canceled on request")

    def log(self, line: str) -> None:
        with self.session() as db:
            events.add(db, self.job_id, "log", {"line": line[:4000]})

    def metrics(self, data: dict[str, Any]) -> None:
        with self.session() as db:
            events.add(db, self.job_id, "metrics", data)


def claim(
    maker: sessionmaker[Session], job_id: int, message_ref: str, worker: WorkerIdentity
) -> Job | None:
    """Takes the job if this message is the one the scheduler sent for it. One winner."""
    now = utcnow()
    with maker() as db, db.begin():
        claimed = cast(
            CursorResult[Any],
            db.execute(
                sa.update(Job)
                .where(
                    Job.id == job_id,
                    Job.state == JobState.queued,
                    Job.message_ref == message_ref,
                    Job.cancel_requested.is_(False),
                )
                .values(
                    state=JobState.running,
                    worker_id=worker.id,
                    gpu_index=worker.gpu_index,
                    attempts=Job.attempts + 1,
                    started_at=now,
                    heartbeat_at=now,
                    error=None,
                )
                .execution_options(synchronize_session=False)
            ),
        )
        if claimed.rowcount != 1:
            return None
        job = db.get(Job, job_id)
        assert job is not None
        events.add(
            db, job.id, "state", {"state": "running", "attempt": job.attempts, "worker": worker.id}
        )
        return job


def _finish(
    maker: sessionmaker[Session],
    job: Job,
    worker: WorkerIdentity,
    state: JobState,
    **values: Any,
) -> bool:
    with maker() as db, db.begin():
        done = cast(
            CursorResult[Any],
            db.execute(
                sa.update(Job)
                .where(
                    Job.id == job.id,
                    Job.state == JobState.running,
                    Job.worker_id == worker.id,
                    Job.attempts == job.attempts,
                )
                .values(state=state, **values)
                .execution_options(synchronize_session=False)
            ),
        )
        if done.rowcount != 1:
            log.warning("job %s: lost ownership before finishing as %s", job.id, state)
            return False
        data = {"state": state.value}
        if values.get("error"):
            data["error"] = values["error"]
        events.add(db, job.id, "state", data)
        events.wake_scheduler(db)
        return True


def execute(
    kind: JobKind,
    job_id: int,
    message_ref: str,
    worker: WorkerIdentity,
    settings: Settings,
    storage: Storage,
    maker: sessionmaker[Session],
    *,
    shutdown_exceptions: tuple[type[BaseException], ...] = (),
    time_limit_exceptions: tuple[type[BaseException], ...] = (),
) -> JobState | None:
    """Runs one delivery of a job. Returns the final state, or None if skipped."""
    job = claim(maker, job_id, message_ref, worker)
    if job is None:
        log.info("job %s: message %s skipped (not ours to run)", job_id, message_ref)
        return None
    ctx = JobContext(
        job_id=job.id,
        kind=job.kind,
        params=dict(job.params),
        project_id=job.project_id,
        created_by=job.created_by,
        attempt=job.attempts,
        gpu_index=worker.gpu_index,
        worker_id=worker.id,
        settings=settings,
        storage=storage,
        sessionmaker=maker,
        checkpoint=dict(job.checkpoint or {}),
    )
    try:
        result = kind.handler(ctx)
    except JobCanceled as exc:
        _finish(maker, job, worker, JobState.canceled, finished_at=utcnow(), message=str(exc))
        return JobState.canceled
    except JobFailed as exc:
        _finish(maker, job, worker, JobState.failed, finished_at=utcnow(), error=str(exc))
        return JobState.failed
    except HandBack:
        _hand_back(maker, job, worker)
        return JobState.queued
    except BaseException as exc:
        if shutdown_exceptions and isinstance(exc, shutdown_exceptions):
            _hand_back(maker, job, worker)
            return JobState.queued
        if time_limit_exceptions and isinstance(exc, time_limit_exceptions):
            _finish(
                maker,
                job,
                worker,
                JobState.failed,
                finished_at=utcnow(),
                error="the job exceeded its time limit",
            )
            return JobState.failed
        if not isinstance(exc, Exception):
            raise
        log.exception("job %s (%s) failed", job.id, job.kind)
        with contextlib.suppress(Exception):
            ctx.log("".join(traceback.format_exception(exc))[-4000:])
        _finish(
            maker,
            job,
            worker,
            JobState.failed,
            finished_at=utcnow(),
            error=f"{exc.__class__.__name__}: {exc}"[:2000],
        )
        return JobState.failed
    _finish(
        maker,
        job,
        worker,
        JobState.succeeded,
        finished_at=utcnow(),
        progress=1.0,
        result=result or {},
    )
    return JobState.succeeded


def _hand_back(maker: sessionmaker[Session], job: Job, worker: WorkerIdentity) -> None:
    """A stopping worker returns the job; the attempt it used is given back."""
    with maker() as db, db.begin():
        db.execute(
            sa.update(Job)
            .where(
                Job.id == job.id,
                Job.state == JobState.running,
                Job.worker_id == worker.id,
                Job.attempts == job.attempts,
            )
            .values(
                state=JobState.queued,
                attempts=Job.attempts - 1,
                worker_id=None,
                gpu_index=None,
                admitted_at=None,
                message_ref=None,
                broker_message_id=None,
                heartbeat_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        events.add(db, job.id, "state", {"state": "queued", "reason": "worker stopping"})
        events.wake_scheduler(db)
