"""What a job kind's function runs inside: the ``JobContext`` it is handed, the
exceptions it may raise to end its attempt, and the fenced, retried writes they share.

Every write an attempt makes is fenced by the attempt (``JobContext.write``,
``JobContext.session``): it commits only while the row still says ``running`` on this
worker with this attempt number. The runtime (runtime.py) claims the row, calls the
kind's function with a context and records the outcome.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from server.jobs import events
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


class Interrupted(BaseException):
    """Ends an attempt from outside the job's own logic, at a point the job reached itself
    (``progress``, ``check_canceled``, ``check_interrupted``): never an asynchronous
    exception, which could land inside a database driver or a lock and leave either
    broken for the next job. Not an ``Exception``: a kind's ``except Exception`` lets it
    pass, as it would a KeyboardInterrupt."""


class WorkerStopping(Interrupted):
    """The worker process is shutting down: the job goes back to the queue, and the
    attempt it used is given back."""


class TimeLimitReached(Interrupted):
    """The attempt ran past its kind's time limit: the job fails."""


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
    # ``time.monotonic()`` just before the newest heartbeat of this attempt that ended:
    # it reached the database for the attempt, or found the database unavailable (see
    # ``heard``). What the attempt runs outside this process stops a lease after it
    # (the training child's, server/training/tasks.py).
    heard_at: float = field(default_factory=time.monotonic)
    # Set when the worker process is stopping; one event shared by all its attempts
    # (``LiveAttempts.stopping``).
    stopping: threading.Event = field(default_factory=threading.Event)
    # ``time.monotonic()`` at which the attempt is over its time limit; None: no limit.
    deadline: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def heard(self, at: float) -> None:
        """A heartbeat that began at ``at`` (monotonic) ended: it committed for this
        attempt, or the database was unavailable. Not called for one that hangs, nor
        for one that found the attempt lost: a worker frozen, starved or stuck in a
        call stops moving ``heard_at``, and its attempt's child stops on its own well
        before the reconciler gives the job to another attempt (a heartbeat timeout
        after the newest heartbeat the database holds)."""
        with self._lock:
            self.heard_at = max(self.heard_at, at)


class LiveAttempts:
    """The attempts one worker process is executing right now (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, Attempt] = {}
        # Set once by the worker's stop(): every attempt, running or yet to start, hands
        # its job back at its next check (``JobContext.check_interrupted``).
        self.stopping = threading.Event()

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


def retrying(what: str, fn: Callable[[], T], gave_up: Callable[[], bool] | None = None) -> T:
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

    def heard_at(self) -> float:
        """``time.monotonic()`` when this attempt's newest heartbeat began (see
        ``Attempt.heard``)."""
        return self._signals.heard_at

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

    def _fence(self, db: Session) -> float:
        """The last statement of each of this attempt's transactions: refreshes the job's
        heartbeat and locks its row until the commit if this attempt still owns the job;
        raises JobLost otherwise, which rolls back everything the transaction wrote.

        Last, so the row stays locked for one round trip only: a worker frozen with the
        lock would keep the reconciler from giving its job to another attempt. A cancel
        request it finds is passed on to ``progress``/``check_canceled``. Returns when
        the heartbeat was stamped (monotonic), for ``Attempt.heard`` once committed."""
        stamped = time.monotonic()
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
        return stamped

    @contextlib.contextmanager
    def _fenced(self, *, bounded: bool) -> Iterator[Session]:
        """A transaction whose last statement is the fence, and whose heartbeat counts
        for the attempt's lease once it has committed. ``bounded``: our own short
        transaction (see ``bound_idle_transaction``)."""
        with self.sessionmaker() as db, db.begin():
            if bounded:
                bound_idle_transaction(db, self.settings)
            yield db
            stamped = self._fence(db)
        self._signals.heard(stamped)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work for the job's own writes, committed when the block ends, and
        only if this attempt still owns the job (JobLost otherwise). Not retried: a
        database error ends the attempt, which then goes back to the queue."""
        self._raise_if_lost()
        with self._fenced(bounded=False) as db:
            yield db

    def write(self, fn: Callable[[Session], T]) -> T:
        """Runs ``fn`` in a transaction that commits only while this attempt owns the
        job (see ``session``), trying again while the database is unavailable. ``fn``
        must be safe to run twice: a commit cut off by an outage may have happened."""

        def once() -> T:
            self._raise_if_lost()
            with self._fenced(bounded=True) as db:
                return fn(db)

        return retrying(f"job {self.job_id}", once, self._gave_up)

    def check_interrupted(self) -> None:
        """Raises WorkerStopping when the worker is shutting down, TimeLimitReached past
        the attempt's time limit. No database round trip: a kind calls it wherever it
        waits (``progress`` and ``check_canceled`` call it too)."""
        signals = self._signals
        if signals.stopping.is_set():
            raise WorkerStopping("the worker is stopping")
        if signals.deadline is not None and time.monotonic() >= signals.deadline:
            raise TimeLimitReached("the job exceeded its time limit")

    def _raise_if_canceled(self) -> None:
        self._raise_if_lost()
        if self._signals.cancel.is_set():
            raise JobCanceled("canceled on request")
        self.check_interrupted()

    def _gave_up(self) -> bool:
        """Whether a write waiting out a database outage should stop waiting: False, True
        once the job is lost, and an Interrupted raised when the attempt must end."""
        self.check_interrupted()
        return self._signals.lost.is_set()

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
            with self._fenced(bounded=True):
                pass
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
