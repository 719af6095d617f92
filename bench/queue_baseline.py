"""The baseline for bench/job_queue.py: a plain Dramatiq actor on the same Redis.

Run by the bench as ``dramatiq queue_baseline`` with bench/ on ``PYTHONPATH`` (the bench
itself imports it the same way, as a sibling script); each message records when it was
sent and when its actor started, in a Redis list.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
RESULTS = "bench:baseline:starts"

broker = RedisBroker(url=REDIS_URL)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)
_results = redis.Redis.from_url(REDIS_URL)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(sent_at: float) -> None:
    _results.rpush(RESULTS, f"{sent_at} {time.time()}")
