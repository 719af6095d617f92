"""Plumbing shared by the test modules: waiting, scratch databases, free ports.

Where shared test code lives (test modules import from these, never from each other):

- here: ``wait_until`` is the one polling loop; ``wait_job`` waits for a job through the
  HTTP API on top of it. ``BACKEND`` is the database under test
  (``OCULAB_TEST_DATABASE``); ``scratch_database`` makes an empty throwaway database on
  it, and ``create_database``/``drop_database`` do the same by name on any PostgreSQL
  server (a throwaway cluster's). ``free_port`` for servers the tests start;
  ``redis_db_url`` for the Redis databases of the pass.
- tests/conftest.py: the fixtures: the session database, settings, apps (``make_app``;
  ``make_running_app`` with the lifespan entered, for in-process job workers), clients
  and factories.
- tests/factories.py: rows, authenticated clients, image and archive bytes.
- tests/processes.py: real processes: the ``oculab`` environment, a scheduler-and-workers
  ``Cluster``, the helm binary.
- tests/pgcluster.py: a PostgreSQL cluster of a test's own, for tests that stop it.
- tests/jobkinds.py: job kinds the tests submit.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg

BACKEND = os.environ.get("OCULAB_TEST_DATABASE", "sqlite")
PG_BASE = os.environ.get("OCULAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
# `make test` runs the SQLite and the PostgreSQL pass at once, and tests flush the Redis
# databases they use: each pass has databases of its own.
_REDIS_FIRST_DB = 12 if BACKEND == "postgres" else 8

T = TypeVar("T")


@contextmanager
def one_at_a_time(what: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``what`` (any path) across processes: the SQLite and
    PostgreSQL passes of `make test` run at once, and a step that fills a folder of the
    tree (``npm ci``, which first deletes what is there) must not run in both, or one
    pass's process loads modules the other is deleting."""
    key = hashlib.sha256(str(what.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"oculab-tests-{key}.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def wait_until(
    check: Callable[[], T | None],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
) -> T:
    """Calls ``check`` until it returns something truthy and returns that. Liveness, not
    speed: after ``timeout`` seconds the test fails with ``what`` (a callable is called
    only then, so it may read logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not within {timeout} s: {detail}")
        time.sleep(interval)


FINISHED = frozenset({"succeeded", "failed", "canceled"})


class HttpClient(Protocol):
    """TestClient, httpx.Client or tests.factories.ApiClient."""

    def get(self, url: str, /) -> Any: ...


def wait_job(
    client: HttpClient,
    job_id: int,
    timeout: float = 240,
    logs: Callable[[], str] | None = None,
    *,
    states: frozenset[str] | set[str] = FINISHED,
) -> dict[str, Any]:
    """Polls ``GET /api/jobs/{id}`` until the job is in one of ``states`` (by default,
    ended) and returns its body; on timeout the failure shows the last body and ``logs``."""
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal last
        last = client.get(f"/api/jobs/{job_id}").json()
        return last if last.get("state") in states else None

    def stuck() -> str:
        return f"job {job_id} not in {sorted(states)}: {last}" + (f"\n{logs()}" if logs else "")

    return wait_until(reached, timeout, stuck)


# --- databases ---------------------------------------------------------------------------


def create_database(server: str, name: str) -> None:
    """An empty database ``name`` on the PostgreSQL server at ``server`` (no path)."""
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(directory: Path, prefix: str) -> Iterator[str]:
    """The URL of an empty database (no schema) on the backend under test, gone after:
    a file in ``directory`` on SQLite, a uniquely named database on PostgreSQL."""
    if BACKEND == "sqlite":
        yield f"sqlite:///{directory / f'{prefix}.db'}"
        return
    if BACKEND != "postgres":
        raise RuntimeError(f"unknown OCULAB_TEST_DATABASE={BACKEND!r}")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    create_database(PG_BASE, name)
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        drop_database(PG_BASE, name)


# --- Redis ------------------------------------------------------------------------------


def redis_db_url(slot: int) -> str:
    """The URL of the pass's Redis database number ``slot`` (0 to 3), on the Redis at
    127.0.0.1:6379."""
    if not 0 <= slot <= 3:
        raise ValueError(f"no Redis database slot {slot}")
    return f"redis://127.0.0.1:6379/{_REDIS_FIRST_DB + slot}"


# --- ports -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
