"""Domain errors and the one handler that renders them as ``{"detail": ...}``."""

from __future__ import annotations

import errno
import logging
from typing import Any

import psycopg
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.kit.db import database_full, database_unavailable

log = logging.getLogger(__name__)

# Seconds a client is asked to wait when the database cannot answer: about one
# PostgreSQL restart or failover, short enough that a retry soon finds it back.
DATABASE_RETRY_AFTER_SECONDS = 5
DATABASE_UNAVAILABLE = "the database is unavailable; try again shortly"
STORAGE_FULL = (
    "the server's storage is full; nothing of this request was kept. An administrator "
    "must free space or grow the data volume"
)
# A write refused for want of space: the disk, or the quota of the data directory's owner.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class OculabError(Exception):
    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class BadRequest(OculabError):
    status_code = 400


class Unauthorized(OculabError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(OculabError):
    status_code = 403


class NotFound(OculabError):
    status_code = 404


class Conflict(OculabError):
    status_code = 409


class PayloadTooLarge(OculabError):
    status_code = 413


class UnsupportedMediaType(OculabError):
    status_code = 415


class Unprocessable(OculabError):
    status_code = 422


class TooManyRequests(OculabError):
    status_code = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class BadGateway(OculabError):
    status_code = 502


class ServiceUnavailable(OculabError):
    status_code = 503


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def validation_problems(exc: ValidationError) -> str:
    """A model's validation errors on one line, for a person at a terminal: each
    field's location and message ("imgsz: Input should be ...")."""
    return "; ".join(
        (f"{_location(err['loc'])}: " if err["loc"] else "")
        + err["msg"].removeprefix("Value error, ")
        for err in exc.errors()
    )


def _storage_full(request: Request, exc: Exception) -> JSONResponse:
    """507 for a write the data volume had no room for (a file, or standalone's SQLite
    database in the data directory)."""
    log.error("%s %s: storage full (%s)", request.method, request.url.path, exc)
    return JSONResponse({"detail": STORAGE_FULL}, status_code=507)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OculabError)
    async def _domain(request: Request, exc: OculabError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, **exc.extra},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # The database being down, restarting or unreachable is not a bug of the request:
        # 503 with Retry-After, as /api/ready says, instead of a 500 with a traceback.
        if database_full(exc):
            return _storage_full(request, exc)
        if not database_unavailable(exc):
            raise exc
        log.warning(
            "%s %s: database unavailable (%s: %s)",
            request.method,
            request.url.path,
            exc.__class__.__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return JSONResponse(
            {"detail": DATABASE_UNAVAILABLE},
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )

    # DBAPIError covers OperationalError/InterfaceError (and the disconnects SQLAlchemy
    # wraps); TimeoutError is the pool's checkout timeout; psycopg.Error for code that
    # talks to psycopg directly. Anything else of these that is not an outage re-raises.
    for kind in (sa.exc.DBAPIError, sa.exc.TimeoutError, sa.exc.DisconnectionError, psycopg.Error):
        app.add_exception_handler(kind, _database)

    @app.exception_handler(OSError)
    async def _storage(request: Request, exc: OSError) -> JSONResponse:
        # A full data volume is the operator's to fix, and every writer cleans up what
        # it wrote (a request's temp files, a blob not yet named): 507 says so, where
        # a 500 would say the request hit a bug. Any other OSError is one.
        if exc.errno not in _FULL:
            raise exc
        return _storage_full(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors) or "invalid input"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )
