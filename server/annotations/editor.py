"""The editor's opening: the image, its project, its boxes and its neighbours at once."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.annotations import service
from server.annotations.schemas import EditorStart
from server.images import service as images
from server.images.auth import ImageAccess
from server.projects import service as projects


def start(db: Session, access: ImageAccess) -> EditorStart:
    return EditorStart(
        image=images.read(access.image),
        project=projects.detail(db, access.access),
        annotations=service.read(db, access.image),
        neighbors=images.neighbors(db, access.image),
    )
