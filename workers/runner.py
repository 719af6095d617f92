"""A worker: consumes its pools' queues, runs jobs, and reports itself to Postgres.

``oculab worker`` runs one of these per process; ``oculab standalone`` runs one per
pool inside the API process, on the stub broker.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import secrets
import socket
import threading
import time
from typing import Any

import dramatiq
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from server import __version__
from server.jobs.context import Attempt, LiveAttempts, WorkerIdentity, bound_idle_transaction
from server.jobs.kinds import JobKind
from server.jobs.runtime import execute
from server.kit.db import database_unavailable, utcnow
from server.kit.probe import Freshness
from server.kit.storage import Storage
from server.models.job import Job, JobState, WorkerRow
from server.settings import Settings
from workers import gpus as gpu_info
from workers.broker import bind_consumer, current_message

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        settings: Settings,
        broker: dramatiq.Broker,
        maker: sessionmaker[Session],
        storage: Storage,
        pools: list[str],
        *,
        slots: int | None = None,
        gpu_indices: list[int] | None = None,
        poll_ms: int = 1000,
        max_jobs: int | None = None,
        probe_versions: bool = False,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.maker = maker
        self.storage = storage
        self.pools = pools
        self.poll_ms = poll_ms
        # torch/CUDA/driver as found at start (see _find_versions); None: not known (yet).
        self.versions: dict[str, str | None] = {"torch": None, "cuda": None, "driver": None}
        self._probe_versions = probe_versions
        gpu_pool = any(settings.is_gpu_pool(p) for p in pools)
        if gpu_pool and gpu_indices is None:
            found = gpu_info.slots()
            view = gpu_info.require_usable(found)
            if view is not None:
                self.versions = gpu_info.versions(view)
                self._probe_versions = False
            gpu_indices = [slot.ordinal for slot in found]
        self.gpu_indices = (gpu_indices or []) if gpu_pool else []
        if gpu_pool and not self.gpu_indices:
            log.warning("no GPU found: this worker's GPU pool runs its jobs on the CPU")
        if self.gpu_indices and slots is not None and slots > len(self.gpu_indices):
            # The extra slots would run GPU-pool jobs on the CPU, silently slower.
            raise gpu_info.GpuUnusable(
                f"this worker has {len(self.gpu_indices)} GPU slot(s) but was asked for "
                f"{slots}: a GPU pool runs one job per GPU. Leave the slots unset, or serve "
                "CPU pools from a worker of their own"
            )
        # One job per GPU; a CPU worker (or a GPU pool on a machine without one) runs
        # the given number of slots on the CPU.
        self.slots = slots or (len(self.gpu_indices) or 1)
        # Slots are per pool, as the scheduler counts them (workers.slots for each pool
        # in workers.pools): `--pool gpu --pool cpu --slots 2` runs up to two GPU jobs
        # and two CPU jobs at once, so it has a thread for each of those four slots. A
        # GPU pool's slots carry the GPUs; a CPU pool's never take one.
        self.threads = self.slots * len(pools)
        self.id = f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        self._free: dict[str, queue.Queue[int | None]] = {}
        for pool in pools:
            free: queue.Queue[int | None] = queue.Queue()
            gpus = self.gpu_indices if settings.is_gpu_pool(pool) else []
            for slot in range(self.slots):
                free.put(gpus[slot] if slot < len(gpus) else None)
            self._free[pool] = free
        # The attempts this process is executing: the only jobs its heartbeat vouches for.
        self.live = LiveAttempts()
        self._stop = threading.Event()
        self._draining = False
        self._dramatiq: dramatiq.Worker | None = None
        self._heartbeat: threading.Thread | None = None
        # Liveness (the /healthz of `oculab worker`): the last heartbeat that reached the
        # database.
        self.beat = Freshness(settings.worker_liveness_seconds)
        # Jobs this process takes before it exits (`--max-jobs`), and the counts that
        # let it exit between jobs, never during one (see exit_reason).
        self.max_jobs = max_jobs
        self._gate = threading.Lock()
        self._taken = 0
        self._running = 0
        self.finished = 0
        self._closed = False
        self._idle_since = time.monotonic()

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._register()
        self._idle_since = time.monotonic()  # --idle-exit counts from here
        if self._probe_versions:
            # torch takes seconds to import, in a child: jobs need not wait for it.
            threading.Thread(target=self._find_versions, name="versions", daemon=True).start()
        elif any(self.versions.values()):
            self._log_versions()  # found while checking the GPUs
        # The broker's consumer carries our row's id, so the scheduler can tell when the
        # holder of an unacked message is dead (workers.broker.locate_messages).
        bind_consumer(self.broker, self.id)
        worker = dramatiq.Worker(
            self.broker,
            queues=set(self.pools),
            worker_threads=self.threads,
            worker_timeout=self.poll_ms,
        )
        # Each pool's consumer holds at most what that pool's slots can run: a message
        # taken ahead would wait here, behind a long job, while another worker idles.
        # What the scheduler admits ahead (CPU pools) waits in Redis for whoever is free.
        worker.queue_prefetch = self.slots
        worker.start()
        self._dramatiq = worker
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"heartbeat-{self.id}", daemon=True
        )
        self._heartbeat.start()
        log.info(
            "worker %s consuming %s with %s slot(s) each (%s threads), GPUs %s",
            self.id,
            self.pools,
            self.slots,
            self.threads,
            self.gpu_indices or "none",
        )

    def stop(self, timeout_seconds: float | None = None) -> None:
        """Stops taking work; running jobs hand themselves back at their next check (see
        ``JobContext.check_interrupted``), within ``timeout_seconds``. One that does not
        is left to the reconciler when the process exits (the attempt then counts)."""
        timeout = timeout_seconds or self.settings.worker_shutdown_timeout_seconds
        self.live.stopping.set()
        # Stopping, not draining: Dramatiq's stop() ends consumption, and a paused
        # consumer would sleep through its restart delay first.
        self._draining = True
        self._set_draining()
        if self._dramatiq is not None:
            self._dramatiq.stop(timeout=int(timeout * 1000))
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
        with self.maker() as db, db.begin():
            db.execute(
                sa.update(WorkerRow)
                .where(WorkerRow.id == self.id)
                .values(stopped_at=utcnow(), draining=True)
            )

    def join(self) -> None:
        """Waits until every message handed to this worker was processed (tests)."""
        if self._dramatiq is not None:
            self._dramatiq.join()

    # --- running jobs ---------------------------------------------------------------

    def run(self, kind: JobKind, job_id: int, message_ref: str) -> None:
        if not self._enter():
            # Past --max-jobs, or exiting: the message is acked unrun, and the scheduler
            # sends the job again (it is admitted but its message is gone).
            log.info("job %s: this worker is exiting; left for another worker", job_id)
            return
        try:
            self._run(kind, job_id, message_ref)
        finally:
            self._leave()

    def _enter(self) -> bool:
        with self._gate:
            if self._closed or (self.max_jobs is not None and self._taken >= self.max_jobs):
                return False
            self._taken += 1
            self._running += 1
            last = self.max_jobs is not None and self._taken >= self.max_jobs
        if last:
            # The consumers fetch nothing more, and the scheduler stops counting our slots
            # (if the database cannot be told now, our row goes when we exit).
            self._pause_consumers()
            try:
                self._set_draining()
            except Exception:
                log.warning("could not mark worker %s draining", self.id, exc_info=True)
        return True

    def _leave(self) -> None:
        with self._gate:
            self._running -= 1
            self.finished += 1
            self._idle_since = time.monotonic()

    def exit_reason(self, idle_exit_seconds: float | None) -> str | None:
        """Why this worker should exit now, between jobs (`--max-jobs` reached, idle for
        `--idle-exit` seconds), or None. Once it says why, no job starts here again."""
        with self._gate:
            if self._running:
                return None
            if self.max_jobs is not None and self.finished >= self.max_jobs:
                self._closed = True
                return f"finished {self.finished} job(s) (--max-jobs {self.max_jobs})"
            idle = time.monotonic() - self._idle_since
            if idle_exit_seconds is not None and idle >= idle_exit_seconds:
                self._closed = True
                return f"no job for {idle:.0f} s (--idle-exit {idle_exit_seconds:g})"
        return None

    def _run(self, kind: JobKind, job_id: int, message_ref: str) -> None:
        # The message's queue is the pool whose slot it uses (called outside a worker
        # thread, as tests do, the first pool); its time limit counts from now, as
        # Dramatiq's own would.
        message = current_message()
        started = time.monotonic()
        pool = message.queue_name if message is not None else None
        limit_ms = message.options.get("time_limit") if message is not None else None
        deadline = started + limit_ms / 1000 if isinstance(limit_ms, int | float) else None
        free = self._free[pool if pool in self._free else self.pools[0]]
        # Never waits while prefetch <= slots: a pool's consumer holds no more messages
        # than the pool has slots, and each slot is back before its message is acked.
        gpu = free.get()
        try:
            execute(
                kind,
                job_id,
                message_ref,
                WorkerIdentity(self.id, gpu),
                self.settings,
                self.storage,
                self.maker,
                live=self.live,
                deadline=deadline,
            )
        finally:
            free.put(gpu)

    # --- reporting ------------------------------------------------------------------

    def _register(self) -> None:
        with self.maker() as db, db.begin():
            db.add(self._row(utcnow()))
        self.beat.mark()

    def _find_versions(self) -> None:
        try:
            self.versions = gpu_info.versions(gpu_info.torch_view())
        except Exception:
            log.warning("could not find the torch and CUDA versions", exc_info=True)
        self._log_versions()

    def _log_versions(self) -> None:
        log.info(
            "worker %s: torch %s, CUDA %s, NVIDIA driver %s",
            self.id,
            self.versions["torch"] or "not found",
            self.versions["cuda"] or "none",
            self.versions["driver"] or "not found",
        )

    def _version_columns(self) -> dict[str, Any]:
        return {
            "torch_version": self.versions["torch"],
            "cuda_version": self.versions["cuda"],
            "driver_version": self.versions["driver"],
        }

    def _row(self, now: dt.datetime) -> WorkerRow:
        return WorkerRow(
            id=self.id,
            hostname=socket.gethostname()[:255],
            pools=self.pools,
            slots=self.slots,
            gpus=gpu_info.telemetry(self.gpu_indices),
            started_at=now,
            last_heartbeat=now,
            draining=self._draining,
            version=__version__,
            **self._version_columns(),
        )

    def _beat(self) -> None:
        interval = self.settings.heartbeat_interval_seconds
        while not self._stop.wait(interval):
            self.beat_once()

    def beat_once(self) -> None:
        """One heartbeat, and what it tells the leases of the attempts' children
        (``Attempt.heard``)."""
        began = time.monotonic()
        try:
            heard = self.heartbeat()
        except Exception as exc:
            # Postgres may be restarting; the next beat tries again.
            log.warning("heartbeat failed", exc_info=True)
            if not database_unavailable(exc):
                return
            # An outage stops the reconciler too (it judges heartbeats only after
            # watching them for a whole timeout once the database is back), so the
            # attempts' children train on through it. Cut off from a database the
            # reconciler still reaches, a worker cannot tell the difference: its child
            # trains until the worker hears the job was taken, which costs GPU time, not
            # results (each attempt writes to a folder of its own, and this one's writes
            # are fenced).
            heard = self.live.snapshot()
        for attempt in heard:
            attempt.heard(began)

    def heartbeat(self) -> list[Attempt]:
        """Says this process is alive, and vouches for the attempts it really executes
        (not for every row that names this worker: an attempt whose execution ended
        without an outcome must go stale, so the reconciler re-queues it).

        A worker the reconciler retired while it could not beat (frozen, cut off from the
        database) is alive again and counts for admission; the attempts it held were
        re-queued meanwhile, and are told so here: each stops at once and writes nothing.
        A requested cancel is passed on too, so a job stops even between progress calls.
        Returns the attempts whose heartbeat it refreshed."""
        attempts = self.live.snapshot()
        gpus = gpu_info.telemetry(self.gpu_indices)
        now = utcnow()
        vouched: list[Attempt] = []
        with self.maker() as db, db.begin():
            # Row locks taken here are released if this process freezes mid-transaction.
            bound_idle_transaction(db, self.settings)
            if attempts:
                vouched = self._vouch(db, attempts, now)
            row = db.execute(
                sa.select(WorkerRow.stopped_at, WorkerRow.draining).where(WorkerRow.id == self.id)
            ).first()
            if row is None:
                db.add(self._row(now))  # someone deleted our row: register again
            elif row.stopped_at is None or not self._stop.is_set():
                if row.stopped_at is not None:
                    log.warning("worker %s was taken for dead; it is back", self.id)
                db.execute(
                    sa.update(WorkerRow)
                    .where(WorkerRow.id == self.id)
                    .values(
                        last_heartbeat=now, gpus=gpus, stopped_at=None, **self._version_columns()
                    )
                )
            draining = row is not None and row.draining
        self.beat.mark()
        if draining and not self._draining:
            self._pause_consumers()
        elif not draining and self._draining and not self._stop.is_set() and not self._done():
            self._resume_consumers()
        return vouched

    def _vouch(self, db: Session, attempts: list[Attempt], now: dt.datetime) -> list[Attempt]:
        """Refreshes the heartbeat of the attempts still ours; returns those it refreshed."""
        rows = {
            job_id: (state, worker_id, number, cancel)
            for job_id, state, worker_id, number, cancel in db.execute(
                sa.select(
                    Job.id, Job.state, Job.worker_id, Job.attempts, Job.cancel_requested
                ).where(Job.id.in_([a.job_id for a in attempts]))
            ).all()
        }
        owned: list[Attempt] = []
        for attempt in attempts:
            state, worker_id, number, cancel = rows.get(attempt.job_id, (None, None, None, False))
            if state != JobState.running or worker_id != self.id or number != attempt.number:
                if not attempt.lost.is_set():
                    log.warning(
                        "job %s attempt %s: no longer ours; stopping it",
                        attempt.job_id,
                        attempt.number,
                    )
                attempt.lost.set()
                continue
            if cancel:
                attempt.cancel.set()
            owned.append(attempt)
        if not owned:
            return []
        # SKIP LOCKED: a row locked by its attempt's own fenced write is refreshed when
        # that write commits; waiting for it would stall every other heartbeat.
        mine = (
            sa.select(Job.id)
            .where(
                sa.or_(*(sa.and_(Job.id == a.job_id, Job.attempts == a.number) for a in owned)),
                Job.state == JobState.running,
                Job.worker_id == self.id,
            )
            .with_for_update(skip_locked=True)
        )
        refreshed = set(
            db.scalars(
                sa.update(Job)
                .where(Job.id.in_(mine.scalar_subquery()))
                .values(heartbeat_at=now)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            )
        )
        return [a for a in owned if a.job_id in refreshed]

    def _done(self) -> bool:
        """Whether this worker takes no more jobs (its --max-jobs are taken)."""
        with self._gate:
            return self._closed or (self.max_jobs is not None and self._taken >= self.max_jobs)

    def _set_draining(self) -> None:
        # The scheduler stops counting our slots; Dramatiq's stop() ends consumption.
        with self.maker() as db, db.begin():
            db.execute(sa.update(WorkerRow).where(WorkerRow.id == self.id).values(draining=True))

    def _pause_consumers(self) -> None:
        # Consumers only: running jobs carry on; nothing new is fetched.
        self._draining = True
        if self._dramatiq is not None:
            for consumer in self._dramatiq.consumers.values():
                consumer.pause()
        log.info("worker %s is draining", self.id)

    def _resume_consumers(self) -> None:
        # An admin undrained us: without this the scheduler admits jobs to our slots
        # that no consumer fetches.
        self._draining = False
        if self._dramatiq is not None:
            for consumer in self._dramatiq.consumers.values():
                consumer.resume()
        log.info("worker %s takes work again", self.id)


class LateBoundWorker:
    """The actors' body: runs each delivered message on the worker set here. The broker
    is built first, the worker (which needs the broker) after."""

    def __init__(self) -> None:
        self.worker: Worker | None = None

    def __call__(self, kind: JobKind, job_id: int, message_ref: str) -> None:
        if self.worker is None:
            raise RuntimeError("no worker consumes this broker")
        self.worker.run(kind, job_id, message_ref)
