"""Job queue benchmark: Oculab jobs through Redis versus a plain Dramatiq actor.

Run from the repository root::

    .venv/bin/python bench/job_queue.py [--latency-jobs 100 --throughput-jobs 1000]

Measures, on a scratch PostgreSQL database and Redis db 13, with real ``oculab
scheduler`` and ``oculab worker`` processes:

- enqueue -> start latency of no-op jobs, one at a time, with one idle worker slot
  (submission commit to the worker's claim, both stamped by the database clock's host);
- throughput of 1,000 no-op jobs with 4 worker threads;

and the same two figures for a plain Dramatiq actor (``bench/queue_baseline.py``) run
by the ``dramatiq`` CLI with 1 and 4 threads. Prints ratios and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from common import (
    BENCH,
    DEFAULT_PG_ADMIN_URL,
    OCULAB,
    oculab_env,
    percentile,
    progress,
    rounded,
    scratch_database,
    scratch_dir,
    stop,
)
from queue_baseline import RESULTS, noop

from server import migrate
from server.jobs import service as jobs
from server.jobs.kinds import load_kinds
from server.kit.db import make_engine, make_sessionmaker
from server.models.job import Job, JobState, WorkerRow
from server.settings import Mode, Settings

FINISHED = (JobState.succeeded, JobState.failed, JobState.canceled)
REDIS_URL = "redis://127.0.0.1:6379/13"
DRAMATIQ = str(Path(sys.executable).with_name("dramatiq"))


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        # Signal all first, so they shut down side by side.
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            stop(proc, timeout=30)


class Oculab:
    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.env = oculab_env(
            database_url=database_url,
            redis_url=REDIS_URL,
            data_dir=str(data_dir),
            secret_key="bench-" + uuid.uuid4().hex * 2,
            cpu_jobs_per_user="10000",
        )
        self.settings = Settings(
            mode=Mode.server,
            database_url=database_url,
            redis_url=REDIS_URL,
            data_dir=data_dir,
            secret_key=self.env["OCULAB_SECRET_KEY"],
            cpu_jobs_per_user=10000,
        )
        self.engine = make_engine(database_url, pool_size=4)
        self.maker = make_sessionmaker(self.engine)
        self.kinds = load_kinds(self.settings)

    def spawn(self, *args: str, log_path: Path) -> subprocess.Popen[bytes]:
        out = open(log_path, "wb")  # noqa: SIM115 - owned by the child process
        return subprocess.Popen([OCULAB, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def wait_workers(self, n: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.maker() as db:
                live = db.scalar(
                    sa.select(sa.func.count())
                    .select_from(WorkerRow)
                    .where(WorkerRow.stopped_at.is_(None))
                )
            if (live or 0) >= n:
                return
            time.sleep(0.1)
        raise RuntimeError("workers did not register")

    def submit(self, n: int) -> list[int]:
        with self.maker() as db, db.begin():
            return [
                jobs.submit(
                    db,
                    self.settings,
                    self.kinds,
                    kind="diagnostics.noop",
                    user=None,
                    project_id=None,
                    params={},
                    pool="cpu",
                ).id
                for _ in range(n)
            ]

    def wait_done(self, ids: list[int], timeout: float = 600) -> list[Job]:
        # A cheap COUNT poll: the bench must not steal the CPU it is measuring.
        deadline = time.monotonic() + timeout
        lo, hi = min(ids), max(ids)
        pause = 0.002 if len(ids) == 1 else 0.05
        while time.monotonic() < deadline:
            with self.maker() as db:
                finished = db.execute(
                    sa.select(Job.state, sa.func.count())
                    .where(Job.id.between(lo, hi), Job.state.in_(FINISHED))
                    .group_by(Job.state)
                ).all()
            done = dict(finished)
            if set(done) - {JobState.succeeded}:
                raise RuntimeError("a benchmark job did not succeed")
            if done.get(JobState.succeeded, 0) == len(ids):
                with self.maker() as db:
                    return list(db.scalars(sa.select(Job).where(Job.id.between(lo, hi))))
            time.sleep(pause)
        raise RuntimeError("benchmark jobs did not finish in time")


def oculab_figures(args: argparse.Namespace, work: Path) -> dict[str, float]:
    with (
        scratch_database(DEFAULT_PG_ADMIN_URL, "oculab_bench_queue_") as url,
        processes() as procs,
    ):
        migrate.upgrade(url)
        app = Oculab(url, work)
        procs.append(app.spawn("scheduler", log_path=work / "scheduler.log"))
        procs.append(
            app.spawn(
                "worker",
                "--pool",
                "cpu",
                "--slots",
                "1",
                "--metrics-port",
                "0",
                log_path=work / "worker1.log",
            )
        )
        app.wait_workers(1)
        app.wait_done(app.submit(5))  # warm up connections and code paths
        progress(f"oculab: enqueue->start latency, {args.latency_jobs} sequential no-op jobs")
        latencies: list[float] = []
        admission: list[float] = []
        for _ in range(args.latency_jobs):
            time.sleep(0.05)  # the worker is idle when the job arrives
            (job,) = app.wait_done(app.submit(1))
            assert job.started_at is not None
            assert job.admitted_at is not None
            latencies.append((job.started_at - job.created_at).total_seconds())
            admission.append((job.admitted_at - job.created_at).total_seconds())
        procs[1].send_signal(signal.SIGTERM)
        procs[1].wait(timeout=30)
        procs.append(
            app.spawn(
                "worker",
                "--pool",
                "cpu",
                "--slots",
                "4",
                "--metrics-port",
                "0",
                log_path=work / "worker4.log",
            )
        )
        app.wait_workers(1)
        progress(f"oculab: throughput of {args.throughput_jobs} no-op jobs, 4 worker threads")
        start = time.monotonic()
        rows = app.wait_done(app.submit(args.throughput_jobs))
        wall = time.monotonic() - start
        first = min(r.created_at for r in rows)
        last = max(r.finished_at for r in rows if r.finished_at)
        app.engine.dispose()
    return {
        "oculab_latency_p50_ms": statistics.median(latencies) * 1000,
        "oculab_latency_p95_ms": percentile(latencies, 95) * 1000,
        # Of which: submission to admission by the scheduler.
        "oculab_admission_p50_ms": statistics.median(admission) * 1000,
        "oculab_jobs_per_s": args.throughput_jobs / wall,
        "oculab_jobs_per_s_db_clock": args.throughput_jobs / (last - first).total_seconds(),
    }


def baseline_figures(args: argparse.Namespace, work: Path) -> dict[str, float]:
    client = redis.Redis.from_url(REDIS_URL)
    # The worker imports the actor as the bench does: ``queue_baseline`` from bench/.
    env = {**oculab_env(), "BENCH_REDIS_URL": REDIS_URL, "PYTHONPATH": str(BENCH)}

    def run_dramatiq(threads: int) -> subprocess.Popen[bytes]:
        out = open(work / f"dramatiq{threads}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(
            [
                DRAMATIQ,
                "queue_baseline",
                "--processes",
                "1",
                "--threads",
                str(threads),
                "--queues",
                "bench",
            ],
            env=env,
            cwd=BENCH,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def wait_results(n: int) -> list[tuple[float, float]]:
        deadline = time.monotonic() + 600
        while client.llen(RESULTS) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("baseline messages did not run")
            time.sleep(0.005)
        pairs = [tuple(map(float, raw.split())) for raw in client.lrange(RESULTS, 0, -1)]
        return [(a, b) for a, b in pairs]

    client.flushdb()
    with processes() as procs:
        procs.append(run_dramatiq(1))
        time.sleep(3)
        for _ in range(5):
            noop.send(time.time())
        wait_results(5)
        client.delete(RESULTS)
        progress(f"dramatiq: send->run latency, {args.latency_jobs} sequential messages")
        latencies: list[float] = []
        for i in range(args.latency_jobs):
            time.sleep(0.05)
            noop.send(time.time())
            sent, started = wait_results(i + 1)[-1]
            latencies.append(started - sent)
    client.flushdb()
    with processes() as procs:
        procs.append(run_dramatiq(4))
        time.sleep(3)
        progress(f"dramatiq: throughput of {args.throughput_jobs} messages, 4 threads")
        start = time.monotonic()
        for _ in range(args.throughput_jobs):
            noop.send(time.time())
        wait_results(args.throughput_jobs)
        wall = time.monotonic() - start
    client.flushdb()
    return {
        "dramatiq_latency_p50_ms": statistics.median(latencies) * 1000,
        "dramatiq_latency_p95_ms": percentile(latencies, 95) * 1000,
        "dramatiq_jobs_per_s": args.throughput_jobs / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument("--throughput-jobs", type=int, default=1000)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    with scratch_dir("oculab-bench-queue-") as work:
        try:
            redis.Redis.from_url(REDIS_URL).flushdb()
            figures.update(baseline_figures(args, work))
            figures.update(oculab_figures(args, work))
        finally:
            redis.Redis.from_url(REDIS_URL).flushdb()
    figures["latency_p50_ratio"] = (
        figures["oculab_latency_p50_ms"] / figures["dramatiq_latency_p50_ms"]
    )
    figures["latency_p95_ratio"] = (
        figures["oculab_latency_p95_ms"] / figures["dramatiq_latency_p95_ms"]
    )
    figures["throughput_ratio"] = figures["oculab_jobs_per_s"] / figures["dramatiq_jobs_per_s"]
    print("Job queue: Oculab (Postgres rows + scheduler + Dramatiq) vs plain Dramatiq")
    print(
        f"  enqueue->start p50  oculab {figures['oculab_latency_p50_ms']:8.1f} ms   "
        f"dramatiq {figures['dramatiq_latency_p50_ms']:8.1f} ms   "
        f"ratio {figures['latency_p50_ratio']:.2f}"
    )
    print(
        f"  enqueue->start p95  oculab {figures['oculab_latency_p95_ms']:8.1f} ms   "
        f"dramatiq {figures['dramatiq_latency_p95_ms']:8.1f} ms   "
        f"ratio {figures['latency_p95_ratio']:.2f}"
    )
    print(
        f"  throughput (4 thr)  oculab {figures['oculab_jobs_per_s']:8.1f} /s    "
        f"dramatiq {figures['dramatiq_jobs_per_s']:8.1f} /s    "
        f"ratio {figures['throughput_ratio']:.2f}"
    )
    print(json.dumps(rounded(figures)))


if __name__ == "__main__":
    main()
