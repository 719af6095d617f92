"""A worker: consumes its pools' queues, runs jobs, and reports itself to Postgres.

``oculab worker`` runs one of these per process; ``oculab standalone`` runs one per
pool inside the API process, on the stub broker.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware.shutdown import Shutdown
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy.orm import Session, sessionmaker

from server import __version__
from server.jobs.kinds import JobKind
from server.jobs.models import Job, JobState, WorkerRow
from server.jobs.runtime import WorkerIdentity, execute
from server.kit.db import utcnow
from server.kit.storage import Storage
from server.settings import Settings
from workers import gpus as gpu_info

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
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.maker = maker
        self.storage = storage
        self.pools = pools
        self.poll_ms = poll_ms
        gpu_pool = any(settings.is_gpu_pool(p) for p in pools)
        self.gpu_indices = (
            (gpu_info.detect() if gpu_indices is None else gpu_indices) if gpu_pool else []
        )
        # One job per GPU; a CPU worker (or a GPU pool on a machine without one) runs
        # the given number of slots on the CPU.
        self.slots = slots or (len(self.gpu_indices) or 1)
        self.id = f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        self._free: queue.Queue[int | None] = queue.Queue()
        for slot in range(self.slots):
            self._free.put(self.gpu_indices[slot] if slot < len(self.gpu_indices) else None)
        self._stop = threading.Event()
        self._draining = False
        self._dramatiq: dramatiq.Worker | None = None
        self._heartbeat: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._register()
        worker = dramatiq.Worker(
            self.broker,
            queues=set(self.pools),
            worker_threads=self.slots,
            worker_timeout=self.poll_ms,
        )
        # Hold what can run plus what the scheduler admits ahead, no more: an idle worker
        # elsewhere gets the rest.
        worker.queue_prefetch = self.slots * (
            1 + max((self.settings.admit_ahead(p) for p in self.pools), default=0)
        )
        worker.start()
        self._dramatiq = worker
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"heartbeat-{self.id}", daemon=True
        )
        self._heartbeat.start()
        log.info(
            "worker %s consuming %s with %s slot(s), GPUs %s",
            self.id,
            self.pools,
            self.slots,
            self.gpu_indices or "none",
        )

    def stop(self, timeout_seconds: float | None = None) -> None:
        """Stops taking work; running jobs are interrupted and hand themselves back."""
        timeout = timeout_seconds or self.settings.worker_shutdown_timeout_seconds
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
        gpu = self._free.get()
        try:
            execute(
                kind,
                job_id,
                message_ref,
                WorkerIdentity(self.id, gpu),
                self.settings,
                self.storage,
                self.maker,
                shutdown_exceptions=(Shutdown,),
                time_limit_exceptions=(TimeLimitExceeded,),
            )
        finally:
            self._free.put(gpu)

    # --- reporting ------------------------------------------------------------------

    def _register(self) -> None:
        now = utcnow()
        with self.maker() as db, db.begin():
            db.add(
                WorkerRow(
                    id=self.id,
                    hostname=socket.gethostname()[:255],
                    pools=self.pools,
                    slots=self.slots,
                    gpus=gpu_info.telemetry(self.gpu_indices),
                    started_at=now,
                    last_heartbeat=now,
                    draining=False,
                    version=__version__,
                )
            )

    def _beat(self) -> None:
        interval = self.settings.heartbeat_interval_seconds
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except Exception:
                # Postgres may be restarting; the next beat tries again.
                log.warning("heartbeat failed", exc_info=True)

    def heartbeat(self) -> None:
        now = utcnow()
        with self.maker() as db, db.begin():
            db.execute(
                sa.update(WorkerRow)
                .where(WorkerRow.id == self.id)
                .values(last_heartbeat=now, gpus=gpu_info.telemetry(self.gpu_indices))
            )
            db.execute(
                sa.update(Job)
                .where(Job.worker_id == self.id, Job.state == JobState.running)
                .values(heartbeat_at=now)
                .execution_options(synchronize_session=False)
            )
            draining = db.scalar(sa.select(WorkerRow.draining).where(WorkerRow.id == self.id))
        if draining and not self._draining:
            self._pause_consumers()

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


class ActorBody:
    """The actors' body: runs each delivered message on the worker set here. The broker
    is built first, the worker (which needs the broker) after."""

    def __init__(self) -> None:
        self.worker: Worker | None = None

    def __call__(self, kind: JobKind, job_id: int, message_ref: str) -> None:
        if self.worker is None:
            raise RuntimeError("no worker consumes this broker")
        self.worker.run(kind, job_id, message_ref)
