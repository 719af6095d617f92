from __future__ import annotations

from fastapi import APIRouter, Request, status
from starlette.concurrency import run_in_threadpool

from server.auth.dependencies import Client, SettingsDep
from server.datasets import service
from server.datasets.schemas import ExportRequest
from server.images.upload import multipart_doc, receive_multipart
from server.jobs.schemas import JobRead
from server.kit.db import DB, commit_before_waiting
from server.kit.storage import Storage
from server.projects.auth import ProjectAnnotator, ProjectOwner

router = APIRouter(tags=["datasets"])


@router.post(
    "/api/projects/{project_id}/imports",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="import_dataset",
    openapi_extra=multipart_doc("file"),
)
async def import_dataset(
    request: Request, access: ProjectOwner, db: DB, settings: SettingsDep, client: Client
) -> JobRead:
    """Upload a YOLO or COCO dataset as one zip (multipart, any field name). The zip's
    directory is checked now (paths, symlinks, encryption, size and compression
    limits); images and labels are imported by the returned job. Owners only, like
    image uploads."""
    storage: Storage = request.app.state.storage
    await commit_before_waiting(db)
    form = await receive_multipart(
        request,
        storage,
        max_file_bytes=settings.max_import_bytes,
        max_files=1,
    )
    return await run_in_threadpool(
        service.start_import,
        db,
        storage,
        settings,
        request.app.state.kinds,
        access,
        form,
        client.ip,
    )


@router.post(
    "/api/projects/{project_id}/exports",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="export_dataset",
)
def export_dataset(
    body: ExportRequest,
    request: Request,
    access: ProjectAnnotator,
    db: DB,
    settings: SettingsDep,
    client: Client,
) -> JobRead:
    """Export the project as a YOLO or COCO zip; the job's artifact is the download.

    Annotators and owners only: viewers can read every image and box one at a time,
    but an export copies the whole dataset onto shared storage and takes a slot of the
    shared CPU pool, which read-only guests should not be able to spend.
    """
    return service.start_export(db, settings, request.app.state.kinds, access, body, client.ip)
