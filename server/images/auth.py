"""Image-scoped dependencies: load the image, then ask the project gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends

from server.auth.dependencies import CurrentPrincipal
from server.images.models import Image
from server.kit.db import DB
from server.kit.errors import NotFound
from server.kit.roles import Role
from server.kit.schemas import PathId
from server.projects.auth import ProjectAccess, authorize_project

_NOT_FOUND = "image not found"


@dataclass(frozen=True)
class ImageAccess:
    image: Image
    access: ProjectAccess


def _gate(needed: Role) -> Any:
    def dependency(image_id: PathId, principal: CurrentPrincipal, db: DB) -> ImageAccess:
        image = db.get(Image, image_id)
        if image is None:
            raise NotFound(_NOT_FOUND)
        access = authorize_project(db, principal, image.project_id, needed, not_found=_NOT_FOUND)
        return ImageAccess(image=image, access=access)

    return dependency


ImageViewer = Annotated[ImageAccess, Depends(_gate(Role.viewer))]
ImageAnnotator = Annotated[ImageAccess, Depends(_gate(Role.annotator))]
ImageOwner = Annotated[ImageAccess, Depends(_gate(Role.owner))]
