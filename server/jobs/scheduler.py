"""Admits queued jobs to their pool's queue, fairly, and repairs what faults break.

Each tick, under a lock only one scheduler can hold:

1. reconcile: jobs whose worker stopped heart-beating go back to the queue (or fail
   after ``max_attempts``; canceled if asked), judged only after watching heartbeats
   for a full timeout; queued jobs asked to cancel end canceled; admitted jobs whose
   message vanished from Redis, or sits unacked with a consumer whose worker is dead,
   are un-admitted so they are sent again;
2. admit: per pool, as many jobs as live worker slots are free, in fair order, never
   past a user's concurrent-job limit.

The rows are committed before any message is sent; a message whose send or
bookkeeping failed is noticed by step 1 later.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from server.jobs import events
from server.jobs.kinds import JobKind, time_limit_ms
from server.kit.db import DbTimeouts, is_postgresql, libpq_url, pg_connect_args, utcnow
from server.kit.probe import Freshness
from server.models.job import INTERACTIVE_PRIORITY, Job, JobState, Quota, WorkerRow
from server.settings import Settings

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key: "oculab scheduler"
_LOCK_KEY = 0x0C01AB5C


@dataclass(frozen=True)
class Admission:
    job_id: int
    kind: str
    pool: str
    message_ref: str


Sender = Callable[[Admission, int], str | None]  # (admission, time limit ms) -> broker id
# (pool, broker message ids) -> {id: consumer holding it, or None while it waits in the
# queue} for the messages the broker still has; see workers.broker.locate_messages.
MessageLocator = Callable[[str, Sequence[str]], dict[str, str | None]]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# --- fair order ------------------------------------------------------------------------


class Queued(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def created_by(self) -> int | None: ...


Q = TypeVar("Q", bound=Queued)


@dataclass(frozen=True)
class Waiting:
    """The few columns the scheduler needs: no ORM objects for thousands of rows."""

    id: int
    priority: int
    created_by: int | None
    kind: str


def fair_order(waiting: Sequence[Q], last_admitted: dict[int | None, dt.datetime]) -> list[Q]:
    """Priority first; within a priority, round-robin over users, least recently served
    user first; within a user, oldest job first. Nobody starves by submitting many."""
    per_user_seq: dict[tuple[int, int | None], int] = defaultdict(int)
    keyed: list[tuple[tuple[int, int, dt.datetime, int], Q]] = []
    for job in sorted(waiting, key=lambda j: (-j.priority, j.id)):
        slot = (job.priority, job.created_by)
        per_user_seq[slot] += 1
        served = last_admitted.get(job.created_by, _EPOCH)
        keyed.append(((-job.priority, per_user_seq[slot], served, job.id), job))
    keyed.sort(key=lambda item: item[0])
    return [job for _, job in keyed]


def last_admitted_by_user(
    db: Session, pool: str, users: set[int | None], now: dt.datetime
) -> dict[int | None, dt.datetime]:
    """When each of these users last had a job admitted (within a day: older service
    ranks like none, which keeps this query off the whole job history)."""
    if not users:
        return {}
    ids = [u for u in users if u is not None]
    who: sa.ColumnElement[bool] = Job.created_by.in_(ids) if ids else sa.false()
    if None in users:
        who = sa.or_(who, Job.created_by.is_(None))
    rows = db.execute(
        sa.select(Job.created_by, sa.func.max(Job.admitted_at))
        .where(Job.pool == pool, who, Job.admitted_at >= now - dt.timedelta(days=1))
        .group_by(Job.created_by)
    ).all()
    return {user: at for user, at in rows if at is not None}


def last_admitted_by_pool_and_user(
    db: Session, users_by_pool: dict[str, set[int | None]], now: dt.datetime
) -> dict[str, dict[int | None, dt.datetime]]:
    """``last_admitted_by_user`` for several pools in one statement (the admin view)."""
    pools = [pool for pool, users in users_by_pool.items() if users]
    if not pools:
        return {}
    users = set().union(*users_by_pool.values())
    ids = [u for u in users if u is not None]
    who: sa.ColumnElement[bool] = Job.created_by.in_(ids) if ids else sa.false()
    if None in users:
        who = sa.or_(who, Job.created_by.is_(None))
    rows = db.execute(
        sa.select(Job.pool, Job.created_by, sa.func.max(Job.admitted_at))
        .where(Job.pool.in_(pools), who, Job.admitted_at >= now - dt.timedelta(days=1))
        .group_by(Job.pool, Job.created_by)
    ).all()
    served: dict[str, dict[int | None, dt.datetime]] = defaultdict(dict)
    for pool, user, at in rows:
        if at is not None:
            served[pool][user] = at
    return dict(served)


def waiting_jobs(db: Session, pool: str, per_user: int | None = None) -> list[Waiting]:
    """Jobs of a pool not yet admitted. ``per_user`` keeps only each user's first few
    at each priority: admitting n jobs never needs more than n of anyone's."""
    waiting = sa.and_(
        Job.pool == pool,
        Job.state == JobState.queued,
        Job.admitted_at.is_(None),
        Job.cancel_requested.is_(False),
    )
    columns = (Job.id, Job.priority, Job.created_by, Job.kind)
    if per_user is None:
        rows = db.execute(sa.select(*columns).where(waiting)).all()
    else:
        ranked = (
            sa.select(
                *columns,
                sa.func.row_number()
                .over(partition_by=(Job.created_by, Job.priority), order_by=Job.id)
                .label("seq"),
            )
            .where(waiting)
            .subquery()
        )
        rows = db.execute(
            sa.select(ranked.c.id, ranked.c.priority, ranked.c.created_by, ranked.c.kind).where(
                ranked.c.seq <= per_user
            )
        ).all()
    return [Waiting(*row) for row in rows]


def positions(db: Session, pool: str) -> dict[int, int]:
    """1-based place in line of every waiting job of a pool."""
    waiting = waiting_jobs(db, pool)
    served = last_admitted_by_user(db, pool, {w.created_by for w in waiting}, utcnow())
    return {job.id: index for index, job in enumerate(fair_order(waiting, served), start=1)}


# --- capacity ----------------------------------------------------------------------------


def live_workers(db: Session, settings: Settings, now: dt.datetime) -> list[WorkerRow]:
    cutoff = now - dt.timedelta(seconds=settings.heartbeat_timeout_seconds)
    return list(
        db.scalars(
            sa.select(WorkerRow).where(
                WorkerRow.last_heartbeat >= cutoff, WorkerRow.stopped_at.is_(None)
            )
        )
    )


def pool_capacity(workers: Iterable[WorkerRow], pool: str) -> int:
    return sum(w.slots for w in workers if pool in w.pools and not w.draining)


def in_flight_by_user(db: Session, pool: str) -> dict[int | None, int]:
    rows = db.execute(
        sa.select(Job.created_by, sa.func.count())
        .where(
            Job.pool == pool,
            sa.or_(
                Job.state == JobState.running,
                sa.and_(Job.state == JobState.queued, Job.admitted_at.is_not(None)),
            ),
        )
        .group_by(Job.created_by)
    ).all()
    return {user: n for user, n in rows}


def user_limits(db: Session, pool: str) -> dict[int, int]:
    return {
        user_id: limit
        for user_id, limit in db.execute(
            sa.select(Quota.user_id, Quota.max_running).where(Quota.pool == pool)
        ).all()
    }


# --- ending attempts ---------------------------------------------------------------------


def release_job(
    db: Session, job: Job, now: dt.datetime, reason: str, *, queued_reason: str | None = None
) -> None:
    """Ends a running attempt that recorded no outcome (its worker went silent, or it could
    not go on): back to the queue, or failed once ``max_attempts`` are used, or canceled
    if someone asked. ``job`` must be locked by the caller and still ``running``."""
    if job.cancel_requested:
        _cancel(db, job, now, "canceled on request")
    elif job.attempts >= job.max_attempts:
        job.state = JobState.failed
        job.finished_at = now
        job.error = f"{reason} on attempt {job.attempts} of {job.max_attempts}"
        events.add(db, job.id, "state", {"state": "failed", "error": job.error})
    else:
        job.state = JobState.queued
        events.add(db, job.id, "state", {"state": "queued", "reason": queued_reason or reason})
    job.worker_id = None
    job.gpu_index = None
    job.heartbeat_at = None
    job.admitted_at = None
    job.message_ref = None
    job.broker_message_id = None


def _cancel(db: Session, job: Job, now: dt.datetime, message: str) -> None:
    job.state = JobState.canceled
    job.finished_at = now
    job.message = message
    job.admitted_at = None
    job.message_ref = None
    job.broker_message_id = None
    events.add(db, job.id, "state", {"state": "canceled"})


# --- the tick ----------------------------------------------------------------------------


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        maker: sessionmaker[Session],
        kinds: dict[str, JobKind],
        send: Sender,
        locate_messages: MessageLocator | None,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.kinds = kinds
        self.send = send
        self.locate_messages = locate_messages
        self._wake = threading.Event()
        self._last_reconcile = 0.0
        # When this scheduler last completed a pass, and since when it has done so
        # without a gap (see _watching).
        self._last_pass: float | None = None
        self._watching_since = time.monotonic()
        # Liveness: when run_forever last completed a tick (or failed one: the loop is
        # alive), and whether that tick held the lock (leader) or not (standby).
        self.ticked = Freshness(settings.scheduler_stale_seconds)
        self.leader = False

    def health(self) -> tuple[bool, dict[str, Any]]:
        """For ``GET /healthz``: healthy while the loop ticked within
        OCULAB_SCHEDULER_STALE_SECONDS; a tick wedged on a lock or a dead connection
        makes it 503, so that Kubernetes restarts this scheduler."""
        fresh, age = self.ticked.reading()
        body: dict[str, Any] = {
            "role": "leader" if self.leader else "standby",
            "last_tick_age_s": round(age, 3) if age is not None else None,
            "stale_after_s": self.ticked.limit_seconds,
        }
        return fresh, body

    def wake(self) -> None:
        self._wake.set()

    def _watching(self) -> float:
        """For how long this scheduler has been watching heartbeats without a gap.

        A heartbeat older than the timeout proves a worker silent only if we were
        looking all that time. After the database was unreachable (workers could not
        write heartbeats either), or this process was frozen or just started, workers
        get one full timeout to beat again before any is judged lost; otherwise the
        first pass after an outage would retire every worker and re-queue every job."""
        now = time.monotonic()
        gap = max(
            self.settings.heartbeat_timeout_seconds / 2,
            2 * self.settings.scheduler_interval_seconds,
        )
        if self._last_pass is None or now - self._last_pass > gap:
            if self._last_pass is not None:
                log.info(
                    "no scheduler pass for %.1f s; judging no heartbeat for the next %.0f s",
                    now - self._last_pass,
                    self.settings.heartbeat_timeout_seconds,
                )
            self._watching_since = now
        return now - self._watching_since

    def tick(self) -> list[Admission]:
        """One pass: reconcile, then admit. Returns what was sent."""
        with self.maker() as db, db.begin():
            self.leader = self._lock(db)
            if not self.leader:
                return []
            now = utcnow()
            watching = self._watching()
            # Wake-ups (a job submitted or finished) come in bursts; repairs need not.
            if time.monotonic() - self._last_reconcile >= self.settings.scheduler_interval_seconds:
                if watching >= self.settings.heartbeat_timeout_seconds:
                    self._requeue_lost_workers(db, now)
                self._unadmit_lost_messages(
                    db, now, judge_heartbeats=watching >= self.settings.heartbeat_timeout_seconds
                )
                self._cancel_requeued(db, now)
                self._last_reconcile = time.monotonic()
            admissions = self._admit(db, now)
        self._last_pass = time.monotonic()
        sent: dict[int, str | None] = {}
        for admission in admissions:
            kind = self.kinds.get(admission.kind)
            if kind is None:
                continue
            try:
                sent[admission.job_id] = self.send(
                    admission, time_limit_ms(self.settings, kind, admission.pool)
                )
            except Exception:
                # The row says admitted but no message exists; the reconciler resends.
                log.warning("sending job %s failed", admission.job_id, exc_info=True)
        ids = {job_id: ref for job_id, ref in sent.items() if ref}
        if ids:
            try:
                with self.maker() as db, db.begin():
                    for job_id, ref in ids.items():
                        db.execute(
                            sa.update(Job)
                            .where(Job.id == job_id)
                            .values(broker_message_id=ref)
                            .execution_options(synchronize_session=False)
                        )
            except Exception:
                log.warning("recording broker message ids failed", exc_info=True)
        return admissions

    def _lock(self, db: Session) -> bool:
        if not is_postgresql(db):
            return True  # SQLite: BEGIN IMMEDIATE already serialises writers
        return bool(db.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK_KEY))))

    def _requeue_lost_workers(self, db: Session, now: dt.datetime) -> None:
        cutoff = now - dt.timedelta(seconds=self.settings.heartbeat_timeout_seconds)
        # Workers that died without stopping (OOM kill, lost node) are marked stopped so
        # they leave the capacity count, the admin view and the metrics.
        # SKIP LOCKED: a row a frozen worker holds locked must not stall the scheduler.
        silent = (
            sa.select(WorkerRow.id)
            .where(WorkerRow.stopped_at.is_(None), WorkerRow.last_heartbeat < cutoff)
            .with_for_update(skip_locked=True)
        )
        db.execute(
            sa.update(WorkerRow)
            .where(WorkerRow.id.in_(silent))
            .values(stopped_at=now)
            .execution_options(synchronize_session=False)
        )
        stale = db.scalars(
            sa.select(Job)
            .where(Job.state == JobState.running, Job.heartbeat_at < cutoff)
            .with_for_update(skip_locked=True)
        ).all()
        for job in stale:
            lost_worker = job.worker_id
            release_job(
                db,
                job,
                now,
                "the worker running it stopped responding",
                queued_reason=f"worker {lost_worker} lost",
            )
            log.warning("job %s: worker %s lost; now %s", job.id, lost_worker, job.state)

    def _cancel_requeued(self, db: Session, now: dt.datetime) -> None:
        """A job asked to cancel while running, then handed back or re-queued, never
        runs again (claims refuse it) and must not wait forever: it ends canceled."""
        for job in db.scalars(
            sa.select(Job)
            .where(Job.state == JobState.queued, Job.cancel_requested.is_(True))
            .with_for_update(skip_locked=True)
        ):
            _cancel(db, job, now, "canceled on request before it ran again")

    def _unadmit_lost_messages(
        self, db: Session, now: dt.datetime, *, judge_heartbeats: bool = True
    ) -> None:
        """Admitted jobs no live worker will get from the broker go back to waiting, and
        are admitted and sent again at once. Their message is either gone (Redis
        restarted empty) or held unacked by a consumer whose worker is dead: Dramatiq
        would requeue that one only after its own 60 s+ heartbeat timeout, by chance,
        while the job counts against its user's limit. A stale copy that still arrives
        later cannot claim the job: the new admission has a new message_ref."""
        if self.locate_messages is None:
            return
        cutoff = now - dt.timedelta(seconds=self.settings.message_check_grace_seconds)
        admitted = db.execute(
            sa.select(Job.id, Job.pool, Job.broker_message_id, Job.message_ref).where(
                Job.state == JobState.queued,
                Job.admitted_at.is_not(None),
                Job.admitted_at < cutoff,
            )
        ).all()
        # pool -> [(job id, broker message id, message_ref)]
        by_pool: dict[str, list[tuple[int, str | None, str | None]]] = defaultdict(list)
        for job_id, pool, broker_id, message_ref in admitted:
            by_pool[pool].append((job_id, broker_id, message_ref))
        for pool, rows in by_pool.items():
            try:
                where = self.locate_messages(pool, [ref for _, ref, _ in rows if ref])
            except Exception:
                log.warning("cannot check the broker's %s queue", pool, exc_info=True)
                return
            holders = {c for c in where.values() if c}
            dead = self._dead_consumers(db, holders, now, judge_heartbeats)
            for job_id, ref, message_ref in rows:
                if ref is None or ref not in where:
                    reason = "the broker lost its message; sending it again"
                elif where[ref] in dead:
                    reason = f"worker {where[ref]} died holding its message; sending it again"
                else:
                    continue
                self._unadmit(db, job_id, message_ref, reason)

    def _dead_consumers(
        self, db: Session, consumers: set[str], now: dt.datetime, judge_heartbeats: bool
    ) -> set[str]:
        """Those of these broker consumers whose worker row is stopped, or silent past the
        heartbeat timeout (only judged once this scheduler has watched that long, see
        _watching). A consumer with no worker row (not an Oculab worker) is left to
        Dramatiq's own maintenance."""
        if not consumers:
            return set()
        dead: sa.ColumnElement[bool] = WorkerRow.stopped_at.is_not(None)
        if judge_heartbeats:
            cutoff = now - dt.timedelta(seconds=self.settings.heartbeat_timeout_seconds)
            dead = sa.or_(dead, WorkerRow.last_heartbeat < cutoff)
        return set(db.scalars(sa.select(WorkerRow.id).where(WorkerRow.id.in_(consumers), dead)))

    def _unadmit(self, db: Session, job_id: int, message_ref: str | None, reason: str) -> None:
        # Guarded by the admission's message_ref: a worker that claimed the job meanwhile
        # (or a newer admission) keeps it.
        done = db.execute(
            sa.update(Job)
            .where(
                Job.id == job_id,
                Job.state == JobState.queued,
                Job.message_ref == message_ref,
            )
            .values(admitted_at=None, message_ref=None, broker_message_id=None)
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], done).rowcount == 1:
            events.add(db, job_id, "log", {"line": reason})
            log.warning("job %s: %s", job_id, reason)

    def _admit(self, db: Session, now: dt.datetime) -> list[Admission]:
        workers = live_workers(db, self.settings, now)
        admissions: list[Admission] = []
        for pool in self.settings.pools:
            capacity = pool_capacity(workers, pool)
            busy = in_flight_by_user(db, pool)
            free = capacity * (1 + self.settings.admit_ahead(pool)) - sum(busy.values())
            if free <= 0:
                continue
            waiting = waiting_jobs(db, pool, per_user=free)
            if not waiting:
                continue
            limits = user_limits(db, pool)
            default_limit = self.settings.jobs_per_user(pool)
            served = last_admitted_by_user(db, pool, {w.created_by for w in waiting}, now)
            for job in fair_order(waiting, served):
                if free <= 0:
                    break
                user = job.created_by
                limit = limits.get(user, default_limit) if user is not None else default_limit
                if job.priority < INTERACTIVE_PRIORITY and busy.get(user, 0) >= limit:
                    continue
                busy[user] = busy.get(user, 0) + 1
                free -= 1
                admissions.append(Admission(job.id, job.kind, pool, secrets.token_hex(16)))
        if admissions:
            # Core (not ORM) UPDATE: one executemany, no objects loaded.
            table = cast(sa.Table, Job.__table__)
            db.connection().execute(
                sa.update(table)
                .where(table.c.id == sa.bindparam("job_id"), table.c.state == JobState.queued)
                .values(admitted_at=now, message_ref=sa.bindparam("ref")),
                [{"job_id": a.job_id, "ref": a.message_ref} for a in admissions],
            )
        return admissions

    # --- loops -------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event, database_url: str | None = None) -> None:
        """Ticks every interval, sooner when woken (NOTIFY on Postgres, wake() here)."""
        listener = _Listener(database_url, self.settings) if database_url else None
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                self.leader = False
                log.warning("scheduler tick failed; retrying", exc_info=True)
            self.ticked.mark()
            interval = self.settings.scheduler_interval_seconds
            if listener is not None:
                listener.wait(interval)
            else:
                self._wake.wait(interval)
            self._wake.clear()
        if listener is not None:
            listener.close()


class _Listener:
    """LISTEN on the scheduler channel; reconnects after Postgres restarts."""

    def __init__(self, database_url: str, settings: Settings) -> None:
        self.url = libpq_url(database_url)
        # Keepalives: an idle LISTEN connection whose server vanished silently must fail
        # (and reconnect) rather than leave the scheduler on its slow interval for good.
        self.connect_args = pg_connect_args(
            DbTimeouts(
                connect_seconds=settings.database_connect_timeout_seconds,
                tcp_seconds=settings.database_tcp_timeout_seconds,
            )
        )
        self.conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.url, autocommit=True, **self.connect_args)
            self.conn.execute(f"LISTEN {events.SCHEDULER_CHANNEL}")
        return self.conn

    def wait(self, timeout: float) -> None:
        try:
            for _ in self._connect().notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error:
            self.close()
            threading.Event().wait(timeout)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
