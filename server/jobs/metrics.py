"""Queue, worker and GPU metrics, read from Postgres at scrape time.

The database holds every job and heartbeat, so any API replica reports the same
numbers (aggregate with ``max`` across replicas, not ``sum``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from server.kit.db import is_postgresql, utcnow
from server.models.job import Job, JobState, WorkerRow
from server.settings import Settings

log = logging.getLogger(__name__)

WAIT_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600)
RUN_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 72 * 3600)


def _seconds_between(db: Session, start: Any, end: Any) -> Any:
    if is_postgresql(db):
        return sa.func.extract("epoch", end - start)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


class JobsCollector(Collector):
    def __init__(self, maker: sessionmaker[Session], settings: Settings) -> None:
        self.maker = maker
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            with self.maker() as db:
                yield from self._collect(db)
        except Exception:
            # A scrape during a database outage reports HTTP metrics only.
            log.warning("job metrics unavailable", exc_info=True)

    def _collect(self, db: Session) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("oculab_jobs", "Jobs by pool and state.", labels=["pool", "state"])
        for pool, state, n in db.execute(
            sa.select(Job.pool, Job.state, sa.func.count()).group_by(Job.pool, Job.state)
        ).all():
            jobs.add_metric([pool, str(getattr(state, "value", state))], n)
        yield jobs

        yield self._histogram(
            db,
            "oculab_job_wait_seconds",
            "Time from submission to start, by pool and kind.",
            Job.created_at,
            Job.started_at,
            WAIT_BUCKETS,
        )
        yield self._histogram(
            db,
            "oculab_job_run_seconds",
            "Time from start to finish, by pool and kind.",
            Job.started_at,
            Job.finished_at,
            RUN_BUCKETS,
        )

        now = utcnow()
        oldest = GaugeMetricFamily(
            "oculab_job_oldest_queued_seconds",
            "Age of the oldest job still waiting in each pool (0 when none waits).",
            labels=["pool"],
        )
        waiting_since = dict(
            db.execute(
                sa.select(Job.pool, sa.func.min(Job.created_at))
                .where(Job.state == JobState.queued)
                .group_by(Job.pool)
            ).all()
        )
        for pool in self.settings.pools:
            since = waiting_since.get(pool)
            oldest.add_metric([pool], (now - since).total_seconds() if since else 0.0)
        yield oldest
        cutoff = now - dt.timedelta(seconds=self.settings.heartbeat_timeout_seconds)
        workers = list(db.scalars(sa.select(WorkerRow).where(WorkerRow.stopped_at.is_(None))))
        live = GaugeMetricFamily(
            "oculab_workers", "Live workers serving each pool.", labels=["pool"]
        )
        for pool in self.settings.pools:
            live.add_metric(
                [pool], sum(1 for w in workers if pool in w.pools and w.last_heartbeat >= cutoff)
            )
        yield live
        # A pool label on each, so alerts and dashboards can tell GPU pools apart: a
        # worker's heartbeat once per pool it serves, its GPUs under its GPU pool (a
        # worker serves at most one).
        age = GaugeMetricFamily(
            "oculab_worker_heartbeat_age_seconds",
            "Seconds since each worker's last heartbeat, per pool it serves.",
            labels=["worker", "pool"],
        )
        util = GaugeMetricFamily(
            "oculab_gpu_utilization_ratio",
            "GPU utilisation, 0..1.",
            labels=["worker", "pool", "gpu", "name"],
        )
        memory = GaugeMetricFamily(
            "oculab_gpu_memory_used_bytes",
            "GPU memory in use.",
            labels=["worker", "pool", "gpu", "name"],
        )
        for worker in workers:
            heartbeat_age = (now - worker.last_heartbeat).total_seconds()
            for pool in worker.pools:
                age.add_metric([worker.id, pool], heartbeat_age)
            gpu_pool = next((p for p in worker.pools if self.settings.is_gpu_pool(p)), "")
            for gpu in worker.gpus:
                labels = [worker.id, gpu_pool, str(gpu.get("index")), str(gpu.get("name") or "")]
                if gpu.get("utilization") is not None:
                    util.add_metric(labels, float(gpu["utilization"]))
                if gpu.get("memory_used") is not None:
                    memory.add_metric(labels, float(gpu["memory_used"]))
        yield age
        yield util
        yield memory

    def _histogram(
        self,
        db: Session,
        name: str,
        documentation: str,
        start: Any,
        end: Any,
        buckets: tuple[float, ...],
    ) -> Metric:
        seconds = _seconds_between(db, start, end)
        columns = [sa.func.sum(sa.case((seconds <= b, 1), else_=0)) for b in buckets]
        rows = db.execute(
            sa.select(
                Job.pool,
                Job.kind,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(seconds), 0),
                *columns,
            )
            .where(start.is_not(None), end.is_not(None))
            .group_by(Job.pool, Job.kind)
        ).all()
        family = HistogramMetricFamily(name, documentation, labels=["pool", "kind"])
        for pool, kind, count, total, *counts in rows:
            family.add_metric(
                [pool, kind],
                [(str(float(b)), float(c or 0)) for b, c in zip(buckets, counts, strict=True)]
                + [("+Inf", float(count))],
                sum_value=float(total or 0),
            )
        return family
