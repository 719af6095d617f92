from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from server.auth.dependencies import Client, CurrentPrincipal, SettingsDep
from server.jobs import service
from server.jobs.auth import JobManager, JobViewer
from server.jobs.schemas import JobEventRead, JobRead
from server.jobs.stream import stream_job
from server.kit.db import DB, MAX_ID
from server.kit.errors import BadRequest, NotFound, Unprocessable
from server.kit.pagination import Cursor, Limit
from server.kit.schemas import Page
from server.kit.storage import Storage
from server.models.job import JobState

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("", operation_id="list_jobs")
def list_jobs(
    principal: CurrentPrincipal,
    request: Request,
    db: DB,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    state: JobState | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    mine: bool = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[JobRead]:
    if kind is not None and kind not in request.app.state.kinds:
        raise Unprocessable(f"unknown job kind {kind!r}")
    items, next_cursor = service.list_for(
        db,
        principal.user,
        project_id=project_id,
        state=state,
        kind=kind,
        mine=mine,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{job_id}", operation_id="get_job")
def get_job(job: JobViewer, db: DB) -> JobRead:
    return service.read(db, job)


@router.post("/{job_id}/cancel", operation_id="cancel_job")
def cancel_job(
    job: JobManager, principal: CurrentPrincipal, db: DB, client: Client, settings: SettingsDep
) -> JobRead:
    canceled = service.cancel(
        db, job, principal.user, client.ip, heartbeat_timeout=settings.heartbeat_timeout_seconds
    )
    return service.read(db, canceled)


@router.get("/{job_id}/logs", operation_id="job_logs")
def job_logs(
    job: JobViewer, db: DB, after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0
) -> list[JobEventRead]:
    return service.events_after(db, job.id, after, ("log", "state"))


@router.get("/{job_id}/metrics", operation_id="job_metrics", response_model=list[JobEventRead])
def job_metrics(job: JobViewer, db: DB) -> Response:
    # A run's every epoch (the run page's charts): built as JSON straight from the rows.
    return Response(service.events_json(db, job.id, ("metrics",)), media_type="application/json")


# Sent as attachments (FileResponse's filename) with nosniff: a browser saves, never renders.
_ARTIFACT_TYPES = {".zip": "application/zip", ".csv": "text/csv; charset=utf-8"}


@router.get("/{job_id}/artifact", operation_id="job_artifact", response_class=FileResponse)
def job_artifact(job: JobViewer, request: Request) -> FileResponse:
    if job.state != JobState.succeeded or not job.artifact_path:
        raise NotFound("this job has no artifact (yet)")
    storage: Storage = request.app.state.storage
    path = storage.root / job.artifact_path
    if not path.is_file():
        raise NotFound("the artifact is missing from storage")
    return FileResponse(
        path,
        media_type=_ARTIFACT_TYPES.get(path.suffix, "application/octet-stream"),
        filename=f"oculab-{job.kind.rsplit('.', 1)[-1]}-{job.id}{path.suffix}",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _event_id(value: str) -> int:
    """An event id we sent: ASCII digits within the id column's range. ``isdigit``
    alone accepts "²" (which ``int`` refuses) and values that overflow the column."""
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        raise BadRequest("Last-Event-ID must be an event id (a non-negative integer)")
    return int(value)


@router.get("/{job_id}/events", operation_id="job_events", response_class=StreamingResponse)
async def job_events(
    job: JobViewer,
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Server-sent events: `snapshot`, then `state`, `progress`, `log`, `metrics`, `end`."""
    if last_event_id:
        after = max(after, _event_id(last_event_id))
    maker = request.app.state.sessionmaker
    job_id = job.id

    def snapshot() -> JobRead:
        with maker() as db:
            return service.read(db, service.get(db, job_id))

    def fetch(last: int) -> list[JobEventRead]:
        with maker() as db:
            return service.events_after(db, job_id, last)

    return StreamingResponse(
        stream_job(
            job_id,
            after,
            snapshot=snapshot,
            fetch=fetch,
            hub=request.app.state.event_hub,
            is_disconnected=request.is_disconnected,
            poll_seconds=0.5,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
