from __future__ import annotations

from fastapi import APIRouter

from server.annotations import editor, service
from server.annotations.schemas import (
    AnnotationsPut,
    AnnotationsRead,
    EditorStart,
    ReviewAction,
)
from server.auth.dependencies import SettingsDep
from server.images.auth import ImageAnnotator, ImageViewer
from server.kit.db import DB

router = APIRouter(prefix="/api/images/{image_id}", tags=["annotations"])


@router.get("/annotations", operation_id="get_annotations")
def get_annotations(access: ImageViewer, db: DB) -> AnnotationsRead:
    return service.read(db, access.image)


@router.put("/annotations", operation_id="put_annotations")
def put_annotations(
    body: AnnotationsPut, access: ImageAnnotator, db: DB, settings: SettingsDep
) -> AnnotationsRead:
    return service.save(
        db, settings, access.access.project, access.image, access.access.principal.user, body
    )


@router.post("/review", operation_id="review_image")
def review_image(body: ReviewAction, access: ImageAnnotator, db: DB) -> AnnotationsRead:
    return service.review(db, access.image, access.access.principal.user, body.action)


@router.get("/editor", operation_id="get_editor_start")
def get_editor_start(access: ImageViewer, db: DB) -> EditorStart:
    """What the editor opens with: the image, its project (with the caller's role), its
    boxes and its previous/next images, as the four separate endpoints give them."""
    return editor.start(db, access)
