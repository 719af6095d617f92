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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from server.jobs import events
from server.jobs.kinds import JobKind
from server.jobs.scheduler import release_job
from server.kit.db import database_unavailable, is_postgresql, utcnow
from server.kit.storage import Storage
from server.models.job import Job, JobState
from server.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Waits between tries of a write while the database is unavailable.
_RETRY_FIRST_SECONDS = 0.2
_RETRY_MAX_SECONDS = 2.0


class JobCanceled(Exception):
    """Raised inside a job when someone asked to cancel it."""


class JobFailed(Exception):
    """A clean, expected failure: the message is shown to the user as the job's error."""


class JobLost(Exception):
    """This attempt no longer owns its job (the reconciler gave it to another attempt,
    or it ended while this worker could not be reached): stop at once, write nothing."""


class Release(Exception):
    """The attempt cannot go on for a reason that may pass (the database was unreachable
    when the kind needed it, the training process lost its supervisor): the job goes
    back to the queue and this attempt counts."""


@dataclass
class WorkerIdentity:
    id: str
    gpu_index: int | None = None


@dataclass
class Attempt:
    """One attempt a worker is executing, as its heartbeat sees it: the heartbeat vouches
    for exactly these, and tells the attempt when it was lost or asked to cancel."""

    job_id: int
    number: int
    lost: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)


class LiveAttempts:
    """The attempts one worker process is executing right now (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, Attempt] = {}

    def add(self, attempt: Attempt) -> None:
        with self._lock:
            self._items[attempt.job_id] = attempt

    def remove(self, attempt: Attempt) -> None:
        with self._lock:
            if self._items.get(attempt.job_id) is attempt:
                del self._items[attempt.job_id]

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self._items.values())


def _retrying(what: str, fn: Callable[[], T], gave_up: Callable[[], bool] | None = None) -> T:
    """Calls ``fn`` until it returns, waiting out an unavailable database. Other errors,
    and ``gave_up()`` turning true, end the waiting. ``fn`` must be safe to run again:
    a commit interrupted by the outage may or may not have happened."""
    delay = _RETRY_FIRST_SECONDS
    failing_since: float | None = None
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            if gave_up is not None and gave_up():
                raise
            if failing_since is None:
                failing_since = time.monotonic()
                log.warning("%s: the database is unavailable (%s); retrying", what, exc.__class__)
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_SECONDS)
            continue
        if failing_since is not None:
            log.info(
                "%s: the database answered again after %.1f s",
                what,
                time.monotonic() - failing_since,
            )
        return result


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
    # Set by the worker's heartbeat when the job was lost or asked to cancel.
    signals: Attempt | None = None

    def __post_init__(self) -> None:
        if self.signals is None:
            self.signals = Attempt(self.job_id, self.attempt)

    @property
    def _signals(self) -> Attempt:
        assert self.signals is not None
        return self.signals

    def _owned(self) -> sa.ColumnElement[bool]:
        return sa.and_(
            Job.id == self.job_id,
            Job.state == JobState.running,
            Job.worker_id == self.worker_id,
            Job.attempts == self.attempt,
        )

    def _raise_if_lost(self) -> None:
        if self._signals.lost.is_set():
            raise JobLost("this worker no longer owns the job")

    def _fence(self, db: Session) -> None:
        """The last statement of each of this attempt's transactions: refreshes the job's
        heartbeat and locks its row until the commit if this attempt still owns the job;
        raises JobLost otherwise, which rolls back everything the transaction wrote.

        Last, so the row stays locked for one round trip only: a worker frozen with the
        lock would keep the reconciler from giving its job to another attempt. A cancel
        request it finds is passed on to ``progress``/``check_canceled``."""
        row = db.execute(
            sa.update(Job)
            .where(self._owned())
            .values(heartbeat_at=utcnow())
            .returning(Job.cancel_requested)
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            self._signals.lost.set()
            raise JobLost("this worker no longer owns the job")
        if row[0]:
            self._signals.cancel.set()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work for the job's own writes, committed when the block ends, and
        only if this attempt still owns the job (JobLost otherwise). Not retried: a
        database error ends the attempt, which then goes back to the queue."""
        self._raise_if_lost()
        with self.sessionmaker() as db, db.begin():
            yield db
            self._fence(db)

    def write(self, fn: Callable[[Session], T]) -> T:
        """Runs ``fn`` in a transaction that commits only while this attempt owns the
        job (see ``session``), trying again while the database is unavailable. ``fn``
        must be safe to run twice: a commit cut off by an outage may have happened."""

        def once() -> T:
            self._raise_if_lost()
            with self.sessionmaker() as db, db.begin():
                bound_idle_transaction(db, self.settings)
                result = fn(db)
                self._fence(db)
                return result

        return _retrying(f"job {self.job_id}", once, self._signals.lost.is_set)

    def _raise_if_canceled(self) -> None:
        self._raise_if_lost()
        if self._signals.cancel.is_set():
            raise JobCanceled("canceled on request")

    def progress(
        self, fraction: float, message: str | None = None, db: Session | None = None
    ) -> None:
        """Reports progress (0..1) and is the point where cancellation takes effect. Waits
        out a database outage. Pass ``db`` (inside ``write``) to join that transaction;
        a cancel found there takes effect at the next progress or check_canceled."""
        self._raise_if_canceled()
        fraction = min(max(fraction, 0.0), 1.0)

        def report(db: Session) -> None:
            values: dict[str, Any] = {"progress": fraction}
            if message is not None:
                values["message"] = message[:500]
            events.add(
                db,
                self.job_id,
                "progress",
                {"progress": fraction, **({"message": message} if message else {})},
            )
            db.execute(
                sa.update(Job)
                .where(self._owned())
                .values(**values)
                .execution_options(synchronize_session=False)
            )

        if db is not None:
            report(db)
            return
        self.write(report)
        self._raise_if_canceled()

    def save_checkpoint(self, data: dict[str, Any], db: Session | None = None) -> None:
        """Records progress that a redelivered attempt of this job can resume from; pass
        the job's own session to commit it atomically with the work it describes."""

        def save(db: Session) -> None:
            db.execute(
                sa.update(Job)
                .where(self._owned())
                .values(checkpoint=dict(data))
                .execution_options(synchronize_session=False)
            )

        if db is not None:
            save(db)
        else:
            self.write(save)
        self.checkpoint = dict(data)

    def check_canceled(self) -> None:
        """Raises JobCanceled (or JobLost) if the job should stop. An unavailable database
        is not a reason to stop: the heartbeat tells the attempt once it answers again."""
        self._raise_if_canceled()
        try:
            with self.sessionmaker() as db, db.begin():
                bound_idle_transaction(db, self.settings)
                self._fence(db)
        except Exception as exc:
            if database_unavailable(exc):
                return
            raise
        self._raise_if_canceled()

    def log(self, line: str, db: Session | None = None) -> None:
        def add(db: Session) -> None:
            events.add(db, self.job_id, "log", {"line": line[:4000]})

        if db is not None:
            add(db)
        else:
            self.write(add)

    def metrics(self, data: dict[str, Any], db: Session | None = None) -> None:
        def add(db: Session) -> None:
            events.add(db, self.job_id, "metrics", data)

        if db is not None:
            add(db)
        else:
            self.write(add)


def bound_idle_transaction(db: Session, settings: Settings) -> None:
    """Lets PostgreSQL end this transaction (and its locks) if the process stops in the
    middle of it: a frozen worker (SIGSTOP, starved) keeps its connection open, and its
    row locks would hold back the reconciler and the scheduler for as long as it is
    frozen. For our own short transactions only; a kind's ``session`` may legitimately
    sit in a transaction while it computes."""
    if is_postgresql(db):
        ms = max(1000, int(settings.heartbeat_timeout_seconds * 1000 / 2))
        db.execute(sa.text(f"SET LOCAL idle_in_transaction_session_timeout = {ms}"))


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

    return _retrying(f"job {job_id}: claim", once)


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

    return _retrying(f"job {job.id}: recording {state.value}", once, signals.lost.is_set)


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

    _retrying(f"job {job.id}: releasing", once, signals.lost.is_set)


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
    shutdown_exceptions: tuple[type[BaseException], ...] = (),
    time_limit_exceptions: tuple[type[BaseException], ...] = (),
) -> JobState | None:
    """Runs one delivery of a job. Returns the final state, or None if skipped or lost.
    While it runs, the attempt is in ``live``: the worker's heartbeat vouches for it."""
    job = claim(maker, job_id, message_ref, worker, settings)
    if job is None:
        log.info("job %s: message %s skipped (not ours to run)", job_id, message_ref)
        return None
    signals = Attempt(job.id, job.attempts)
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
            shutdown_exceptions=shutdown_exceptions,
            time_limit_exceptions=time_limit_exceptions,
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
    *,
    shutdown_exceptions: tuple[type[BaseException], ...],
    time_limit_exceptions: tuple[type[BaseException], ...],
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
    except BaseException as exc:
        if shutdown_exceptions and isinstance(exc, shutdown_exceptions):
            _hand_back(maker, settings, job, worker)
            return JobState.queued
        if time_limit_exceptions and isinstance(exc, time_limit_exceptions):
            state = JobState.failed
            values = {"finished_at": utcnow(), "error": "the job exceeded its time limit"}
        elif not isinstance(exc, Exception):
            raise
        elif database_unavailable(exc):
            # Not the job's fault: it runs again (the attempt counts, so a database that
            # never comes back still ends it after max_attempts).
            log.warning("job %s: the database was unavailable; releasing it", job.id)
            _release(maker, settings, job, worker, signals, "the database was unavailable")
            return JobState.queued
        else:
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
