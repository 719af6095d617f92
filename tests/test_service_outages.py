"""Outages of the infrastructure around the jobs: a worker killed while it holds
messages, workers sharing one host or a burst, PostgreSQL stopped or stuck under the API
and under an import, Redis gone from under the API.

Real processes (`oculab scheduler`, `oculab worker`), real PostgreSQL and Redis. Redis
db 12 is this module's own; PostgreSQL is only ever stopped in a throwaway cluster.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import httpx2
import psycopg
import pytest
import redis
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server import migrate
from server.jobs import service as jobs_service
from server.models.image import Image
from server.models.job import JobState, WorkerRow
from server.settings import Mode
from tests import pgcluster
from tests.factories import Factory, make_zip, png_bytes, post_zip
from tests.helpers import BACKEND, free_port, redis_db_url, wait_job, wait_until
from tests.processes import Cluster

REDIS_URL = redis_db_url(0)
T = TypeVar("T")

server_mode = pytest.mark.skipif(BACKEND != "postgres", reason="server mode: PostgreSQL and Redis")


def _despite_outage(check: Callable[[], T]) -> Callable[[], T | None]:
    """``check``, reading None while our own probe hits a database that is down."""

    def probe() -> T | None:
        try:
            return check()
        except sa.exc.OperationalError:
            return None

    return probe


@pytest.fixture
def redis12() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def cluster_factory(
    fresh_database_url: str, tmp_path: Path, redis12: redis.Redis
) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(database_url: str | None = None, **settings: str) -> Cluster:
        url = database_url or fresh_database_url
        if database_url is None and not made:
            migrate.upgrade(url)
        data = tmp_path / f"cluster{len(made)}"
        data.mkdir()
        cluster = Cluster(url, data, redis_url=REDIS_URL, **settings)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


def _spawn_worker(c: Cluster, *args: str) -> subprocess.Popen[bytes]:
    proc = c._spawn("worker", *args)
    c.workers.append(proc)
    return proc


def _holder(client: redis.Redis, message_id: str) -> str | None:
    """The Dramatiq consumer whose unacked set holds this message, if any."""
    prefix = "dramatiq:__acks__."
    for key in client.scan_iter(match=f"{prefix}*.cpu"):
        if client.sismember(key, message_id):
            consumer: str = key.decode()  # redis-py types its replies as Any
            return consumer[len(prefix) : -len(".cpu")]
    return None


# --- item 4: messages held by a dead worker, prefetch ------------------------------------


@server_mode
@pytest.mark.slow
def test_a_message_held_by_a_killed_worker_runs_elsewhere_within_the_heartbeat_timeout(
    cluster_factory: Callable[..., Cluster], redis12: redis.Redis
) -> None:
    c = cluster_factory(heartbeat_timeout_seconds="3")
    c.start_scheduler()
    first = c.start_worker()
    c.wait_for_workers(1)
    user = c.user("u")
    long_job = c.submit("test.sleep_count", user, seconds=2)
    c.wait([long_job], (JobState.running,))
    # Admitted ahead of the free slot (CPU pools admit one ahead); its message waits.
    held = c.submit("test.sleep_count", user, seconds=0.1)
    ref = wait_until(
        _despite_outage(lambda: c.job(held).broker_message_id), 30, lambda: "admitted\n" + c.logs()
    )
    # Hold the job's row so the worker that fetches the message cannot claim it: the
    # state of a worker dying between fetch and claim, or with a message prefetched.
    lock = psycopg.connect(c.engine.url.set(drivername="postgresql").render_as_string(False))
    lock.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (held,))
    try:
        wait_until(lambda: _holder(redis12, ref), 30, lambda: "fetched\n" + c.logs())
        c.start_worker()
        c.wait_for_workers(2)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
    finally:
        lock.rollback()
        lock.close()
    done = c.wait([held], timeout=c.settings.heartbeat_timeout_seconds + 15)[0]
    recovered = time.monotonic() - killed_at
    print(f"message held by the killed worker ran elsewhere {recovered:.1f} s after SIGKILL")
    assert done.state == JobState.succeeded, c.logs()
    assert done.worker_id is not None
    assert str(first.pid) not in done.worker_id
    assert done.attempts == 1  # the dead worker never claimed it
    with c.maker() as db:
        lines = db.scalars(
            sa.text(
                "SELECT data->>'line' FROM job_events WHERE job_id = :id AND kind = 'log'"
            ).bindparams(id=held)
        ).all()
    assert any("died holding its message" in (line or "") for line in lines), lines


@server_mode
@pytest.mark.slow
def test_an_idle_worker_takes_the_next_job_instead_of_it_waiting_behind_a_long_one(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory()
    c.start_scheduler()
    busy = c.start_worker()
    c.wait_for_workers(1)
    user = c.user("u")
    long_job = c.submit("test.sleep_count", user, seconds=5)
    c.wait([long_job], (JobState.running,))
    short = c.submit("test.sleep_count", user, seconds=0.1)
    wait_until(
        _despite_outage(lambda: c.job(short).broker_message_id),
        30,
        lambda: "admitted\n" + c.logs(),
    )
    idle = c.start_worker()
    c.wait_for_workers(2)
    done = {j.id: j for j in c.wait([long_job, short], timeout=60)}
    assert all(j.state == JobState.succeeded for j in done.values()), c.logs()
    long_done, short_done = done[long_job], done[short]
    assert long_done.worker_id is not None
    assert str(busy.pid) in long_done.worker_id
    # The short job did not wait in the busy worker's prefetch: the idle one ran it.
    assert short_done.worker_id is not None
    assert str(idle.pid) in short_done.worker_id, c.logs()
    assert short_done.finished_at is not None
    assert long_done.finished_at is not None
    assert short_done.finished_at < long_done.finished_at


# --- item 8: slots of several pools, metrics ports ---------------------------------------


@server_mode
@pytest.mark.slow
def test_a_worker_serving_two_pools_runs_a_job_of_each_at_once(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory()
    c.start_scheduler()
    _spawn_worker(c, "--pool", "gpu", "--pool", "cpu", "--slots", "1", "--metrics-port", "0")
    c.wait_for_workers(1)
    user = c.user("u")
    on_gpu = c.submit("test.sleep_count", user, pool="gpu", seconds=3)
    on_cpu = c.submit("test.sleep_count", user, pool="cpu", seconds=3)
    # One slot in each pool it offers: both run together, not one after the other.
    c.wait([on_gpu, on_cpu], (JobState.running,), timeout=20)
    done = c.wait([on_gpu, on_cpu], timeout=30)
    assert [j.state for j in done] == [JobState.succeeded] * 2, c.logs()
    assert done[0].worker_id == done[1].worker_id


def _metrics_port(log: str) -> int | None:
    found = re.search(r"serving worker metrics on port (\d+)", log)
    return int(found.group(1)) if found else None


def _logged_metrics_port(log: Path) -> int | None:
    return _metrics_port(log.read_text(errors="replace"))


@server_mode
@pytest.mark.slow
def test_a_second_worker_on_a_host_serves_metrics_on_a_port_of_its_own(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory()
    c.start_scheduler()
    # No --metrics-port: both want the default port.
    first = _spawn_worker(c, "--pool", "cpu")
    c.wait_for_workers(1)
    second = _spawn_worker(c, "--pool", "cpu")
    c.wait_for_workers(2)
    logs = {
        proc.pid: (c.data_dir / f"worker-{index}.log") for index, proc in ((1, first), (2, second))
    }
    ports = [
        wait_until(
            partial(_logged_metrics_port, path),
            20,
            lambda: "metrics port logged\n" + c.logs(),
        )
        for path in logs.values()
    ]
    assert ports[0] != ports[1], c.logs()
    for port in ports:
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    assert first.poll() is None
    assert second.poll() is None
    # A port given explicitly is a promise (a scrape config, a probe): taken, the
    # worker stops before it registers or takes a job, and says why.
    third = _spawn_worker(c, "--pool", "cpu", "--metrics-port", str(ports[0]))
    assert third.wait(timeout=30) != 0
    assert f"metrics port {ports[0]} is already in use" in c.logs()
    with c.maker() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(WorkerRow)) == 2


# --- item 9: Redis down under the API ----------------------------------------------------


@pytest.mark.slow
def test_api_stays_ready_and_accepts_jobs_while_redis_is_down(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(mode=Mode.server, redis_url=nothing_listens)
    factory = factory_for(app)
    factory.user("alice", password="correct horse battery")
    with TestClient(app) as client:
        ready = client.get("/api/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ok"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["broker"].startswith("unavailable")
        assert "oculab_broker_up 0.0" in client.get("/metrics").text
        # Login (its rate limits live in Redis) and job submission need no broker: the
        # job is a row, sent by the scheduler once Redis answers again.
        login = client.post(
            "/api/auth/local/login",
            json={"username": "alice", "password": "correct horse battery"},
        )
        assert login.status_code == 200, login.text
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        project = client.post("/api/projects", json={"name": "p", "classes": ["a"]}).json()
        export = client.post(f"/api/projects/{project['id']}/exports", json={"format": "yolo"})
        assert export.status_code == 202, export.text
        assert export.json()["state"] == "queued"


# --- item 7: the database down or stuck under the API ------------------------------------


def _checkpoint(url: str) -> None:
    # The throwaway cluster commits asynchronously and an immediate stop is a crash:
    # make what the test arranged durable first.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _assert_unavailable(response: httpx2.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert "database" in response.json()["detail"]


@server_mode
@pytest.mark.slow
def test_database_outage_answers_503_with_retry_after_and_recovers(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    reason = pgcluster.available()
    if reason:
        pytest.skip(reason)
    with pgcluster.throwaway_postgres() as pg:
        app = make_app(database_url=pg.url)
        factory = factory_for(app)
        factory.user("bob", password="correct horse battery")
        alice = factory.client(factory.user("alice"))
        project = alice.project()
        image = alice.image(project["id"])
        _checkpoint(pg.url)
        with TestClient(app) as client:
            pg.stop()
            try:
                for response in (
                    alice.get("/api/projects"),
                    alice.get(f"/api/images/{image['image_id']}"),
                    client.post(
                        "/api/auth/local/login",
                        json={"username": "bob", "password": "correct horse battery"},
                    ),
                ):
                    _assert_unavailable(response)
                ready = client.get("/api/ready")
                assert ready.status_code == 503
                assert "Retry-After" in ready.headers
            finally:
                pg.start()
            started = time.monotonic()
            wait_until(
                lambda: alice.get("/api/projects").status_code == 200,
                30,
                "the API did not recover",
                0.1,
            )
            print(f"API answered 200 again {time.monotonic() - started:.2f} s after PG started")
            assert alice.get(f"/api/images/{image['image_id']}").status_code == 200
            login = client.post(
                "/api/auth/local/login",
                json={"username": "bob", "password": "correct horse battery"},
            )
            assert login.status_code == 200


@server_mode
@pytest.mark.slow
def test_a_request_stuck_behind_a_lock_answers_503_instead_of_hanging(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory], database_url: str
) -> None:
    app = make_app(database_statement_timeout_seconds=1)
    factory = factory_for(app)
    alice = factory.client(factory.user("alice"))
    alice.project()
    answers: list[httpx2.Response] = []
    with psycopg.connect(database_url) as blocker:
        # Whatever holds the table (a migration, a runaway transaction), a request gives
        # up after the statement timeout instead of tying up a worker thread.
        blocker.execute("LOCK TABLE projects IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=lambda: answers.append(alice.get("/api/projects")))
        thread.start()
        thread.join(timeout=30)
        blocker.rollback()
    thread.join()
    assert answers, "the request hung"
    _assert_unavailable(answers[0])


# --- item 6: an import across a database restart -----------------------------------------


@server_mode
@pytest.mark.slow
def test_an_import_survives_a_database_restart_and_keeps_its_zip_until_it_ends(
    cluster_factory: Callable[..., Cluster],
    make_app: Callable[..., FastAPI],
    factory_for: Callable[[FastAPI], Factory],
) -> None:
    reason = pgcluster.available()
    if reason:
        pytest.skip(reason)
    count = 1500
    data = make_zip({f"images/{i}.png": png_bytes(i, (96, 96)) for i in range(count)})
    with pgcluster.throwaway_postgres() as pg:
        c = cluster_factory(pg.url, heartbeat_timeout_seconds="10")
        app = make_app(
            mode=Mode.server, database_url=pg.url, data_dir=c.data_dir, redis_url=REDIS_URL
        )
        factory = factory_for(app)
        owner = factory.client(factory.user("owner"))
        project = owner.project()
        c.start_scheduler()
        c.start_worker()
        c.wait_for_workers(1)
        accepted = post_zip(owner, project["id"], data)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        (zip_path,) = (c.data_dir / "imports").glob("*.zip")
        # Stop PostgreSQL once the first batch is in, mid-import.
        wait_until(
            _despite_outage(lambda: c.job(job_id).progress > 0),
            60,
            lambda: "first batch imported\n" + c.logs(),
        )
        assert c.job(job_id).state == JobState.running
        _checkpoint(pg.url)
        pg.stop()
        time.sleep(2)
        assert zip_path.exists()
        pg.start()
        # The interrupted attempt is released (it counts), and the next one finds the
        # zip: without it, it would fail with "the uploaded zip is gone".
        done = c.wait([job_id], timeout=120)[0]
        assert done.state == JobState.succeeded, (done.error, c.logs())
        assert done.attempts == 2
        assert not zip_path.exists()
        with c.maker() as db:
            images = db.scalar(
                sa.select(sa.func.count())
                .select_from(Image)
                .where(Image.project_id == project["id"])
            )
        assert images == count


@pytest.mark.slow
def test_the_zip_of_an_import_that_ended_elsewhere_is_swept_by_the_next_import(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(run_jobs=True)
    factory = factory_for(app)
    with TestClient(app):
        owner = factory.client(factory.user("owner"))
        project = owner.project()
        # An import the reconciler failed for good (its worker lost, or the database
        # away, on its last attempt): no attempt of it is left to delete the zip.
        folder = app.state.storage.root / "imports"
        folder.mkdir(parents=True, exist_ok=True)
        ended = folder / f"{'a' * 32}.zip"
        ended.write_bytes(b"zip of a job that failed for good")
        with factory.sessionmaker() as db, db.begin():
            job = jobs_service.submit(
                db,
                app.state.settings,
                app.state.kinds,
                kind="datasets.import",
                user=None,
                project_id=project["id"],
                params={"path": f"imports/{ended.name}", "filename": "x.zip"},
            )
            job.state = JobState.failed
        accepted = post_zip(owner, project["id"], make_zip({"images/a.png": png_bytes(1)}))
        assert accepted.status_code == 202, accepted.text
        assert wait_job(owner, accepted.json()["id"])["state"] == "succeeded"
        # Young, but its job has ended: it does not wait out the hour for strangers.
        assert not ended.exists()
        assert list(folder.iterdir()) == []


def test_a_worker_refuses_two_gpu_pools_before_touching_anything(tmp_path: Path) -> None:
    # Its GPUs are the slots of one GPU pool; a second would put two jobs on each GPU.
    env = {
        "OCULAB_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "OCULAB_SECRET_KEY": "outage-tests-" + "k" * 32,
        "OCULAB_POOLS": "a100,v100,cpu",
        "OCULAB_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "worker", "--pool", "a100", "--pool", "v100"],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "serves at most one GPU pool" in result.stderr
