"""Server-sent events for one job: a snapshot, then every event row as it lands.

Rows are read from the database; on PostgreSQL one LISTEN connection per API process
wakes the streams as soon as a worker commits an event, elsewhere they poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from server.jobs.events import EVENTS_CHANNEL
from server.kit.db import DbTimeouts, pg_connect_args
from server.models.job import JobState

log = logging.getLogger(__name__)

# The values of the states a job never leaves, as they appear in its state events.
_FINISHED = frozenset(state.value for state in JobState if state.finished)


class EventHub:
    """Wakes SSE streams waiting on a job id."""

    def __init__(self, database_url: str | None, timeouts: DbTimeouts | None = None) -> None:
        self._url = (
            database_url.replace("postgresql+psycopg://", "postgresql://", 1)
            if database_url and database_url.startswith(("postgresql", "postgres://"))
            else None
        )
        self._waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set)
        )
        self._task: asyncio.Task[None] | None = None
        # Keepalives matter most here: a LISTEN connection is idle by design, and one
        # whose server vanished silently would otherwise never wake a stream again.
        # No statement timeout: LISTEN runs no long statement, and none is needed.
        base = timeouts or DbTimeouts()
        self._connect_args = pg_connect_args(
            DbTimeouts(connect_seconds=base.connect_seconds, tcp_seconds=base.tcp_seconds)
        )

    @property
    def live(self) -> bool:
        return self._url is not None

    def start(self) -> None:
        if self._url is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        # Imported here: a standalone (SQLite) server has no use for the driver.
        import psycopg

        assert self._url is not None
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, **self._connect_args
                ) as conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    async for notify in conn.notifies():
                        with contextlib.suppress(ValueError):
                            self._wake(int(notify.payload))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("job event listener lost its connection; reconnecting", exc_info=True)
                # Wake everyone so streams fall back to reading the table.
                for job_id in list(self._waiters):
                    self._wake(job_id)
                await asyncio.sleep(1)

    def _wake(self, job_id: int) -> None:
        # Waiters may live on another event loop (each TestClient has its own).
        for loop, event in list(self._waiters.get(job_id, ())):
            loop.call_soon_threadsafe(event.set)

    async def wait(self, job_id: int, seconds: float) -> None:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        self._waiters[job_id].add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await waiter[1].wait()
        finally:
            self._waiters[job_id].discard(waiter)
            if not self._waiters[job_id]:
                self._waiters.pop(job_id, None)


def format_sse(event: str, data: Any, event_id: int | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, default=str, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


async def stream_job(
    job_id: int,
    after: int,
    *,
    snapshot: Callable[[], Any],
    fetch: Callable[[int], list[Any]],
    hub: EventHub,
    is_disconnected: Callable[[], Any],
    poll_seconds: float,
    keepalive_seconds: float = 15.0,
) -> AsyncIterator[str]:
    """Yields the job's snapshot, then events after ``after``, until it finishes."""
    from starlette.concurrency import run_in_threadpool

    job = await run_in_threadpool(snapshot)
    yield format_sse("snapshot", job.model_dump(mode="json"))
    finished = job.state.finished
    last = after
    idle = 0.0
    while True:
        rows = await run_in_threadpool(fetch, last)
        for row in rows:
            last = row.id
            yield format_sse(row.kind, row.data, row.id)
            if row.kind == "state" and row.data.get("state") in _FINISHED:
                finished = True
        if finished and not rows:
            yield format_sse("end", {"job_id": job_id})
            return
        if rows:
            idle = 0.0
            continue
        if await is_disconnected():
            return
        # With LISTEN a notify wakes us at once; the timeout only bounds a missed one.
        wait = 5.0 if hub.live else poll_seconds
        await hub.wait(job_id, wait)
        idle += wait
        if idle >= keepalive_seconds:
            idle = 0.0
            yield ": keepalive\n\n"
