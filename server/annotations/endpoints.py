from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from server.annotations import editor, service
from server.annotations.schemas import (
    AnnotationsPut,
    AnnotationsRead,
    EditorStart,
    ReviewAction,
)
from server.images.auth import ImageAccess, ImageAnnotator
from server.images.unit import run_for_image
from server.kit.db import DB
from server.kit.roles import Role
from server.kit.schemas import PathId
from server.settings import Settings

router = APIRouter(prefix="/api/images/{image_id}", tags=["annotations"])


# The read and the save run in one worker-thread trip (server/images/unit.py): the
# body is validated before the caller is resolved (422 before 401/404 for a malformed
# body), everything else as with the usual dependencies.
@router.get("/annotations", operation_id="get_annotations", response_model=AnnotationsRead)
async def get_annotations(image_id: PathId, request: Request) -> Response:
    def work(db: Session, access: ImageAccess) -> AnnotationsRead:
        return service.read(db, access.image)

    return await run_for_image(request, image_id, Role.viewer, work)


@router.put("/annotations", operation_id="put_annotations", response_model=AnnotationsRead)
async def put_annotations(image_id: PathId, body: AnnotationsPut, request: Request) -> Response:
    settings: Settings = request.app.state.settings

    def work(db: Session, access: ImageAccess) -> AnnotationsRead:
        project, user = access.access.project, access.access.user
        return service.save(db, settings, project, access.image, user, body)

    return await run_for_image(request, image_id, Role.annotator, work)


@router.post("/review", operation_id="review_image")
def review_image(body: ReviewAction, access: ImageAnnotator, db: DB) -> AnnotationsRead:
    return service.review(db, access.image, access.access.user, body.action)


# Also in one worker-thread trip: on a deep link to the editor it is asked for at once
# with the page's scripts, and the fewer trips it takes, the sooner they are served.
@router.get("/editor", operation_id="get_editor_start", response_model=EditorStart)
async def get_editor_start(image_id: PathId, request: Request) -> Response:
    """What the editor opens with: the image, its project (with the caller's role), its
    boxes and its previous/next images, as the four separate endpoints give them."""
    return await run_for_image(request, image_id, Role.viewer, editor.start)
