"""Fixed-window rate limits for login and token endpoints.

Standalone mode counts in memory; server mode counts in Redis so that every API
replica shares one budget per client.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Protocol

import redis

from server.kit.errors import TooManyRequests

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        """Count one hit; return seconds to wait when over ``limit``, else None."""


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        now = time.time()
        window = int(now // window_seconds)
        with self._lock:
            if len(self._windows) > 100_000:
                self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
            start, count = self._windows.get(key, (window, 0))
            if start != window:
                count = 0
            count += 1
            self._windows[key] = (window, count)
        if count > limit:
            return max(1, math.ceil((window + 1) * window_seconds - now))
        return None


class RedisRateLimiter:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def hit(self, key: str, limit: int, window_seconds: int) -> int | None:
        window = int(time.time() // window_seconds)
        redis_key = f"oculab:ratelimit:{key}:{window}"
        try:
            pipe = self._client.pipeline()
            pipe.incr(redis_key)
            pipe.expire(redis_key, window_seconds + 1)
            count = int(pipe.execute()[0])
        except redis.RedisError:
            # Losing the limiter must not lock everyone out of logging in.
            log.warning("rate limiter unavailable; allowing request", exc_info=True)
            return None
        if count > limit:
            return max(1, (window + 1) * window_seconds - int(time.time()))
        return None


def enforce(limiter: RateLimiter, key: str, limit: int, window_seconds: int = 60) -> None:
    retry_after = limiter.hit(key, limit, window_seconds)
    if retry_after is not None:
        raise TooManyRequests(
            f"too many attempts; try again in {retry_after} s", retry_after=retry_after
        )
