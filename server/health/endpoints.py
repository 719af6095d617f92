from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from server import __version__
from server.health import checks
from server.kit.errors import DATABASE_RETRY_AFTER_SECONDS

router = APIRouter(tags=["health"])

# Checks that decide readiness; the others are reported only (see server/health/checks.py).
REQUIRED = ("database", "storage")


@router.get("/api/health", operation_id="health")
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


def _checks(request: Request) -> dict[str, str]:
    state = request.app.state
    results = {
        "database": checks.database(state.engine),
        "storage": checks.storage(state.storage),
    }
    if state.redis is not None:
        results["broker"] = checks.broker(state.redis)
    return results


@router.get("/api/ready", operation_id="ready")
async def ready(request: Request) -> JSONResponse:
    results = await run_in_threadpool(_checks, request)
    ok = all(results[name] == checks.OK for name in REQUIRED)
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "version": __version__, "checks": results},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
