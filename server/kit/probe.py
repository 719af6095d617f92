"""``GET /healthz`` for the processes that serve no API (scheduler, worker), for
Kubernetes liveness and readiness probes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

# (healthy, body): 200 or 503 with the body as JSON.
Check = Callable[[], tuple[bool, dict[str, Any]]]


class Freshness:
    """How long ago something last succeeded (a scheduler pass, a worker heartbeat),
    and whether that is within ``limit_seconds``."""

    def __init__(self, limit_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_seconds = limit_seconds
        self.clock = clock
        self._last: float | None = None

    def mark(self) -> None:
        self._last = self.clock()

    def age(self) -> float | None:
        """Seconds since the last mark; None before the first."""
        return None if self._last is None else self.clock() - self._last

    def fresh(self) -> bool:
        return self.reading()[0]

    def reading(self) -> tuple[bool, float | None]:
        """Whether fresh, and the age it was judged by: one clock reading for both, so
        a probe's status and the age in its body always agree."""
        age = self.age()
        return age is not None and age <= self.limit_seconds, age


def handler(check: Check, other: type[BaseHTTPRequestHandler] | None = None) -> type:
    """A request handler answering ``/healthz`` from ``check``; every other GET goes to
    ``other`` (the worker's Prometheus exposition), or is a 404."""
    base: type[BaseHTTPRequestHandler] = other or BaseHTTPRequestHandler

    class Handler(base):  # type: ignore[valid-type, misc]
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/healthz":
                try:
                    ok, body = check()
                except Exception as exc:  # a probe must answer, not hang up
                    log.warning("health check failed", exc_info=True)
                    ok, body = False, {"error": str(exc)}
                self._json(200 if ok else 503, body)
            elif other is not None:
                super().do_GET()
            else:
                self._json(404, {"detail": "not found"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


def serve(host: str, port: int, check: Check) -> HTTPServer:
    """Binds (raising OSError when the port is taken); the caller runs serve_forever."""
    server = ThreadingHTTPServer((host, port), handler(check))
    server.daemon_threads = True
    return server
