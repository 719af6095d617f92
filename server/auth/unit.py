"""One request's whole unit of work in one worker-thread trip, for the hot requests.

FastAPI runs each sync dependency in its own trip to the thread pool: the session (in
and out), the caller and the endpoint make four per request, and under load each trip
costs more CPU than the queries it wraps (GIL hand-overs, thread wake-ups). Requests
every page makes (``GET /api/me``), and the image requests built on this
(server/images/unit.py), instead run everything here in one trip, with the same steps
and rules as the ``DB`` and ``CurrentPrincipal`` dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from server.auth.dependencies import CSRF_HEADER, Principal, resolve_principal

T = TypeVar("T")


def as_caller(request: Request, work: Callable[[Session, Principal], T]) -> T:
    """What ``work`` returns for the request's caller, in a session committed before the
    answer is sent (as ``kit.db.get_db``). Runs in the calling thread."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as db:
        try:
            csrf_sent = request.headers.get(CSRF_HEADER, "")
            principal = resolve_principal(request, db, request.app.state.settings, csrf_sent)
            answer = work(db, principal)
            db.commit()
        except BaseException:
            db.rollback()
            raise
    return answer


async def in_one_trip(request: Request, work: Callable[[Session, Principal], T]) -> T:
    """``as_caller`` in one trip to the thread pool."""
    return await run_in_threadpool(as_caller, request, work)
