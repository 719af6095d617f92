"""Running Oculab on a real cluster: probes, exit modes for autoscaled workers, metrics
off the public port, migrations that wait and serialise, secrets and CAs. Real
processes (`oculab scheduler|worker|api|migrate`), the real database and Redis."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from server import migrate
from server.auth.oidc import OidcClient
from server.jobs import service as jobs
from server.jobs.kinds import load_kinds
from server.kit.db import make_engine, make_sessionmaker, utcnow
from server.kit.errors import BadGateway
from server.kit.probe import Freshness
from server.models.auth import User
from server.models.job import Job, JobEvent, JobState, WorkerRow
from server.settings import Settings
from tests import pgcluster
from tests.factories import Factory
from tests.helpers import (
    BACKEND,
    create_database,
    drop_database,
    free_port,
    redis_db_url,
    wait_until,
)
from tests.jobkinds import completions
from tests.processes import REPO, oculab_env
from tests.tls import PrivateCa, make_private_ca

REDIS_URL = redis_db_url(1)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


class Processes:
    """`oculab` subcommands as subprocesses with one environment; logs kept per process."""

    def __init__(self, directory: Path, **settings: str) -> None:
        self.directory = directory
        self.env = oculab_env(directory, REDIS_URL, "operability-tests", **settings)
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        path = self.directory / f"{args[0]}-{len(self.procs)}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", *args],
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        self.procs.append((proc, path))
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return next(p.read_text(errors="replace") for q, p in self.procs if q is proc)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}" for _, path in self.procs
        )

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            self.stop(proc)


@pytest.fixture
def processes(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Processes]]:
    made: list[Processes] = []

    def make(**settings: str) -> Processes:
        directory = tmp_path / f"procs{len(made)}"
        directory.mkdir()
        made.append(Processes(directory, database_url=database_url, **settings))
        return made[-1]

    yield make
    for group in made:
        group.stop_all()


@contextmanager
def writes_blocked(database_url: str, table: str) -> Iterator[None]:
    """Holds a lock that stalls every writer of ``table`` (SQLite: of the database), as a
    stuck migration or a runaway transaction would: what wedges a process for real."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(database_url) as pg:
        pg.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            pg.rollback()


def _pools() -> tuple[str, str]:
    """A GPU and a CPU pool of this test's own: other runs' messages never reach it."""
    tag = secrets.token_hex(3)
    return f"gpu-{tag}", f"cpu-{tag}"


def _maker(engine: sa.Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


# --- a. scheduler health ------------------------------------------------------------------


def test_freshness_goes_stale_after_its_limit() -> None:
    now = [100.0]
    fresh = Freshness(30, clock=lambda: now[0])
    assert fresh.age() is None
    assert not fresh.fresh()
    fresh.mark()
    now[0] += 29.5
    assert fresh.fresh()
    assert fresh.age() == pytest.approx(29.5)
    now[0] += 1
    assert not fresh.fresh()
    fresh.mark()
    assert fresh.fresh()
    assert fresh.age() == 0


def test_a_freshness_reading_judges_by_the_age_it_reports() -> None:
    # A clock that moves on every read, across the limit between two reads: a verdict
    # and an age read apart would disagree (a 503 whose body shows a fresh age).
    ticks = iter([0.0, 29.9995, 30.0005, 30.0015])
    fresh = Freshness(30, clock=lambda: next(ticks))
    fresh.mark()
    assert fresh.reading() == (True, 29.9995)
    stale, age = fresh.reading()
    assert not stale
    assert age == pytest.approx(30.0005)


def test_scheduler_healthz_reports_its_role_and_goes_503_while_wedged(
    processes: Callable[..., Processes], database_url: str
) -> None:
    port = free_port()
    group = processes(scheduler_stale_seconds="2")
    scheduler = group.spawn("scheduler", "--health-port", str(port))
    url = f"http://127.0.0.1:{port}/healthz"

    def answered(status: int) -> dict[str, Any] | None:
        response = _get(url)
        if response is not None and response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        return None

    body = wait_until(lambda: answered(200), 60, group.logs)
    assert body["role"] == "leader"  # alone: every pass holds the lock
    assert 0 <= body["last_tick_age_s"] < 2
    assert (_get(f"http://127.0.0.1:{port}/other") or httpx.Response(0)).status_code == 404
    with writes_blocked(database_url, "jobs"):
        stale = wait_until(lambda: answered(503), 30, group.logs)
        # Stale means older than the limit; the body rounds to milliseconds, so an
        # age just past 2 s may read 2.0.
        assert stale["last_tick_age_s"] >= stale["stale_after_s"] == 2
        assert scheduler.poll() is None  # wedged, not dead: only the probe can tell
    wait_until(lambda: answered(200), 30, group.logs)
    assert group.stop(scheduler) == 0
    assert "serving /healthz on port" in group.output(scheduler)


def test_scheduler_health_port_is_validated_and_can_be_off(
    processes: Callable[..., Processes],
) -> None:
    group = processes()
    for bad in ("-1", "70000", "eighty"):
        result = subprocess.run(
            [sys.executable, "-m", "server.cli", "scheduler", "--health-port", bad],
            env=group.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert "--health-port" in result.stderr
    off = group.spawn("scheduler", "--health-port", "0")
    wait_until(lambda: "scheduler running" in group.output(off), 60, group.logs)
    assert "healthz" not in group.output(off)


# --- b, j. worker liveness and versions ---------------------------------------------------


def test_worker_healthz_follows_its_heartbeat_and_the_row_has_its_versions(
    processes: Callable[..., Processes], database_url: str, engine: sa.Engine
) -> None:
    gpu, cpu = _pools()
    port = free_port()
    group = processes(pools=f"{gpu},{cpu}", cpu_pools=cpu, worker_liveness_seconds="2")
    worker = group.spawn("worker", "--pool", cpu, "--metrics-port", str(port))
    base = f"http://127.0.0.1:{port}"

    def status(code: int) -> dict[str, Any] | None:
        response = _get(f"{base}/healthz")
        if response is not None and response.status_code == code:
            body: dict[str, Any] = response.json()
            return body
        return None

    healthy = wait_until(lambda: status(200), 60, group.logs)
    assert healthy["heartbeat_age_s"] < 2
    metrics = _get(f"{base}/")
    assert metrics is not None
    # Prometheus still answers there (empty until a message was processed).
    assert metrics.headers["content-type"].startswith("text/plain; version=")
    with writes_blocked(database_url, "workers"):
        stale = wait_until(lambda: status(503), 30, group.logs)
        assert stale["status"] == "stale"
        # Older than the limit, rounded to milliseconds (as the scheduler's above).
        assert stale["heartbeat_age_s"] >= stale["stale_after_s"] == 2
    wait_until(lambda: status(200), 40, group.logs)

    # torch as a child of this interpreter sees it: the worker must report the same.
    found = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    maker = _maker(engine)

    def row() -> WorkerRow | None:
        with maker() as db:
            return db.scalars(
                sa.select(WorkerRow).where(
                    WorkerRow.id.like(f"%-{worker.pid}-%"), WorkerRow.torch_version.is_not(None)
                )
            ).first()

    reported = wait_until(row, 300, group.logs)
    assert reported.torch_version == found[0]
    assert reported.cuda_version == (None if found[1] == "None" else found[1])
    assert reported.driver_version is None  # no NVIDIA driver on this machine
    assert group.stop(worker) == 0
    assert f"torch {found[0]}" in group.output(worker)


# --- f. exit modes for KEDA ScaledJobs -------------------------------------------------------


def _submit(
    maker: sessionmaker[Session],
    settings: Settings,
    user_id: int,
    pool: str,
    seconds: float,
) -> int:
    with maker() as db, db.begin():
        return jobs.submit(
            db,
            settings,
            load_kinds(settings),
            kind="test.sleep_count",
            user=db.get(User, user_id),
            project_id=None,
            params={"seconds": seconds},
            pool=pool,
        ).id


def _job(maker: sessionmaker[Session], job_id: int) -> Job:
    with maker() as db:
        job = db.get(Job, job_id)
        assert job is not None
        return job


def test_worker_exits_after_max_jobs_and_when_idle_never_mid_job(
    processes: Callable[..., Processes],
    make_settings: Callable[..., Settings],
    factory: Factory,
    engine: sa.Engine,
) -> None:
    gpu, cpu = _pools()
    group = processes(pools=f"{gpu},{cpu}", cpu_pools=cpu)
    settings = make_settings(pools=[gpu, cpu], cpu_pools=[cpu], job_modules=["tests.jobkinds"])
    maker = _maker(engine)
    alice = factory.user("alice").id
    group.spawn("scheduler", "--health-port", "0")
    first = _submit(maker, settings, alice, cpu, 0.3)
    second = _submit(maker, settings, alice, cpu, 4)

    one = group.spawn("worker", "--pool", cpu, "--metrics-port", "0", "--max-jobs", "1")
    assert one.wait(timeout=120) == 0, group.logs()
    assert "--max-jobs 1" in group.output(one)
    assert _job(maker, first).state == JobState.succeeded
    waiting = _job(maker, second)
    assert waiting.state == JobState.queued, group.logs()
    assert waiting.attempts == 0
    with maker() as db:
        live = sa.select(sa.func.count()).select_from(WorkerRow)
        assert db.scalar(live.where(WorkerRow.stopped_at.is_(None))) == 0

    # The second job runs longer than the idle limit: the worker exits after it, not in it.
    two = group.spawn("worker", "--pool", cpu, "--metrics-port", "0", "--idle-exit", "2")
    assert two.wait(timeout=120) == 0, group.logs()
    exited = utcnow()
    done = _job(maker, second)
    assert done.state == JobState.succeeded, group.logs()
    assert done.attempts == 1  # never interrupted and handed back
    assert done.finished_at is not None
    assert done.finished_at < exited
    assert "--idle-exit 2" in group.output(two)
    assert sorted(completions(group.directory)) == [first, second]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-jobs", "0", "must be at least 1"),
        ("--max-jobs", "two", "not a whole number"),
        ("--idle-exit", "-5", "positive number of seconds"),
        ("--idle-exit", "nan", "positive number of seconds"),
        ("--idle-exit", "soon", "not a number of seconds"),
    ],
)
def test_worker_exit_options_refuse_bad_values(flag: str, value: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "worker", flag, value],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert flag in result.stderr


# --- k. a lower per-user GPU limit does not touch running trainings -----------------------


def test_lower_gpu_limit_after_a_scheduler_restart_leaves_running_jobs_running(
    processes: Callable[..., Processes],
    make_settings: Callable[..., Settings],
    factory: Factory,
    engine: sa.Engine,
) -> None:
    gpu, cpu = _pools()
    group = processes(pools=f"{gpu},{cpu}", cpu_pools=cpu)
    settings = make_settings(pools=[gpu, cpu], cpu_pools=[cpu], job_modules=["tests.jobkinds"])
    maker = _maker(engine)
    alice = factory.user("alice").id
    # A GPU pool on a machine without GPUs runs its jobs on the CPU: three slots here.
    group.spawn("worker", "--pool", gpu, "--slots", "3", "--metrics-port", "0")
    old = group.spawn("scheduler", "--health-port", "0", OCULAB_GPU_JOBS_PER_USER="2")
    ids = [_submit(maker, settings, alice, gpu, 120) for _ in range(3)]

    def running() -> list[Job]:
        with maker() as db:
            return list(db.scalars(sa.select(Job).where(Job.state == JobState.running)))

    def two_running() -> list[Job] | None:
        jobs = running()
        return jobs if len(jobs) == 2 else None

    before = wait_until(two_running, 120, group.logs)
    assert group.stop(old) == 0
    port = free_port()
    group.spawn("scheduler", "--health-port", str(port), OCULAB_GPU_JOBS_PER_USER="1")
    wait_until(
        lambda: (r := _get(f"http://127.0.0.1:{port}/healthz")) and r.status_code == 200,
        60,
        group.logs,
    )
    # Long enough for the new scheduler to judge heartbeats (3 s) and admit several times.
    time.sleep(5)
    after = {j.id: j for j in running()}
    assert set(after) == {j.id for j in before}, group.logs()
    for job in before:
        now = after[job.id]
        assert (now.worker_id, now.attempts, now.cancel_requested) == (job.worker_id, 1, False)
    third = _job(maker, next(i for i in ids if i not in after))
    assert third.state == JobState.queued
    assert third.admitted_at is None
    with maker() as db:
        states = [
            (e.job_id, e.data.get("state"))
            for e in db.scalars(
                sa.select(JobEvent)
                .where(JobEvent.job_id.in_(list(after)), JobEvent.kind == "state")
                .order_by(JobEvent.id)
            )
        ]
    # Queued once (on submission), running once: never handed back, never re-queued.
    for job_id in after:
        assert [s for j, s in states if j == job_id] == ["queued", "running"], states
    # Over the new limit, the third waits until both running ones are gone.
    with maker() as db, db.begin():
        db.execute(sa.update(Job).where(Job.id.in_(list(after))).values(cancel_requested=True))
    wait_until(lambda: _job(maker, third.id).state == JobState.running, 120, group.logs)
    ended = [_job(maker, i) for i in after]
    assert all(j.state == JobState.canceled for j in ended)
    started = _job(maker, third.id).started_at
    assert started is not None
    assert all(j.finished_at is not None and j.finished_at <= started for j in ended)


# --- c, i. metrics ------------------------------------------------------------------------


def test_api_serves_metrics_on_their_own_port_and_404_on_the_public_one(
    processes: Callable[..., Processes],
) -> None:
    port, metrics_port = free_port(), free_port()
    group = processes(metrics_port=str(metrics_port))
    api = group.spawn("api", "--port", str(port))
    wait_until(
        lambda: (r := _get(f"http://127.0.0.1:{port}/api/health")) and r.status_code == 200,
        90,
        group.logs,
    )
    public = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert public.status_code == 404
    assert public.json()["detail"] == "not found"
    private = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert private.status_code == 200
    assert 'oculab_http_requests_total{method="GET",route="/api/health"' in private.text
    assert "# TYPE oculab_jobs gauge" in private.text
    group.stop(api)  # uvicorn re-raises SIGTERM once it has shut down


def test_metrics_port_setting_is_validated(make_settings: Callable[..., Settings]) -> None:
    from pydantic import ValidationError

    for bad in (0, 70000):
        with pytest.raises(ValidationError, match="metrics_port"):
            make_settings(metrics_port=bad)


def test_gpu_and_heartbeat_metrics_carry_the_pool(
    factory: Factory, engine: sa.Engine, client: Any
) -> None:
    now = utcnow()
    with _maker(engine)() as db, db.begin():
        db.add(
            WorkerRow(
                id="w-gpu",
                hostname="node-1",
                pools=["gpu", "cpu"],
                slots=1,
                gpus=[{"index": 0, "name": "H100", "utilization": 0.5, "memory_used": 1024}],
                started_at=now,
                last_heartbeat=now,
                torch_version="2.5.1+cu124",
                cuda_version="12.4",
                driver_version="550.54.15",
            )
        )
    text = client.get("/metrics").text
    assert 'oculab_worker_heartbeat_age_seconds{pool="gpu",worker="w-gpu"}' in text
    assert 'oculab_worker_heartbeat_age_seconds{pool="cpu",worker="w-gpu"}' in text
    assert 'oculab_gpu_utilization_ratio{gpu="0",name="H100",pool="gpu",worker="w-gpu"} 0.5' in text
    assert (
        'oculab_gpu_memory_used_bytes{gpu="0",name="H100",pool="gpu",worker="w-gpu"} 1024' in text
    )
    # ... and the admin queue shows what the worker runs.
    admin = factory.client(factory.user("root", is_admin=True))
    shown = next(w for w in admin.get("/api/admin/queue").json()["workers"] if w["id"] == "w-gpu")
    assert (shown["torch_version"], shown["cuda_version"], shown["driver_version"]) == (
        "2.5.1+cu124",
        "12.4",
        "550.54.15",
    )


# --- d. migrations wait for the database and serialise ------------------------------------

needs_postgres = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL behaviour")


def _migrate(url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "migrate", *args],
        env={**base, "OCULAB_DATABASE_URL": url, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _waiting_for_lock(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid = %s AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())",
            (migrate.MIGRATION_LOCK_KEY,),
        ).fetchone()
    return int(row[0]) if row else 0


@needs_postgres
def test_concurrent_migrations_serialise_on_the_advisory_lock(fresh_database_url: str) -> None:
    # The test holds the lock first, so both runs certainly meet it.
    with psycopg.connect(fresh_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.MIGRATION_LOCK_KEY,))
        runs = [_migrate(fresh_database_url) for _ in range(2)]
        wait_until(
            lambda: _waiting_for_lock(fresh_database_url) == 2,
            120,
            lambda: f"not both waiting: {[r.poll() for r in runs]}",
        )
        holder.execute("SELECT pg_advisory_unlock(%s)", (migrate.MIGRATION_LOCK_KEY,))
        results = [(r.wait(timeout=120), *r.communicate()) for r in runs]
    for code, out, err in results:
        assert code == 0, err
        assert f"schema at {migrate.head_revision()}" in out
        assert "holds the migration lock" in err
    assert migrate.schema_status(fresh_database_url).state is migrate.SchemaState.current


@needs_postgres
@pytest.mark.skipif(pgcluster.available() is not None, reason=str(pgcluster.available()))
def test_migrate_waits_for_a_database_that_comes_up_late() -> None:
    with pgcluster.throwaway_postgres() as cluster:
        drop_database(cluster.base, "oculab")
        create_database(cluster.base, "oculab")
        cluster.stop()
        too_short = _migrate(cluster.url, "--wait-db", "2")
        out, err = too_short.communicate(timeout=120)
        assert too_short.returncode == 1
        assert "did not accept connections within 2 s" in err
        assert "Traceback" not in err

        late = _migrate(cluster.url, "--wait-db", "120")
        assert late.stderr is not None
        first = late.stderr.readline()
        while "waiting for the database" not in first:
            assert first, "migrate ended without waiting"
            first = late.stderr.readline()
        cluster.start()
        out, err = late.communicate(timeout=120)
        assert late.returncode == 0, err
        assert f"schema at {migrate.head_revision()}" in out
        assert migrate.schema_status(cluster.url).state is migrate.SchemaState.current


# --- e. the upgrade and rollback contract -------------------------------------------------

_TABLE = "sa.Column('id', sa.Integer, primary_key=True)"
_REVISIONS = {
    "a": ("aaaaaaaaaaa1", None, None, f"op.create_table('scratch_a', {_TABLE})"),
    "b": (
        "bbbbbbbbbbb2",
        "aaaaaaaaaaa1",
        True,
        "op.add_column('scratch_a', sa.Column('note', sa.String(20), nullable=True))",
    ),
    "c": ("ccccccccccc3", "bbbbbbbbbbb2", False, f"op.create_table('scratch_c', {_TABLE})"),
}


def _release(root: Path, name: str, revisions: str) -> str:
    """A script directory as a release with these revisions would ship it, with the
    project's real env.py."""
    directory = root / name
    (directory / "versions").mkdir(parents=True)
    shutil.copy(REPO / "migrations" / "env.py", directory / "env.py")
    for key in revisions:
        revision, down, compatible, body = _REVISIONS[key]
        flag = "" if compatible is None else f"backward_compatible = {compatible}\n"
        (directory / "versions" / f"{revision}.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {revision!r}\ndown_revision = {down!r}\n{flag}\n\n"
            f"def upgrade():\n    {body}\n\n\ndef downgrade():\n    pass\n"
        )
    return str(directory)


def _recorded(url: str) -> list[tuple[str, str]]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(migrate.COMPAT_TABLE):
                return []
            rows = conn.execute(sa.text(f"SELECT * FROM {migrate.COMPAT_TABLE}")).all()
            return [(str(a), str(b)) for a, b in rows]
    finally:
        engine.dispose()


def test_old_code_runs_on_a_compatible_newer_schema_and_refuses_an_incompatible_one(
    fresh_database_url: str, tmp_path: Path
) -> None:
    from alembic import command

    url = fresh_database_url
    v1, v2, v3 = (_release(tmp_path, n, r) for n, r in (("v1", "a"), ("v2", "ab"), ("v3", "abc")))
    migrate.upgrade(url, v2)
    assert _recorded(url) == [("bbbbbbbbbbb2", "aaaaaaaaaaa1")]
    # v1's pods (a rollback) and v1's migration Job both accept v2's compatible schema.
    old = migrate.schema_status(url, v1)
    assert old.state is migrate.SchemaState.newer_compatible
    assert old.usable
    assert migrate.upgrade(url, v1).state is migrate.SchemaState.newer_compatible
    assert migrate.schema_status(url, v2).state is migrate.SchemaState.current

    migrate.upgrade(url, v3)
    assert _recorded(url) == [("ccccccccccc3", "ccccccccccc3")]
    for release in (v1, v2):
        status = migrate.schema_status(url, release)
        assert status.state is migrate.SchemaState.newer_incompatible
        assert not status.usable
        assert "not compatible" in status.describe()
        with pytest.raises(migrate.SchemaTooNew, match="newer than this release"):
            migrate.upgrade(url, release)
    assert migrate.schema_status(url, v3).state is migrate.SchemaState.current

    # The newer release downgrades; the record follows, and v1 may run again.
    command.downgrade(migrate.alembic_config(url, v3), "bbbbbbbbbbb2")
    assert _recorded(url) == [("bbbbbbbbbbb2", "aaaaaaaaaaa1")]
    assert migrate.schema_status(url, v1).state is migrate.SchemaState.newer_compatible
    command.downgrade(migrate.alembic_config(url, v3), "base")
    assert _recorded(url) == []
    assert migrate.schema_status(url, v1).state is migrate.SchemaState.behind


def test_the_real_chain_records_what_may_run_and_the_cli_follows_it(
    fresh_database_url: str, tmp_path: Path
) -> None:
    from alembic.script import ScriptDirectory

    url = fresh_database_url
    env = {"OCULAB_DATA_DIR": str(tmp_path / "d")}
    run = _migrate(url, **env)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    head = migrate.head_revision()
    assert head is not None
    script = ScriptDirectory(migrate.SCRIPT_LOCATION)
    assert _recorded(url) == [(head, migrate.oldest_code_head(script, head))]
    # Workers' version columns are nullable additions: the release before runs on them.
    assert migrate.oldest_code_head(script, "5e8a1f3c2b90") == "9d2e7b1c4a68"

    def newer(oldest: str) -> None:
        with psycopg.connect(url) if url.startswith("postgres") else _sqlite(url) as conn:
            conn.execute("UPDATE alembic_version SET version_num = 'feedc0ffee00'")
            conn.execute(f"DELETE FROM {migrate.COMPAT_TABLE}")
            conn.execute(f"INSERT INTO {migrate.COMPAT_TABLE} VALUES ('feedc0ffee00', '{oldest}')")
            conn.commit()

    newer("feedc0ffee00")  # a later release whose migrations are not compatible
    started = time.monotonic()
    for args in (("--check",), ("--wait", "60"), ()):
        refused = _migrate(url, *args, **env)
        out, err = refused.communicate(timeout=120)
        assert refused.returncode == 1, (args, out, err)
        assert "newer than this release" in err
        assert "not compatible" in err
        assert "Traceback" not in err
    assert time.monotonic() - started < 60  # --wait gave up at once: waiting cannot help

    newer(head)  # ... and one whose migrations are
    for args in (("--check",), ()):
        accepted = _migrate(url, *args, **env)
        out, err = accepted.communicate(timeout=120)
        assert accepted.returncode == 0, err
        assert "compatible with it" in out
    assert migrate.schema_status(url).revision == "feedc0ffee00"  # left alone


def _sqlite(url: str) -> sqlite3.Connection:
    return sqlite3.connect(url.removeprefix("sqlite:///"))


# --- g. a Redis password that is not URL-safe ---------------------------------------------

PASSWORD = "p@ss:w/rd%41#?&=+ é"


@contextmanager
def redis_server(*args: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _listening(port), 30, lambda: "redis-server did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_redis_password_is_percent_encoded_into_the_url() -> None:
    settings = Settings(redis_url="redis://10.1.2.3:6380/2", redis_password=PASSWORD)
    url = settings.resolved_redis_url
    assert url == "redis://:p%40ss%3Aw%2Frd%2541%23%3F%26%3D%2B%20%C3%A9@10.1.2.3:6380/2"
    kwargs = redis.ConnectionPool.from_url(url).connection_kwargs
    assert (kwargs["password"], kwargs["host"], kwargs["port"], kwargs["db"]) == (
        PASSWORD,
        "10.1.2.3",
        6380,
        2,
    )
    # A user name in the URL stays; a password there is replaced.
    user = Settings(redis_url="redis://oculab:old@h:1/0", redis_password="new")
    assert user.resolved_redis_url == "redis://oculab:new@h:1/0"
    assert Settings(redis_url="redis://h:1/0").resolved_redis_url == "redis://h:1/0"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
def test_broker_and_api_reach_a_redis_that_requires_such_a_password(
    make_settings: Callable[..., Settings],
) -> None:
    from workers.broker import get_broker, send

    with redis_server("--requirepass", PASSWORD) as port:
        settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_password=PASSWORD)
        broker = get_broker(settings, {}, stub=False)
        try:
            send(broker, kind="k", pool="cpu", job_id=1, message_ref="r", time_limit_ms=1000)
            assert broker.client.hlen("dramatiq:cpu.msgs") == 1  # type: ignore[attr-defined]
        finally:
            broker.close()
        client = redis.Redis.from_url(settings.resolved_redis_url)
        assert client.ping()
        client.close()
        wrong = redis.Redis.from_url(f"redis://:nope@127.0.0.1:{port}/0")
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()


# --- h. an internal CA for the IdP, PostgreSQL and Redis -----------------------------------


@pytest.fixture
def private_ca(tmp_path: Path) -> PrivateCa:
    return make_private_ca(tmp_path / "ca")


@contextmanager
def https_idp(ca: PrivateCa) -> Iterator[str]:
    """An IdP's discovery endpoint over HTTPS with a certificate of the private CA."""
    port = free_port()
    issuer = f"https://127.0.0.1:{port}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"issuer": issuer, "jwks_uri": f"{issuer}/jwks"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.cert_pem, ca.key_pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()


def test_oidc_trusts_the_ca_bundle_for_its_idp(
    private_ca: PrivateCa, make_settings: Callable[..., Settings]
) -> None:
    with https_idp(private_ca) as issuer:
        trusting = OidcClient(
            make_settings(oidc_issuer=issuer, oidc_client_id="oculab", ca_bundle=private_ca.ca_pem)
        )
        assert trusting.metadata()["issuer"] == issuer
        # The authlib client of the login (code exchange, userinfo) verifies the same way.
        assert trusting._app.client_kwargs["verify"] is trusting._verify
        untrusting = OidcClient(make_settings(oidc_issuer=issuer, oidc_client_id="oculab"))
        with pytest.raises(BadGateway):
            untrusting.metadata()


def test_ca_bundle_must_exist(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="OCULAB_CA_BUNDLE: no file at"):
        make_settings(ca_bundle=tmp_path / "missing.pem")


def test_ca_bundle_goes_into_the_database_url_unless_it_names_a_root_cert(
    private_ca: PrivateCa, make_settings: Callable[..., Settings]
) -> None:
    ca = str(private_ca.ca_pem)
    pg = "postgresql+psycopg://oculab@db.internal/oculab?sslmode=verify-full"
    settings = make_settings(database_url=pg, ca_bundle=private_ca.ca_pem)
    engine = make_engine(settings.resolved_database_url)
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    assert (kwargs["sslrootcert"], kwargs["sslmode"]) == (ca, "verify-full")
    own = make_settings(database_url=pg + "&sslrootcert=/etc/pg/ca.pem", ca_bundle=ca)
    assert own.resolved_database_url == pg + "&sslrootcert=/etc/pg/ca.pem"
    # SQLite has no TLS; a plain redis:// URL none either.
    sqlite = make_settings(database_url="sqlite:////tmp/oculab.db", ca_bundle=ca)
    assert sqlite.resolved_database_url == "sqlite:////tmp/oculab.db"
    assert "ssl_ca_certs" not in make_settings(ca_bundle=ca).resolved_redis_url


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
def test_rediss_trusts_the_ca_bundle(
    private_ca: PrivateCa, make_settings: Callable[..., Settings]
) -> None:
    tls = free_port()
    with redis_server(
        "--tls-port",
        str(tls),
        "--tls-cert-file",
        str(private_ca.cert_pem),
        "--tls-key-file",
        str(private_ca.key_pem),
        "--tls-ca-cert-file",
        str(private_ca.ca_pem),
        "--tls-auth-clients",
        "no",
    ):
        url = f"rediss://127.0.0.1:{tls}/0"
        trusting = make_settings(redis_url=url, ca_bundle=private_ca.ca_pem)
        client = redis.Redis.from_url(trusting.resolved_redis_url)
        assert client.ping()
        client.close()
        untrusting = redis.Redis.from_url(make_settings(redis_url=url).resolved_redis_url)
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            untrusting.ping()
        untrusting.close()


@needs_postgres
@pytest.mark.skipif(pgcluster.available() is not None, reason=str(pgcluster.available()))
def test_postgres_verify_full_trusts_the_ca_bundle(
    private_ca: PrivateCa, make_settings: Callable[..., Settings]
) -> None:
    import pwd

    postgres = pwd.getpwnam("postgres")
    # Where the server (user postgres) can read them: pytest's tmp_path is root's alone.
    with tempfile.TemporaryDirectory(prefix="oculab-pgtls-") as directory:
        certs = Path(directory)
        certs.chmod(0o755)
        for source in (private_ca.cert_pem, private_ca.key_pem):
            target = certs / source.name
            shutil.copy(source, target)
            os.chown(target, postgres.pw_uid, postgres.pw_gid)
        _check_verify_full(private_ca, make_settings, certs)


def _check_verify_full(
    private_ca: PrivateCa, make_settings: Callable[..., Settings], certs: Path
) -> None:
    with pgcluster.throwaway_postgres() as cluster:
        with psycopg.connect(f"{cluster.base}/postgres", autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET ssl_cert_file = '{certs / 'server.pem'}'")
            conn.execute(f"ALTER SYSTEM SET ssl_key_file = '{certs / 'server.key'}'")
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute("SELECT pg_reload_conf()")
        url = f"postgresql://postgres@127.0.0.1:{cluster.port}/oculab?sslmode=verify-full"

        def encrypted(settings: Settings) -> bool:
            engine = make_engine(settings.resolved_database_url, pool_size=1)
            try:
                with engine.connect() as conn:
                    return bool(
                        conn.scalar(
                            sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                        )
                    )
            finally:
                engine.dispose()

        assert wait_until(
            lambda: _try(
                lambda: encrypted(make_settings(database_url=url, ca_bundle=private_ca.ca_pem))
            ),
            30,
            lambda: "no TLS connection with the CA bundle",
        )
        with pytest.raises(sa.exc.OperationalError, match=r"root certificate|verify"):
            encrypted(make_settings(database_url=url))
        assert (
            migrate.schema_status(
                make_settings(database_url=url, ca_bundle=private_ca.ca_pem).resolved_database_url
            ).state
            is migrate.SchemaState.current
        )


def _try(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except sa.exc.OperationalError:
        return False
