from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from server import __version__

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/api/health", operation_id="health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


def _checks(request: Request) -> dict[str, str]:
    results: dict[str, str] = {}
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        results["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database check failed: %s", exc)
        results["database"] = f"unavailable: {exc.__class__.__name__}"
    redis_client = request.app.state.redis
    if redis_client is not None:
        try:
            redis_client.ping()
            results["broker"] = "ok"
        except Exception as exc:
            results["broker"] = f"unavailable: {exc.__class__.__name__}"
    try:
        request.app.state.storage.check_writable()
        results["storage"] = "ok"
    except OSError as exc:
        results["storage"] = f"unavailable: {exc.strerror or exc.__class__.__name__}"
    return results


@router.get("/api/ready", operation_id="ready")
async def ready(request: Request) -> JSONResponse:
    checks = await run_in_threadpool(_checks, request)
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "version": __version__, "checks": checks},
        status_code=200 if ok else 503,
    )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
