"""A worker's stop and a message's time limit reach a running job as flags it checks at
its own progress points, never as an exception raised asynchronously in its thread: one
that landed inside psycopg left its connection mid-query in the pool, and the next job
that took that connection failed ("can't change 'autocommit' now")."""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI

from server.jobs.context import JobContext, LiveAttempts, WorkerIdentity
from server.jobs.kinds import JobKind
from server.jobs.runtime import execute
from server.models.job import Job, JobEvent, JobState
from tests.helpers import wait_until
from workers.broker import get_broker, send
from workers.runner import LateBoundWorker, Worker


def _busy(ctx: JobContext) -> dict[str, Any]:
    """Writes progress back to back, so a stop finds it inside a database call."""
    until = time.monotonic() + float(ctx.params.get("seconds", 30))
    writes = 0
    while time.monotonic() < until:
        ctx.progress(0.5, f"write {writes}")
        writes += 1
    return {"writes": writes}


BUSY = JobKind("test.busy", _busy, runs_on="cpu")


def _queued(app: FastAPI, ref: str, **params: Any) -> int:
    with app.state.sessionmaker() as db, db.begin():
        job = Job(kind=BUSY.name, pool="cpu", params=params, state=JobState.queued, message_ref=ref)
        db.add(job)
        db.flush()
        return job.id


def _job(app: FastAPI, job_id: int) -> Job:
    with app.state.sessionmaker() as db:
        job: Job | None = db.get(Job, job_id)
        assert job is not None
        return job


def _progress_events(app: FastAPI, job_id: int) -> int:
    with app.state.sessionmaker() as db:
        return int(
            db.scalar(
                sa.select(sa.func.count())
                .select_from(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.kind == "progress")
            )
            or 0
        )


def _run_in_thread(app: FastAPI, job_id: int, live: LiveAttempts, **kwargs: Any) -> list[Any]:
    outcome: list[Any] = []

    def run() -> None:
        outcome.append(
            execute(
                BUSY,
                job_id,
                _job(app, job_id).message_ref or "",
                WorkerIdentity("w-1"),
                app.state.settings,
                app.state.storage,
                app.state.sessionmaker,
                live=live,
                **kwargs,
            )
        )

    thread = threading.Thread(target=run)
    thread.start()
    outcome.append(thread)
    return outcome


def test_a_stopping_worker_hands_a_busy_job_back_and_its_connections_stay_usable(
    app: FastAPI,
) -> None:
    live = LiveAttempts()
    job_id = _queued(app, "m-1")
    outcome = _run_in_thread(app, job_id, live)
    thread = outcome.pop()
    wait_until(lambda: _progress_events(app, job_id) >= 20, 20, "the job wrote no progress")
    live.stopping.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert outcome == [JobState.queued]
    job = _job(app, job_id)
    assert (job.state, job.attempts, job.worker_id, job.message_ref) == (
        JobState.queued,
        0,
        None,
        None,
    )
    # Every pooled connection is idle and answers: none was left mid-query.
    engine: sa.Engine = app.state.engine
    with engine.connect() as conns:
        assert conns.scalar(sa.text("SELECT 1")) == 1
    for _ in range(10):
        with app.state.sessionmaker() as db, db.begin():
            assert db.get(Job, job_id) is not None


def test_an_attempt_past_its_deadline_fails_at_its_next_check(app: FastAPI) -> None:
    job_id = _queued(app, "m-1")
    outcome = _run_in_thread(app, job_id, LiveAttempts(), deadline=time.monotonic() + 0.5)
    thread = outcome.pop()
    thread.join(timeout=20)
    assert outcome == [JobState.failed]
    job = _job(app, job_id)
    assert job.state == JobState.failed
    assert job.error == "the job exceeded its time limit"
    assert job.result is None


def _worker(app: FastAPI) -> tuple[Worker, Any]:
    body = LateBoundWorker()
    broker = get_broker(app.state.settings, {BUSY.name: BUSY}, stub=True, body=body)
    worker = Worker(
        app.state.settings,
        broker,
        app.state.sessionmaker,
        app.state.storage,
        ["cpu"],
        gpu_indices=[],
        poll_ms=100,
    )
    body.worker = worker
    broker.emit_after("process_boot")
    worker.start()
    return worker, broker


def test_a_worker_reads_the_time_limit_from_the_message(app: FastAPI) -> None:
    worker, broker = _worker(app)
    try:
        job_id = _queued(app, "m-1")
        send(
            broker, kind=BUSY.name, pool="cpu", job_id=job_id, message_ref="m-1", time_limit_ms=400
        )
        wait_until(lambda: _job(app, job_id).state == JobState.failed, 20, "no time limit")
        assert _job(app, job_id).error == "the job exceeded its time limit"
    finally:
        worker.stop(timeout_seconds=10)
        broker.close()


def test_stopping_a_worker_hands_its_running_job_back_at_once(app: FastAPI) -> None:
    worker, broker = _worker(app)
    stopped = False
    try:
        job_id = _queued(app, "m-1")
        send(
            broker,
            kind=BUSY.name,
            pool="cpu",
            job_id=job_id,
            message_ref="m-1",
            time_limit_ms=60_000,
        )
        wait_until(lambda: _progress_events(app, job_id) >= 5, 20, "the job did not start")
        started = time.monotonic()
        worker.stop(timeout_seconds=10)
        stopped = True
        assert time.monotonic() - started < 5
    finally:
        if not stopped:
            worker.stop(timeout_seconds=10)
        broker.close()
    job = _job(app, job_id)
    assert (job.state, job.attempts) == (JobState.queued, 0)
