from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from server.admin import queue, service
from server.admin.schemas import AuditRead, UserAdminRead, UserCreate, UserUpdate
from server.audit.filters import AuditFilter, Instant
from server.auth import service as auth
from server.auth.dependencies import AdminPrincipal, Client, SettingsDep
from server.jobs import service as jobs
from server.jobs.schemas import (
    DiagnosticJobs,
    DrainUpdate,
    JobRead,
    PriorityUpdate,
    QuotaPut,
    QuotaRead,
)
from server.kit.db import DB, MAX_ID
from server.kit.errors import Conflict
from server.kit.pagination import Cursor, Limit
from server.kit.schemas import Page, PathId

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/users", operation_id="admin_list_users")
def list_users(
    principal: AdminPrincipal, db: DB, limit: Limit = 100, cursor: Cursor = None
) -> Page[UserAdminRead]:
    items, next_cursor = service.list_users(db, limit, cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.post("/users", status_code=status.HTTP_201_CREATED, operation_id="admin_create_user")
def create_user(
    body: UserCreate, principal: AdminPrincipal, db: DB, settings: SettingsDep, client: Client
) -> UserAdminRead:
    if not settings.local_accounts:
        raise Conflict("local accounts are disabled (OCULAB_LOCAL_ACCOUNTS=false)")
    user = auth.create_local_user(
        db,
        body.username,
        body.password,
        is_admin=body.is_admin,
        actor=principal.user,
        client=client,
    )
    return UserAdminRead.model_validate(user)


@router.patch("/users/{user_id}", operation_id="admin_update_user")
def update_user(
    user_id: PathId, body: UserUpdate, principal: AdminPrincipal, db: DB, client: Client
) -> UserAdminRead:
    return service.update_user(db, principal.user, user_id, body, client.ip)


@router.get("/audit", operation_id="admin_audit")
def audit_log(
    principal: AdminPrincipal,
    db: DB,
    limit: Limit = 100,
    cursor: Cursor = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    actor_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    since: Annotated[Instant | None, Query(description="ISO 8601 with offset; inclusive")] = None,
    until: Annotated[Instant | None, Query(description="ISO 8601 with offset; exclusive")] = None,
) -> Page[AuditRead]:
    filters = AuditFilter(
        action=action, project_id=project_id, actor_id=actor_id, since=since, until=until
    )
    items, next_cursor = service.list_audit(db, limit, cursor, filters)
    return Page(items=items, next_cursor=next_cursor)


# --- the GPU queue ---------------------------------------------------------------------


@router.get("/queue", operation_id="admin_queue")
def queue_view(principal: AdminPrincipal, db: DB, settings: SettingsDep) -> queue.QueueView:
    return queue.view(db, settings)


@router.get("/queue/events", operation_id="admin_queue_events", response_class=StreamingResponse)
async def queue_events(
    principal: AdminPrincipal,
    settings: SettingsDep,
    request: Request,
    interval: Annotated[float, Query(ge=0.2, le=2.0)] = 2.0,
) -> StreamingResponse:
    """Server-sent events: `queue` with the whole queue view at once, then with the parts
    of it that changed (checked every `interval` seconds); a keepalive when none did."""
    return StreamingResponse(
        queue.stream(request.app.state.sessionmaker, settings, request.is_disconnected, interval),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/jobs/{job_id}/priority", operation_id="admin_job_priority")
def job_priority(
    job_id: PathId, body: PriorityUpdate, principal: AdminPrincipal, db: DB, client: Client
) -> JobRead:
    job = queue.set_priority(db, job_id, body.priority, principal.user, client.ip)
    return jobs.read(db, job)


@router.post("/workers/{worker_id}/drain", operation_id="admin_drain_worker")
def drain_worker(
    worker_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")],
    principal: AdminPrincipal,
    db: DB,
    client: Client,
    body: DrainUpdate | None = None,
) -> dict[str, object]:
    draining = body.draining if body is not None else True
    worker = queue.drain(db, worker_id, draining, principal.user, client.ip)
    return {"id": worker.id, "draining": worker.draining}


@router.get("/quotas", operation_id="admin_list_quotas")
def list_quotas(principal: AdminPrincipal, db: DB) -> list[QuotaRead]:
    return queue.list_quotas(db)


@router.put("/quotas", operation_id="admin_put_quota")
def put_quota(
    body: QuotaPut, principal: AdminPrincipal, db: DB, settings: SettingsDep, client: Client
) -> list[QuotaRead]:
    queue.put_quota(db, settings, body, principal.user, client.ip)
    return queue.list_quotas(db)


@router.post("/diagnostics/jobs", status_code=201, operation_id="admin_diagnostic_jobs")
def diagnostic_jobs(
    body: DiagnosticJobs,
    principal: AdminPrincipal,
    db: DB,
    settings: SettingsDep,
    request: Request,
) -> list[JobRead]:
    """Submits no-op (or sleeping) jobs to a pool: a smoke test of workers and queue."""
    kind = "diagnostics.sleep" if body.seconds else "diagnostics.noop"
    created = [
        jobs.submit(
            db,
            settings,
            request.app.state.kinds,
            kind=kind,
            user=principal.user,
            project_id=None,
            params={"seconds": body.seconds},
            pool=body.pool,
        )
        for _ in range(body.count)
    ]
    return [jobs.read(db, job, position=None) for job in created]
