"""Standalone mode's job machinery: the stub broker, one in-process worker per pool, and
the scheduler on a thread. The same actors, runtime and scheduler as server mode; built
by ``workers.machinery``."""

from __future__ import annotations

import logging
import threading

import dramatiq
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from server.jobs.events import Waker
from server.jobs.kinds import JobKind
from server.jobs.scheduler import Scheduler, release_job
from server.kit.db import utcnow
from server.kit.storage import Storage
from server.models.job import Job, JobState, WorkerRow
from server.settings import Settings
from workers import inference
from workers.broker import get_broker, send_admission
from workers.runner import LateBoundWorker, Worker

log = logging.getLogger(__name__)


class InProcessJobs:
    def __init__(
        self,
        settings: Settings,
        maker: sessionmaker[Session],
        storage: Storage,
        kinds: dict[str, JobKind],
        waker: Waker,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.workers: dict[str, Worker] = {}
        # One stub broker per pool, each consumed by that pool's worker threads.
        self.brokers: dict[str, dramatiq.Broker] = {}
        for pool in settings.pools:
            gpu = settings.is_gpu_pool(pool)
            slots = settings.standalone_gpu_slots if gpu else settings.standalone_cpu_slots
            if slots == 0:
                continue
            body = LateBoundWorker()
            broker = get_broker(settings, kinds, stub=True, body=body)
            # GPU pools find the machine's GPUs (one job each); an in-memory queue is
            # cheap to poll, so stopping waits one short poll at most.
            worker = Worker(
                settings,
                broker,
                self.maker,
                storage,
                [pool],
                slots=slots,
                gpu_indices=None if gpu else [],
                poll_ms=200,
            )
            body.worker = worker
            self.workers[pool] = worker
            self.brokers[pool] = broker

        self.scheduler = Scheduler(
            settings,
            self.maker,
            kinds,
            send_admission(self.brokers.__getitem__),
            locate_messages=None,
        )
        waker.target = self.scheduler.wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        recover_after_restart(self.maker, self.settings)
        for pool, worker in self.workers.items():
            self.brokers[pool].emit_after("process_boot")
            worker.start()
        self._thread = threading.Thread(
            target=self.scheduler.run_forever, args=(self._stop,), name="scheduler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.scheduler.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for pool, worker in self.workers.items():
            worker.stop(timeout_seconds=10)
            self.brokers[pool].close()
        # The workers' inference processes go with them, not after their idle timeout.
        inference.CHILDREN.stop_all()


def recover_after_restart(maker: sessionmaker[Session], settings: Settings) -> None:
    """Everything in flight lived in this process's memory and died with it: mark the
    old in-process workers stopped and let the jobs they held queue again (the attempt
    counts; canceled if a cancel was asked). Done here, not left to the reconciler, which
    judges heartbeats only after watching them for a full timeout."""
    now = utcnow()
    with maker() as db, db.begin():
        db.execute(
            sa.update(WorkerRow)
            .where(WorkerRow.stopped_at.is_(None))
            .values(stopped_at=now, draining=True)
        )
        for job in db.scalars(
            sa.select(Job).where(Job.state == JobState.running).with_for_update()
        ).all():
            release_job(
                db,
                job,
                now,
                "the process running it stopped",
                queued_reason="the process running it stopped",
            )
        db.execute(
            sa.update(Job)
            .where(Job.state == JobState.queued, Job.admitted_at.is_not(None))
            .values(admitted_at=None, message_ref=None, broker_message_id=None)
            .execution_options(synchronize_session=False)
        )
