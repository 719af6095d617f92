"""What readiness checks, and the broker's state as a metric.

Readiness is what this API process needs to answer requests: the database and the
storage. Redis only carries job messages from the scheduler to the workers (and the
login rate limits, which fail open): when it blips the API still serves everything, job
submission included (a job is a row; the scheduler sends it once Redis is back), so
the broker is reported but never takes a replica out of the load balancer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server.kit.storage import Storage

log = logging.getLogger(__name__)

OK = "ok"


def _unavailable(exc: BaseException) -> str:
    return f"unavailable: {exc.__class__.__name__}"


def database(engine: sa.Engine) -> str:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: database check failed: %s", exc)
        return _unavailable(exc)
    return OK


def storage(store: Storage) -> str:
    try:
        store.check_writable()
    except OSError as exc:
        return f"unavailable: {exc.strerror or exc.__class__.__name__}"
    return OK


def broker(client: redis.Redis) -> str:
    try:
        client.ping()
    except Exception as exc:
        return _unavailable(exc)
    return OK


class BrokerCollector(Collector):
    """``oculab_broker_up``: whether this API process reaches Redis, asked at scrape time
    (readiness no longer fails for it, so this is where an outage shows)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "oculab_broker_up",
            "1 when the API reaches the job broker (Redis), else 0; readiness ignores it.",
        )
        up.add_metric([], 1.0 if broker(self.client) == OK else 0.0)
        yield up
