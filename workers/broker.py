"""The one place a Dramatiq broker is built.

Server mode uses Redis; standalone mode the StubBroker with in-process worker threads.
Both carry the same middleware and the same actors, so jobs take the same code path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    Middleware,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from server.jobs.kinds import JobKind, default_pool
from server.settings import Settings

# What an actor does with (job_id, message_ref): set by the worker that consumes.
ActorBody = Callable[[JobKind, int, str], None]


def middleware(*, prometheus: bool) -> list[Middleware]:
    """Middleware, in order.

    - TimeLimit: every message carries an explicit limit (by pool type).
    - ShutdownNotifications: a stopping worker interrupts running jobs, which hand
      themselves back to the queue (see server/jobs/runtime.py).
    - Retries(0): Postgres counts attempts; a redelivery after SIGKILL is not a
      Dramatiq retry, and a job that raised must not run again by itself.
    - Prometheus (worker processes in server mode): Dramatiq's own message metrics.
    """
    stack: list[Middleware] = [
        TimeLimit(interval=1000),
        ShutdownNotifications(notify_shutdown=True),
        Retries(max_retries=0),
    ]
    if prometheus:
        from dramatiq.middleware.prometheus import Prometheus

        stack.append(Prometheus())
    return stack


def get_broker(
    settings: Settings,
    kinds: dict[str, JobKind],
    *,
    stub: bool,
    body: ActorBody | None = None,
    prometheus: bool = False,
) -> dramatiq.Broker:
    broker: dramatiq.Broker
    if stub:
        broker = StubBroker(middleware=middleware(prometheus=False))
    else:
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=settings.redis_url, middleware=middleware(prometheus=prometheus)
        )
    for pool in settings.pools:
        broker.declare_queue(pool)
    for kind in kinds.values():
        _declare_actor(broker, kind, default_pool(settings, kind), body)
    return broker


def _declare_actor(
    broker: dramatiq.Broker, kind: JobKind, pool: str, body: ActorBody | None
) -> None:
    def run(job_id: int, message_ref: str) -> None:
        if body is None:
            raise RuntimeError("this broker only sends; no worker consumes here")
        body(kind, job_id, message_ref)

    run.__name__ = kind.name.replace(".", "_")
    # Messages name their pool's queue themselves; this is only the actor's home.
    dramatiq.Actor(
        run, broker=broker, actor_name=kind.name, queue_name=pool, priority=0, options={}
    )


def send(
    broker: dramatiq.Broker,
    *,
    kind: str,
    pool: str,
    job_id: int,
    message_ref: str,
    time_limit_ms: int,
) -> str | None:
    """Enqueues a job's message; returns where Redis keeps it (None for the stub)."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=pool,
        actor_name=kind,
        args=(job_id, message_ref),
        kwargs={},
        options={"time_limit": time_limit_ms},
    )
    enqueued = broker.enqueue(message)
    ref = enqueued.options.get("redis_message_id")
    return str(ref) if ref else None


def message_exists(broker: dramatiq.Broker, pool: str, broker_message_id: str) -> bool:
    """Whether Redis still holds the message (queued or being worked on)."""
    if not isinstance(broker, RedisBroker):
        return True
    key = f"{broker.namespace}:{pool}.msgs"
    return bool(broker.client.hexists(key, broker_message_id))
