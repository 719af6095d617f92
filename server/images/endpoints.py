from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.auth.dependencies import Client, SettingsDep
from server.images import service
from server.images.auth import ImageAccess, ImageOwner, ImageViewer
from server.images.processing import CONTENT_TYPES, download_name
from server.images.schemas import ImageNeighbors, ImageRead, UploadResult
from server.images.unit import in_one_trip
from server.images.upload import multipart_doc, receive_multipart
from server.kit.db import DB, commit_before_waiting
from server.kit.errors import Unprocessable
from server.kit.pagination import Cursor, Limit
from server.kit.roles import Role
from server.kit.schemas import Page, PathId
from server.kit.storage import Storage
from server.models.image import ImageStatus, Split
from server.projects.auth import ProjectOwner, ProjectViewer
from server.settings import Settings

router = APIRouter(tags=["images"])

# Content-addressed: the bytes behind a URL never change.
_FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, max-age=31536000, immutable",
}


def _storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


@router.post(
    "/api/projects/{project_id}/images",
    status_code=status.HTTP_201_CREATED,
    operation_id="upload_images",
    openapi_extra=multipart_doc("files", many=True),
)
async def upload_images(
    request: Request,
    response: Response,
    access: ProjectOwner,
    db: DB,
    settings: SettingsDep,
    client: Client,
    split: Split | None = None,
) -> UploadResult:
    """Upload one or more images (multipart, any field name). Per-file outcome."""
    storage = _storage(request)
    with service.receiving():
        await commit_before_waiting(db)
        # Decoding starts as each file arrives, in the decode pool, while the rest streams in.
        intake = service.Intake(storage, settings)
        try:
            form = await receive_multipart(
                request,
                storage,
                max_file_bytes=settings.max_upload_bytes,
                max_files=settings.max_files_per_request,
                on_file=intake.add,
                memory_budget=service.UPLOAD_MEMORY_BYTES,
            )
        except Exception:
            # Off the event loop: the storage's threads may still be writing its files.
            await run_in_threadpool(intake.abandon)
            raise
        except BaseException:
            intake.abandon(wait=False)  # cancelled: nothing more may be awaited
            raise
        if not form.files:
            form.discard()
            raise Unprocessable("no files in the request")
        result = await run_in_threadpool(
            service.ingest,
            db,
            storage,
            settings,
            access.project,
            access.user,
            form.files,
            split,
            intake,
        )
    if result.created == 0:
        response.status_code = status.HTTP_200_OK
    return result


@router.get("/api/projects/{project_id}/images", operation_id="list_images")
def list_images(
    access: ProjectViewer,
    db: DB,
    limit: Limit = 100,
    cursor: Cursor = None,
    status: Annotated[ImageStatus | None, Query()] = None,
    split: Annotated[Split | None, Query()] = None,
    order: Annotated[service.ImageOrder, Query()] = "id",
) -> Page[ImageRead]:
    """Images by id (the gallery), or with ``order=confidence`` the lowest confidence
    among each image's predicted boxes first (the review queue)."""
    items, next_cursor = service.list_images(
        db,
        access.project.id,
        status=status,
        split=split,
        limit=limit,
        cursor=cursor,
        order=order,
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/api/images/{image_id}", operation_id="get_image")
def get_image(access: ImageViewer) -> ImageRead:
    return service.read(access.image)


@router.get("/api/images/{image_id}/neighbors", operation_id="get_image_neighbors")
def get_image_neighbors(access: ImageViewer, db: DB) -> ImageNeighbors:
    return service.neighbors(db, access.image)


@router.get(
    "/api/images/{image_id}/file", operation_id="get_image_file", response_class=FileResponse
)
def get_image_file(access: ImageViewer, request: Request) -> FileResponse:
    image = access.image
    return FileResponse(
        service.file_path(_storage(request), image),
        media_type=CONTENT_TYPES[image.format],
        headers={**_FILE_HEADERS, "ETag": f'"{image.sha256}"'},
        content_disposition_type="inline",
        filename=download_name(image.filename, image.format),
    )


@router.get(
    "/api/images/{image_id}/thumbnail",
    operation_id="get_image_thumbnail",
    response_class=FileResponse,
)
async def get_image_thumbnail(image_id: PathId, request: Request) -> Response:
    # A gallery asks for these by the hundred, and an editor's deep link with its
    # scripts: the caller, the gate and the read of a few KB in one worker-thread trip
    # (a FileResponse would add one per read besides the dependencies' own).
    settings: Settings = request.app.state.settings
    storage = _storage(request)

    def work(db: Session, access: ImageAccess) -> tuple[bytes, str]:
        image = access.image
        return service.thumbnail_path(storage, settings, image).read_bytes(), image.sha256

    content, sha256 = await in_one_trip(request, image_id, Role.viewer, work)
    return Response(
        content, media_type="image/jpeg", headers={**_FILE_HEADERS, "ETag": f'"t-{sha256}"'}
    )


@router.delete(
    "/api/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_image"
)
def delete_image(access: ImageOwner, request: Request, db: DB, client: Client) -> None:
    service.delete(db, _storage(request), access.image, access.access.user, client.ip)
