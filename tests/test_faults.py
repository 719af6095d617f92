"""Faults with real processes: `oculab scheduler` and `oculab worker` on PostgreSQL and
Redis. Workers are SIGKILLed, Redis is flushed, PostgreSQL is restarted."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from server import migrate
from server.jobs import service as jobs
from server.models.auth import User
from server.models.job import Job, JobEvent, JobState
from tests import pgcluster
from tests.helpers import BACKEND, free_port, wait_until
from tests.jobkinds import completions
from tests.processes import CLUSTER_REDIS_URL, FINISHED, Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BACKEND != "postgres", reason="server mode: PostgreSQL and Redis"),
]

REDIS_URL = CLUSTER_REDIS_URL


@pytest.fixture
def cluster_factory(fresh_database_url: str, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    migrate.upgrade(fresh_database_url)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    made: list[Cluster] = []

    def make(**settings: str) -> Cluster:
        data = tmp_path / f"cluster{len(made)}"
        data.mkdir()
        cluster = Cluster(fresh_database_url, data, **settings)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
    client.flushdb()
    client.close()


def _pid(worker_id: str) -> int:
    return int(worker_id.rsplit("-", 2)[-2])


def test_sigkilled_worker_job_finishes_elsewhere_once(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory()
    c.start_scheduler()
    c.start_worker()
    c.start_worker()
    c.wait_for_workers(2)
    job_id = c.submit("test.sleep_count", seconds=4)
    running = c.wait([job_id], (JobState.running,), timeout=30)[0]
    victim = running.worker_id
    assert victim is not None
    os.kill(_pid(victim), signal.SIGKILL)
    done = c.wait([job_id], timeout=60)[0]
    assert done.state == JobState.succeeded, c.logs()
    assert done.attempts == 2
    assert done.worker_id != victim
    assert completions(c.data_dir).count(job_id) == 1
    from server.models.job import WorkerRow

    with c.maker() as db:
        dead = db.get(WorkerRow, victim)
        assert dead is not None
        assert dead.stopped_at is not None  # the reconciler retired the silent worker


def test_flushing_redis_loses_no_job_and_runs_none_twice(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(cpu_jobs_per_user="50")
    c.start_scheduler()
    workers = [c.start_worker(slots=2), c.start_worker(slots=2)]
    c.wait_for_workers(2)
    broker = redis.Redis.from_url(REDIS_URL)
    # Freeze the workers so admitted messages are certainly waiting in Redis.
    for proc in workers:
        proc.send_signal(signal.SIGSTOP)
    user = c.user("busy")
    ids = [c.submit("test.sleep_count", user, seconds=0.2) for _ in range(50)]
    wait_until(lambda: broker.hlen("dramatiq:cpu.msgs"), 30, c.logs)
    broker.flushall()
    for proc in workers:
        proc.send_signal(signal.SIGCONT)
    # And once more while jobs are running and their messages are in flight.
    wait_until(lambda: len(completions(c.data_dir)) >= 10, 60, c.logs)
    broker.flushall()
    done = c.wait(ids, timeout=120)
    assert [j.state for j in done] == [JobState.succeeded] * 50, c.logs()
    counts = Counter(completions(c.data_dir))
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1  # nothing ran to completion twice
    with c.maker() as db:
        resent = db.scalar(
            sa.select(sa.func.count(sa.distinct(JobEvent.job_id))).where(
                JobEvent.kind == "log", JobEvent.data["line"].as_string().like("%lost its message%")
            )
        )
    # The messages the flush destroyed were noticed and sent again.
    assert resent, c.logs()


def test_postgres_restart_makes_ready_503_then_recovers(make_app: Callable[..., Any]) -> None:
    reason = pgcluster.available()
    if reason:
        pytest.skip(reason)
    stop_errors: list[str] = []
    with pgcluster.throwaway_postgres() as pg, TestClient(make_app(database_url=pg.url)) as client:
        assert client.get("/api/ready").status_code == 200
        # Requests keep flowing while the database goes away and comes back.
        results: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:
                    results.append(client.get("/api/ready").status_code)
                except Exception as exc:
                    stop_errors.append(repr(exc))
                time.sleep(0.05)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            pg.stop()
            time.sleep(1)
            down = client.get("/api/ready")
            assert down.status_code == 503
            assert down.json()["checks"]["database"].startswith("unavailable")
        finally:
            pg.start()
        wait_until(
            lambda: client.get("/api/ready").status_code == 200, 30, "the API did not recover", 0.2
        )
        stop.set()
        thread.join()
        assert 503 in results
        assert results[-1] == 200
        assert set(results) <= {200, 503}
        # Ordinary endpoints work again on the same process and pool.
        assert client.get("/api/auth/config").status_code == 200
    assert stop_errors == []


def test_a_job_that_always_crashes_fails_after_max_attempts(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(job_max_attempts="3")
    c.start_scheduler()
    c.start_worker()
    c.wait_for_workers(1)
    job_id = c.submit("test.crash")
    # Like Kubernetes: restart workers that die.
    restarts = 0

    def ended() -> bool:
        nonlocal restarts
        if c.job(job_id).state in FINISHED:
            return True
        restarts += c.restart_dead_workers()
        return False

    wait_until(ended, 90, c.logs, 0.2)
    job = c.job(job_id)
    assert job.state == JobState.failed
    assert job.attempts == 3
    assert "stopped responding" in (job.error or "")
    assert restarts >= 3


def test_fair_share_and_per_user_limits_hold(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(cpu_jobs_per_user="1")
    c.start_scheduler()
    worker = c.start_worker(slots=2)
    c.wait_for_workers(1)
    first, second, third = c.user("first"), c.user("second"), c.user("third")
    # Everyone has submitted before the first job finishes, however slow this machine.
    worker.send_signal(signal.SIGSTOP)
    ids = [c.submit("test.sleep_count", first, seconds=0.3) for _ in range(10)]
    ids += [c.submit("test.sleep_count", second, seconds=0.3) for _ in range(10)]
    lonely = c.submit("test.sleep_count", third, seconds=0.3)
    ids.append(lonely)
    worker.send_signal(signal.SIGCONT)
    done = c.wait(ids, timeout=120)
    assert all(j.state == JobState.succeeded for j in done), c.logs()
    by_start = sorted(done, key=lambda j: j.started_at or j.created_at)
    # The third user's single job is among the first three to start: right after the
    # first user's and the second user's first jobs, not behind nineteen others.
    assert lonely in [j.id for j in by_start[:3]]
    for user in (first, second, third):
        spans = sorted((j.started_at, j.finished_at) for j in done if j.created_by == user)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start is not None
            assert end is not None
            assert start >= end, "a user ran two jobs at once past the limit of 1"


def test_cancel_queued_and_running_with_real_workers(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory()
    c.start_scheduler()
    c.start_worker()
    c.wait_for_workers(1)
    user = c.user("u")
    waiting = c.submit("test.sleep_count", user, pool="gpu")  # no gpu worker: waits
    running = c.submit("test.sleep_count", user, seconds=30)
    c.wait([running], (JobState.running,))
    with c.maker() as db, db.begin():
        db_user = db.get(User, user)
        assert db_user is not None
        for job_id in (waiting, running):
            job = db.get(Job, job_id)
            assert job is not None
            jobs.cancel(db, job, db_user, ip=None)
    done = c.wait([waiting, running], timeout=15)
    assert [j.state for j in done] == [JobState.canceled, JobState.canceled]
    assert done[0].started_at is None
    assert completions(c.data_dir) == []
    # The worker is free for the next job.
    after = c.submit("test.sleep_count", user, seconds=0.1)
    assert c.wait([after])[0].state == JobState.succeeded


def test_sigterm_hands_the_running_job_back(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory()
    c.start_scheduler()
    first = c.start_worker()
    c.wait_for_workers(1)
    job_id = c.submit("test.sleep_count", seconds=5)
    c.wait([job_id], (JobState.running,))
    c.start_worker()
    c.wait_for_workers(2)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, c.logs()
    done = c.wait([job_id], timeout=60)[0]
    assert done.state == JobState.succeeded, c.logs()
    # A graceful hand-back does not use up an attempt.
    assert done.attempts == 1
    assert completions(c.data_dir).count(job_id) == 1


def test_workers_export_dramatiq_metrics(cluster_factory: Callable[..., Cluster]) -> None:
    import httpx

    port = free_port()
    c = cluster_factory()
    c.start_scheduler()
    c.start_worker(metrics_port=port)
    c.wait_for_workers(1)
    job_id = c.submit("test.sleep_count", seconds=0.05)
    assert c.wait([job_id])[0].state == JobState.succeeded

    def exported() -> bool:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/").text
        except httpx.HTTPError:
            return False
        return 'dramatiq_messages_total{actor_name="test.sleep_count"' in text

    wait_until(exported, 10, c.logs, 0.2)
