"""The job machinery, assembled in one place for every kind of process.

Each process that touches jobs holds the same parts: the database (an engine and its
sessions), the file store and the job kinds, sized and bounded for its role:

- the API (``for_api``): bounded statements, unless it also runs jobs (standalone),
  whose imports and exports share its engine; sessions carry the waker that wakes an
  in-process scheduler after each commit;
- a worker (``worker_process``): a connection per slot plus the heartbeat's, unbounded
  statements (jobs run under their own time limit), the Redis broker and the Worker;
- the scheduler (``scheduler_process``): two connections, bounded statements, the Redis
  broker to send admitted jobs; it reads and writes no files.

Standalone runs the same workers and scheduler in-process on stub brokers
(``in_process_jobs``, ``standalone_jobs``). Dramatiq and the worker runtime are
imported only inside the functions that build them: the API process in server mode
loads neither.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.jobs.events import WAKER_KEY, Waker
from server.jobs.kinds import JobKind, load_kinds
from server.kit.db import DbTimeouts, make_engine, make_sessionmaker
from server.kit.storage import SYNC_DESCRIPTIONS, Storage, resolve_sync
from server.settings import Settings

if TYPE_CHECKING:
    import dramatiq

    from server.jobs.scheduler import Scheduler
    from workers.inprocess import InProcessJobs
    from workers.runner import Worker

log = logging.getLogger(__name__)


class CannotStart(Exception):
    """This process cannot run as configured; the message tells the operator why."""


@dataclass(frozen=True)
class Machinery:
    """The database, file store and job kinds of one process."""

    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    timeouts: DbTimeouts
    storage: Storage
    kinds: dict[str, JobKind]
    # Set where a scheduler runs in this process (standalone): sessions wake it on commit.
    waker: Waker | None

    def close(self) -> None:
        self.engine.dispose()


def _assemble(
    settings: Settings, *, pool_size: int, statements: bool, wakes: bool, files: bool
) -> Machinery:
    """``statements``: whether statements are bounded; ``wakes``: whether a scheduler in
    this process is woken on commit; ``files``: whether this process writes files (the
    storage layout is made only then)."""
    timeouts = settings.db_timeouts(statements=statements)
    engine = make_engine(settings.resolved_database_url, pool_size=pool_size, timeouts=timeouts)
    # How writes are made durable matters only to a process that writes files; the
    # others do not read the mount table for it.
    sync = resolve_sync(settings.data_dir, settings.storage_sync) if files else "file"
    storage = Storage(settings.data_dir, fsync=settings.fsync, sync=sync)
    if files:
        storage.ensure_layout()
        # A process killed mid-request or mid-job leaves its temp files behind.
        storage.sweep_temp()
        log.info("storage %s: durable by %s", settings.data_dir, SYNC_DESCRIPTIONS[sync])
    waker = Waker() if wakes else None
    maker = make_sessionmaker(engine, info={WAKER_KEY: waker} if waker is not None else None)
    return Machinery(settings, engine, maker, timeouts, storage, load_kinds(settings), waker)


def for_api(settings: Settings, *, runs_jobs: bool) -> Machinery:
    """The API's machinery; ``runs_jobs``: this process also runs the jobs (standalone)."""
    # Requests' statements are bounded; not when this process also runs jobs, whose
    # imports and exports share the engine and may run long statements.
    return _assemble(settings, pool_size=10, statements=not runs_jobs, wakes=True, files=True)


def in_process_jobs(machinery: Machinery) -> InProcessJobs:
    """Standalone's workers and scheduler on this process's machinery (not yet started)."""
    from workers.inprocess import InProcessJobs

    if machinery.waker is None:
        raise ValueError("in-process jobs need a machinery whose sessions wake them")
    return InProcessJobs(
        machinery.settings,
        machinery.sessionmaker,
        machinery.storage,
        machinery.kinds,
        machinery.waker,
    )


@contextmanager
def standalone_jobs(settings: Settings) -> Iterator[Machinery]:
    """A standalone Oculab without the web server (``oculab demo``, the ML benches): its
    jobs run in this process for as long as the block does."""
    machinery = for_api(settings, runs_jobs=True)
    jobs = in_process_jobs(machinery)
    jobs.start()
    try:
        yield machinery
    finally:
        jobs.stop()
        machinery.close()


# Built once per process and never compared: the lightest dataclass (the API imports this).
@dataclass(eq=False)
class WorkerProcess:
    """``oculab worker``: a Worker consuming its pools' queues on Redis."""

    machinery: Machinery
    broker: dramatiq.Broker
    worker: Worker

    def close(self) -> None:
        self.broker.close()
        self.machinery.close()


def worker_process(
    settings: Settings,
    pools: Sequence[str],
    *,
    slots: int | None,
    max_jobs: int | None,
    prometheus: bool,
) -> WorkerProcess:
    """Raises ``CannotStart`` when a GPU pool cannot use its GPUs."""
    from workers.broker import get_broker
    from workers.gpus import GpuUnusable
    from workers.runner import LateBoundWorker, Worker

    # A connection per thread (slots in each pool), plus the heartbeat's.
    machinery = _assemble(
        settings,
        pool_size=(slots or 4) * len(pools) + 2,
        statements=False,
        wakes=False,
        files=True,
    )
    body = LateBoundWorker()
    broker = get_broker(settings, machinery.kinds, stub=False, prometheus=prometheus, body=body)
    # Consumers prefetch no more than their slots, so a consumer whose slots are all busy
    # polls again (backing off up to poll_ms) before it fetches the message waiting for
    # the slot that just freed: a short poll keeps that gap small for short CPU jobs.
    try:
        worker = Worker(
            settings,
            broker,
            machinery.sessionmaker,
            machinery.storage,
            list(pools),
            slots=slots,
            poll_ms=250,
            max_jobs=max_jobs,
            probe_versions=True,
        )
    except GpuUnusable as exc:
        raise CannotStart(str(exc)) from exc
    body.worker = worker
    return WorkerProcess(machinery, broker, worker)


@dataclass(eq=False)
class SchedulerProcess:
    """``oculab scheduler``: admits jobs to the Redis queues and recovers lost ones."""

    machinery: Machinery
    broker: dramatiq.Broker
    scheduler: Scheduler

    def close(self) -> None:
        self.broker.close()
        self.machinery.close()


def scheduler_process(settings: Settings) -> SchedulerProcess:
    from server.jobs.scheduler import Scheduler
    from workers.broker import get_broker, locate_messages, send_admission

    machinery = _assemble(settings, pool_size=2, statements=True, wakes=False, files=False)
    broker = get_broker(settings, machinery.kinds, stub=False)
    scheduler = Scheduler(
        settings,
        machinery.sessionmaker,
        machinery.kinds,
        send_admission(lambda _pool: broker),
        locate_messages=lambda pool, refs: locate_messages(broker, pool, refs),
    )
    return SchedulerProcess(machinery, broker, scheduler)
