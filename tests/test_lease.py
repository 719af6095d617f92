"""The training child's lease: it trains only until the deadline its supervisor last
sent, and that deadline counts from the attempt's newest heartbeat that reached the
database, not from when the supervisor's thread last ran. A worker whose heartbeats stall
while its process runs on (starved, or cut off from the database while the reconciler
still reaches it) must lose its child before the reconciler hands the job to another
worker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from fastapi import FastAPI
from sqlalchemy.orm import sessionmaker

from server.jobs.context import Attempt, JobContext
from server.kit.db import make_engine, utcnow
from server.kit.storage import Storage
from server.models.job import Job, JobState
from server.settings import Settings
from server.training.tasks import _Lease
from tests.factories import Factory
from tests.helpers import BACKEND, free_port
from workers.ml.train_child import LEASE_EXPIRED_EXIT
from workers.runner import Worker

REPO = Path(__file__).resolve().parents[1]

# The child's lease watcher, and nothing else of training: sleeps until it is stopped.
_CHILD = (
    "import sys, time\n"
    "from workers.ml.train_child import _hold_lease\n"
    "_hold_lease(float(sys.argv[1]))\n"
    "time.sleep(120)\n"
)


Spawn = Callable[[float], "subprocess.Popen[bytes]"]


@pytest.fixture
def child_of() -> Iterator[Spawn]:
    made: list[subprocess.Popen[bytes]] = []

    def spawn(seconds: float) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(seconds)], cwd=REPO, stdin=subprocess.PIPE
        )
        made.append(child)
        return child

    yield spawn
    for child in made:
        if child.poll() is None:
            child.kill()
        child.wait()


def _exit_time(child: subprocess.Popen[bytes], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while child.poll() is None:
        assert time.monotonic() < deadline, "the child trained on"
        time.sleep(0.01)
    return time.monotonic()


@pytest.mark.no_database
def test_the_child_trains_while_heartbeats_land_and_stops_a_lease_after_the_last(
    child_of: Spawn,
) -> None:
    lease = 1.0
    heard = time.monotonic()
    child = child_of(lease)
    feeder = _Lease(child, lambda: heard, lease)
    try:
        # Heartbeats every 0.2 s for three leases: the child keeps training.
        until = time.monotonic() + 3 * lease
        while time.monotonic() < until:
            time.sleep(0.2)
            heard = time.monotonic()
            assert child.poll() is None, "stopped while its heartbeats reached the database"
        # The heartbeats stall; the supervisor's own thread runs on, and must not keep
        # the child alive on its own.
        last = heard
        stopped = _exit_time(child, 10 * lease)
    finally:
        feeder.stop()
    assert child.returncode == LEASE_EXPIRED_EXIT
    assert stopped - last >= lease
    assert stopped - last < lease + 2.0, f"{stopped - last:.2f} s after the last heartbeat"


@pytest.mark.no_database
def test_the_child_stops_at_once_when_its_supervisor_is_gone(child_of: Spawn) -> None:
    child = child_of(60.0)
    feeder = _Lease(child, time.monotonic, 60.0)
    time.sleep(0.5)
    assert child.poll() is None
    closed = time.monotonic()
    feeder.stop()  # closes the child's stdin, as the supervisor's exit would
    assert _exit_time(child, 10) - closed < 5
    assert child.returncode == LEASE_EXPIRED_EXIT


@pytest.mark.no_database
def test_a_child_started_after_its_lease_ran_out_does_not_train(child_of: Spawn) -> None:
    # The worker was silent for longer than the lease before the child even started.
    child = child_of(30.0)
    feeder = _Lease(child, lambda: time.monotonic() - 40.0, 30.0)
    try:
        _exit_time(child, 10)
    finally:
        feeder.stop()
    assert child.returncode == LEASE_EXPIRED_EXIT


# --- what moves the lease: heartbeats and fenced writes that committed -----------------


def _running_job(f: Factory, worker_id: str, attempts: int = 1) -> int:
    with f.sessionmaker() as db, db.begin():
        job = Job(
            kind="test.sleep_count",
            pool="cpu",
            params={},
            state=JobState.running,
            worker_id=worker_id,
            attempts=attempts,
            heartbeat_at=utcnow(),
        )
        db.add(job)
        db.flush()
        return job.id


def test_a_heartbeat_moves_the_lease_only_of_attempts_it_refreshed(
    app: FastAPI, factory: Factory
) -> None:
    worker = Worker(
        app.state.settings,
        StubBroker(),
        app.state.sessionmaker,
        app.state.storage,
        ["cpu"],
        gpu_indices=[],
    )
    ours = Attempt(_running_job(factory, worker.id), 1, heard_at=0.0)
    taken = Attempt(_running_job(factory, worker.id, attempts=2), 1, heard_at=0.0)
    worker.live.add(ours)
    worker.live.add(taken)
    before = time.monotonic()
    worker.beat_once()
    assert before <= ours.heard_at <= time.monotonic()
    assert not ours.lost.is_set()
    # Attempt 2 holds the other job: this attempt lost it and its lease does not move.
    assert taken.heard_at == 0.0
    assert taken.lost.is_set()

    if BACKEND == "postgres":
        # A row its heartbeat skips (locked by another transaction) does not move its lease.
        was = ours.heard_at
        with factory.sessionmaker() as db, db.begin():
            db.execute(sa.select(Job).where(Job.id == ours.job_id).with_for_update())
            worker.beat_once()
        assert ours.heard_at == was


def test_a_fenced_write_moves_the_lease_once_it_commits(app: FastAPI, factory: Factory) -> None:
    job_id = _running_job(factory, "w-1")
    signals = Attempt(job_id, 1, heard_at=0.0)
    ctx = JobContext(
        job_id=job_id,
        kind="test.sleep_count",
        params={},
        project_id=None,
        created_by=None,
        attempt=1,
        gpu_index=None,
        worker_id="w-1",
        settings=app.state.settings,
        storage=app.state.storage,
        sessionmaker=app.state.sessionmaker,
        signals=signals,
    )
    with pytest.raises(RuntimeError), ctx.session():
        raise RuntimeError("rolled back")
    assert ctx.heard_at() == 0.0
    before = time.monotonic()
    ctx.check_canceled()
    assert before <= ctx.heard_at() <= time.monotonic()
    was = ctx.heard_at()
    ctx.log("a line")
    assert ctx.heard_at() > was


def _cut_off_worker(settings: Settings, url: str, tmp_path: Path) -> Worker:
    maker = sessionmaker(make_engine(url, pool_size=1), expire_on_commit=False)
    return Worker(settings, StubBroker(), maker, Storage(tmp_path), ["cpu"], gpu_indices=[])


def test_a_heartbeat_that_finds_the_database_down_moves_the_lease(
    settings: Settings, tmp_path: Path
) -> None:
    # Nothing listens there: every heartbeat finds the database unavailable, as in an
    # outage, when the reconciler cannot re-queue the job either.
    worker = _cut_off_worker(
        settings, f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone", tmp_path
    )
    attempt = Attempt(1, 1, heard_at=0.0)
    worker.live.add(attempt)
    before = time.monotonic()
    worker.beat_once()
    assert before <= attempt.heard_at <= time.monotonic()


def test_a_heartbeat_that_fails_for_another_reason_does_not(
    settings: Settings, tmp_path: Path
) -> None:
    # A database without our tables: an error that waiting would not cure.
    worker = _cut_off_worker(settings, f"sqlite:///{tmp_path / 'empty.db'}", tmp_path)
    attempt = Attempt(1, 1, heard_at=0.0)
    worker.live.add(attempt)
    worker.beat_once()
    assert attempt.heard_at == 0.0
