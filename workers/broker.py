"""The one place a Dramatiq broker is built.

Server mode uses Redis; standalone mode the StubBroker with in-process worker threads.
Both carry the same middleware and the same actors, so jobs take the same code path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware, Retries

from server.jobs.kinds import JobKind, default_pool
from server.jobs.scheduler import Admission, Sender
from server.settings import Settings

# What an actor does with (job_id, message_ref): set by the worker that consumes.
ActorBody = Callable[[JobKind, int, str], None]


def middleware(*, prometheus: bool) -> list[Middleware]:
    """Middleware, in order.

    Neither Dramatiq's TimeLimit nor its ShutdownNotifications: both raise an exception
    asynchronously in the job's thread, wherever it is, and one landing inside psycopg
    left its connection mid-query in the pool, failing the next job that took it. A
    message's ``time_limit`` option and the worker's stop reach the job as flags it
    checks at its own progress points instead (server/jobs/context.py).

    - Retries(0): Postgres counts attempts; a redelivery after SIGKILL is not a
      Dramatiq retry, and a job that raised must not run again by itself.
    - CurrentMessage: a worker serving several pools reads the message's queue to take
      a slot of that pool, and its time limit (workers/runner.py).
    - Prometheus (worker processes in server mode): Dramatiq's own message metrics.
    """
    stack: list[Middleware] = [
        Retries(max_retries=0),
        CurrentMessage(),
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
            url=settings.resolved_redis_url, middleware=middleware(prometheus=prometheus)
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


def current_message() -> dramatiq.Message[Any] | None:
    """The message the calling worker thread is processing (its queue is the pool)."""
    message: dramatiq.Message[Any] | None = CurrentMessage.get_current_message()
    return message


def bind_consumer(broker: dramatiq.Broker, consumer_id: str) -> None:
    """Names this process's Redis consumer after its Oculab worker row.

    Dramatiq's Redis broker keeps each fetched-but-unacked message in the set
    ``<ns>:__acks__.<broker_id>.<queue>`` until the consumer acks it; ``broker_id`` is a
    random UUID unless set. With the worker's id there, the scheduler can tell from
    Postgres whether the consumer holding a message is still alive (see
    ``locate_messages``)."""
    if isinstance(broker, RedisBroker):
        broker.broker_id = consumer_id


def locate_messages(
    broker: dramatiq.Broker, pool: str, message_ids: Sequence[str]
) -> dict[str, str | None]:
    """Where Redis keeps each of these messages of a pool's queue.

    Returns ``{message id: consumer id}`` for a message a consumer fetched and has not
    acked yet, ``{message id: None}`` for one still waiting in the queue; a message
    Redis no longer holds at all (acked, or lost with a flushed Redis) is left out.
    The stub broker holds everything in memory of this process: all waiting.
    """
    ids = list(dict.fromkeys(message_ids))
    if not isinstance(broker, RedisBroker):
        return dict.fromkeys(ids)
    if not ids:
        return {}
    client = broker.client
    namespace = broker.namespace
    pipe = client.pipeline(transaction=False)
    for message_id in ids:
        pipe.hexists(f"{namespace}:{pool}.msgs", message_id)
    found: dict[str, str | None] = {
        message_id: None for message_id, there in zip(ids, pipe.execute(), strict=True) if there
    }
    if not found:
        return found
    # Ack sets exist only while a consumer holds messages (Redis deletes empty sets), so
    # there are about as many as busy consumers. Pool names have no dot and no glob
    # character, so ".<pool>" ends exactly this pool's sets (not its ".DQ" delay queue).
    prefix = f"{namespace}:__acks__."
    suffix = f".{pool}"
    keys = [
        key.decode() if isinstance(key, bytes) else str(key)
        for key in client.scan_iter(match=f"{prefix}*{suffix}", count=1000)
    ]
    if keys:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.smembers(key)
        for key, members in zip(keys, pipe.execute(), strict=True):
            consumer = key[len(prefix) : -len(suffix)]
            for member in members:
                message_id = member.decode() if isinstance(member, bytes) else str(member)
                if message_id in found:
                    found[message_id] = consumer
    return found


def send_admission(broker_for: Callable[[str], dramatiq.Broker]) -> Sender:
    """The scheduler's sender: an admitted job's message goes to its pool's broker."""

    def send_one(admission: Admission, limit_ms: int) -> str | None:
        return send(
            broker_for(admission.pool),
            kind=admission.kind,
            pool=admission.pool,
            job_id=admission.job_id,
            message_ref=admission.message_ref,
            time_limit_ms=limit_ms,
        )

    return send_one
