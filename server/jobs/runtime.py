"""Running one job inside a worker: claim the row, call the kind's function, record
the outcome.

Every write an attempt makes is fenced by the attempt: it commits only while the row
still says ``running`` on this worker with this attempt number (``JobContext.write``,
``JobContext.session``), holding the row locked until the commit, so a worker that lost
its job to the reconciler (frozen, cut off from the database) cannot write progress,
events, checkpoints or a result over the next attempt. A duplicate or stale message
changes nothing: only the message the scheduler last sent can claim.

The database may go away for a while (a restart, a failover): progress and outcome
writes wait for it rather than failing the job, and an attempt that ends without
recording an outcome is released to the queue, never left ``running``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from server.jobs import events
from server.jobs.context import (
    Attempt,
    JobCanceled,
    JobContext,
    JobFailed,
    JobLost,
    LiveAttempts,
    Release,
    TimeLimitReached,
    WorkerIdentity,
    WorkerStopping,
    bound_idle_transaction,
    retrying,
)
from server.jobs.kinds import JobKind
from server.jobs.scheduler import release_job
from server.kit.db import database_unavailable, utcnow
from server.kit.storage import Storage
from server.models.job import Job, JobState
from server.settings import Settings

log = logging.getLogger(__name__)


def claim(
    maker: sessionmaker[Session],
    job_id: int,
    message_ref: str,
    worker: WorkerIdentity,
    settings: Settings,
) -> Job | None:
    """Takes the job if this message is the one the scheduler sent for it. One winner.
    Waits out an unavailable database; a claim whose commit the outage hid is found again
    by its message (``message_ref`` is unique to one admission)."""
    tried = False

    def once() -> Job | None:
        nonlocal tried
        retry, tried = tried, True
        now = utcnow()
        with maker() as db, db.begin():
            bound_idle_transaction(db, settings)
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
                if not retry:
                    return None
                mine = db.scalar(
                    sa.select(Job).where(
                        Job.id == job_id,
                        Job.state == JobState.running,
                        Job.message_ref == message_ref,
                        Job.worker_id == worker.id,
                    )
                )
                return mine
            job = db.get(Job, job_id)
            assert job is not None
            events.add(
                db,
                job.id,
                "state",
                {"state": "running", "attempt": job.attempts, "worker": worker.id},
            )
            return job

    return retrying(f"job {job_id}: claim", once)


def _owned_by(job: Job, worker: WorkerIdentity) -> sa.ColumnElement[bool]:
    return sa.and_(
        Job.id == job.id,
        Job.state == JobState.running,
        Job.worker_id == worker.id,
        Job.attempts == job.attempts,
    )


def _finish(
    maker: sessionmaker[Session],
    settings: Settings,
    job: Job,
    worker: WorkerIdentity,
    signals: Attempt,
    state: JobState,
    **values: Any,
) -> bool:
    """Records the outcome, waiting for the database while it is away; False when the
    attempt lost the job first (then nothing is written)."""
    tried = False

    def once() -> bool:
        nonlocal tried
        retry, tried = tried, True
        with maker() as db, db.begin():
            bound_idle_transaction(db, settings)
            done = cast(
                CursorResult[Any],
                db.execute(
                    sa.update(Job)
                    .where(_owned_by(job, worker))
                    .values(state=state, **values)
                    .execution_options(synchronize_session=False)
                ),
            )
            if done.rowcount != 1:
                if retry and _already(db, job, worker, state):
                    return True  # the commit the outage hid did happen
                log.warning("job %s: lost ownership before finishing as %s", job.id, state)
                return False
            data = {"state": state.value}
            if values.get("error"):
                data["error"] = values["error"]
            events.add(db, job.id, "state", data)
            events.wake_scheduler(db)
            return True

    return retrying(f"job {job.id}: recording {state.value}", once, signals.lost.is_set)


def _already(db: Session, job: Job, worker: WorkerIdentity, state: JobState) -> bool:
    return (
        db.scalar(
            sa.select(Job.id).where(
                Job.id == job.id,
                Job.state == state,
                Job.worker_id == worker.id,
                Job.attempts == job.attempts,
            )
        )
        is not None
    )


def _release(
    maker: sessionmaker[Session],
    settings: Settings,
    job: Job,
    worker: WorkerIdentity,
    signals: Attempt,
    reason: str,
) -> None:
    """An attempt that ends without an outcome gives the job back to the queue (the
    attempt counts; past max_attempts the job fails, a requested cancel ends it)."""

    def once() -> None:
        with maker() as db, db.begin():
            bound_idle_transaction(db, settings)
            row = db.scalar(sa.select(Job).where(_owned_by(job, worker)).with_for_update())
            if row is None:
                return  # already the reconciler's or another attempt's
            release_job(db, row, utcnow(), reason)
            log.warning(
                "job %s attempt %s: released (%s); now %s", job.id, job.attempts, reason, row.state
            )
            events.wake_scheduler(db)

    retrying(f"job {job.id}: releasing", once, signals.lost.is_set)


def execute(
    kind: JobKind,
    job_id: int,
    message_ref: str,
    worker: WorkerIdentity,
    settings: Settings,
    storage: Storage,
    maker: sessionmaker[Session],
    *,
    live: LiveAttempts | None = None,
    deadline: float | None = None,
) -> JobState | None:
    """Runs one delivery of a job. Returns the final state, or None if skipped or lost.
    While it runs, the attempt is in ``live``: the worker's heartbeat vouches for it, and
    the worker's stop reaches it. Past ``deadline`` (``time.monotonic()``) it fails."""
    # The claim stamps the job's first heartbeat after this.
    claiming = time.monotonic()
    job = claim(maker, job_id, message_ref, worker, settings)
    if job is None:
        log.info("job %s: message %s skipped (not ours to run)", job_id, message_ref)
        return None
    signals = Attempt(
        job.id,
        job.attempts,
        heard_at=claiming,
        stopping=live.stopping if live is not None else threading.Event(),
        deadline=deadline,
    )
    if live is not None:
        live.add(signals)
    try:
        return _run(
            kind,
            job,
            worker,
            signals,
            settings,
            storage,
            maker,
        )
    finally:
        # From here on no heartbeat vouches for the attempt: had it not recorded an
        # outcome nor been released, the reconciler re-queues it after the timeout.
        if live is not None:
            live.remove(signals)


def _run(
    kind: JobKind,
    job: Job,
    worker: WorkerIdentity,
    signals: Attempt,
    settings: Settings,
    storage: Storage,
    maker: sessionmaker[Session],
) -> JobState | None:
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
        signals=signals,
    )
    state: JobState
    values: dict[str, Any]
    try:
        result = kind.handler(ctx)
    except JobLost as exc:
        log.warning("job %s attempt %s: %s; stopped", job.id, job.attempts, exc)
        return None
    except JobCanceled as exc:
        state, values = JobState.canceled, {"finished_at": utcnow(), "message": str(exc)}
    except JobFailed as exc:
        state, values = JobState.failed, {"finished_at": utcnow(), "error": str(exc)}
    except Release as exc:
        _release(maker, settings, job, worker, signals, str(exc))
        return JobState.queued
    except WorkerStopping:
        _hand_back(maker, settings, job, worker)
        return JobState.queued
    except TimeLimitReached as exc:
        state, values = JobState.failed, {"finished_at": utcnow(), "error": str(exc)}
    except Exception as exc:
        if database_unavailable(exc):
            # Not the job's fault: it runs again (the attempt counts, so a database that
            # never comes back still ends it after max_attempts).
            log.warning("job %s: the database was unavailable; releasing it", job.id)
            _release(maker, settings, job, worker, signals, "the database was unavailable")
            return JobState.queued
        log.exception("job %s (%s) failed", job.id, job.kind)
        with contextlib.suppress(Exception):
            ctx.log("".join(traceback.format_exception(exc))[-4000:])
        state = JobState.failed
        values = {"finished_at": utcnow(), "error": f"{exc.__class__.__name__}: {exc}"[:2000]}
    else:
        state = JobState.succeeded
        values = {"finished_at": utcnow(), "progress": 1.0, "result": result or {}}
    try:
        recorded = _finish(maker, settings, job, worker, signals, state, **values)
    except Exception:
        # E.g. a result the database refuses. The job must not stay `running`.
        log.exception("job %s: recording %s failed; releasing it", job.id, state.value)
        _release(
            maker, settings, job, worker, signals, f"recording the outcome ({state.value}) failed"
        )
        return JobState.queued
    return state if recorded else None


def _hand_back(
    maker: sessionmaker[Session], settings: Settings, job: Job, worker: WorkerIdentity
) -> None:
    """A stopping worker returns the job; the attempt it used is given back. If the
    database cannot be reached, the reconciler re-queues it instead (the attempt counts)."""
    try:
        with maker() as db, db.begin():
            bound_idle_transaction(db, settings)
            handed = cast(
                CursorResult[Any],
                db.execute(
                    sa.update(Job)
                    .where(_owned_by(job, worker))
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
                ),
            )
            if handed.rowcount == 1:
                events.add(db, job.id, "state", {"state": "queued", "reason": "worker stopping"})
                events.wake_scheduler(db)
    except Exception:
        log.warning("job %s: handing it back failed; the reconciler will", job.id, exc_info=True)
