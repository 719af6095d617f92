from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from server.auth.dependencies import Client, CurrentPrincipal, SettingsDep
from server.images import processing
from server.images.upload import ReceivedFile, multipart_doc, receive_multipart
from server.jobs import service as jobs
from server.kit.db import DB, MAX_ID, commit_before_waiting
from server.kit.errors import (
    Conflict,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from server.kit.pagination import Cursor, Limit
from server.kit.ratelimit import enforce
from server.kit.roles import Role
from server.kit.schemas import Page
from server.kit.storage import Storage
from server.models.job import INTERACTIVE_PRIORITY, Job, JobState
from server.projects.auth import authorize_project
from server.registry import service
from server.registry.auth import ModelOwner, ModelViewer
from server.registry.schemas import ModelRead, ModelUploaded, PredictResult

router = APIRouter(prefix="/api/models", tags=["models"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="upload_model",
    openapi_extra=multipart_doc("file", text_fields=["name"]),
)
async def upload_model(
    request: Request,
    project_id: Annotated[int, Query(ge=1, le=MAX_ID)],
    principal: CurrentPrincipal,
    db: DB,
    settings: SettingsDep,
    client: Client,
) -> ModelUploaded:
    """Upload YOLO `.pt` weights (field `file`, optional field `name`) into a project.

    Weights are pickles: they are scanned here and refused if they could run code, and
    only a worker ever loads them (the `models.inspect` job fills in classes and size).
    """
    access = await run_in_threadpool(authorize_project, db, principal.user, project_id, Role.owner)
    storage: Storage = request.app.state.storage
    await commit_before_waiting(db)
    form = await receive_multipart(
        request,
        storage,
        max_file_bytes=settings.max_model_bytes,
        max_files=1,
    )
    if len(form.files) != 1:
        form.discard()
        raise Unprocessable("send exactly one weights file")
    received = form.files[0]
    name = (form.fields.get("name") or received.filename.rsplit(".", 1)[0]).strip()[:200]
    if not received.filename.lower().endswith(".pt"):
        form.discard()
        raise UnsupportedMediaType("weights must be a PyTorch .pt file")
    model, job = await run_in_threadpool(
        service.upload,
        db,
        settings,
        storage,
        request.app.state.kinds,
        access,
        received,
        name or "model",
        client.ip,
    )
    return ModelUploaded(model=service.read(db, model), inspect_job_id=job.id)


@router.get("", operation_id="list_models")
def list_models(
    principal: CurrentPrincipal,
    db: DB,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ModelRead]:
    items, next_cursor = service.list_models(db, principal.user, project_id, limit, cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{model_id}", operation_id="get_model")
def get_model(access: ModelViewer, db: DB) -> ModelRead:
    return service.read(db, access.model)


@router.get("/{model_id}/download", operation_id="download_model", response_class=FileResponse)
def download_model(access: ModelViewer, request: Request) -> FileResponse:
    storage: Storage = request.app.state.storage
    return FileResponse(
        storage.blob_file(access.model.sha256),
        media_type="application/octet-stream",
        filename=access.model.filename
        if access.model.filename.endswith(".pt")
        else f"model-{access.model.id}.pt",
        headers={"X-Content-Type-Options": "nosniff"},
    )


@router.post("/{model_id}/promote", operation_id="promote_model")
def promote_model(access: ModelOwner, db: DB, client: Client) -> ModelRead:
    service.promote(db, access.model, access.access, client.ip)
    return service.read(db, access.model)


# Any field name is taken; `files` is what the web app sends.
@router.post(
    "/{model_id}/predict", operation_id="predict", openapi_extra=multipart_doc("files", many=True)
)
async def predict(
    access: ModelViewer,
    request: Request,
    settings: SettingsDep,
    db: DB,
    conf: Annotated[float, Query(ge=0, le=1)] = 0.25,
    iou: Annotated[float, Query(ge=0, le=1)] = 0.7,
) -> PredictResult:
    """Boxes for one or more images, from a worker at interactive priority."""
    # Predict jobs go ahead of every queue and past the per-user job limits, so each
    # user gets a budget of requests (the limiter may call Redis: off the event loop).
    await run_in_threadpool(
        enforce,
        request.app.state.rate_limiter,
        f"predict-user:{access.access.user.id}",
        settings.predict_rate_limit_per_minute,
    )
    model = access.model
    try:
        service.check_ready(model)
    except service.ModelUnusable as exc:
        # The model is the addressed resource here, not a field of the body: its state
        # conflicts with the request.
        raise Conflict(exc.detail) from None
    storage: Storage = request.app.state.storage
    await commit_before_waiting(db)
    form = await receive_multipart(
        request,
        storage,
        max_file_bytes=settings.max_upload_bytes,
        max_files=settings.max_predict_images,
    )
    if not form.files:
        raise Unprocessable("no images in the request")
    try:
        await run_in_threadpool(
            _check_images, form.files, settings.max_image_pixels, settings.max_upload_bytes
        )
    except BaseException:
        form.discard()
        raise
    staged = await run_in_threadpool(service.stage_predict_files, storage, form.files)
    maker = request.app.state.sessionmaker
    user_id = access.access.user.id

    def submit() -> int:
        with maker() as db, db.begin():
            user = db.get(type(access.access.user), user_id)
            job = jobs.submit(
                db,
                settings,
                request.app.state.kinds,
                kind="models.predict",
                user=user,
                project_id=model.project_id,
                priority=INTERACTIVE_PRIORITY,
                params={"model_id": model.id, "files": staged, "conf": conf, "iou": iou},
                pool=service.predict_pool(db, settings),
            )
            return job.id

    job_id = await run_in_threadpool(submit)
    job = await _wait(
        request, job_id, settings.predict_queue_seconds, settings.predict_timeout_seconds
    )
    if job.state is JobState.succeeded and job.result is not None:
        return PredictResult(
            model_id=model.id,
            job_id=job_id,
            images=job.result["images"],
            # A result written before workers said where they ran.
            device=str(job.result.get("device", "unknown")),
            half=bool(job.result.get("half", False)),
        )
    if job.state is JobState.failed:
        raise Unprocessable(f"prediction failed: {job.error}")
    if job.started_at is None:
        # It never ran, so no worker will clean up its images.
        await run_in_threadpool(service.discard_predict_files, storage, staged)
    raise ServiceUnavailable(
        f"no worker is free to run the prediction right now (every slot of pool {job.pool!r} "
        "is busy or no worker is running); try again shortly"
    )


def _check_images(files: list[ReceivedFile], max_pixels: int, max_bytes: int) -> None:
    for received in files:
        if received.too_large:
            raise PayloadTooLarge(f"{received.filename}: larger than {max_bytes} bytes")
        try:
            processing.inspect(received.path, max_pixels=max_pixels, thumb_size=64)
        except processing.RejectedImage as exc:
            raise Unprocessable(f"{received.filename}: {exc.reason}") from exc


async def _wait(request: Request, job_id: int, queue_seconds: float, limit_seconds: float) -> Job:
    """Waits for the predict job; gives up (and cancels it) if no worker starts it."""
    maker = request.app.state.sessionmaker
    start = time.monotonic()

    def load() -> Job:
        with maker() as db:
            job = db.get(Job, job_id)
            assert isinstance(job, Job)
            return job

    while True:
        job = await run_in_threadpool(load)
        if job.state.finished:
            return job
        waited = time.monotonic() - start
        if (job.state is JobState.queued and waited > queue_seconds) or waited > limit_seconds:

            def cancel() -> Job:
                with maker() as db, db.begin():
                    fresh = db.get(Job, job_id)
                    assert isinstance(fresh, Job)
                    if not fresh.state.finished:
                        fresh.cancel_requested = True
                        if fresh.state is JobState.queued:
                            fresh.state = JobState.canceled
                            fresh.message = "nobody was free to run it"
                    return fresh

            return await run_in_threadpool(cancel)
        await asyncio.sleep(0.05)
