"""Image-scoped dependencies: load the image, then ask the project gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends
from sqlalchemy.orm import Session

from server.kit.errors import NotFound
from server.kit.roles import Role
from server.models.auth import User
from server.models.image import Image
from server.models.project import Membership, Project
from server.projects.auth import ProjectAccess, gate, grant

_NOT_FOUND = "image not found"

# The image, its project and the caller's membership in one round trip: every image
# request (the editor's saves above all) pays for this gate.
_IMAGE_PROJECT_ROLE = (
    sa.select(Image, Project, Membership.role)
    .join(Project, Project.id == Image.project_id)
    .outerjoin(
        Membership,
        sa.and_(
            Membership.project_id == Image.project_id,
            Membership.user_id == sa.bindparam("user_id"),
        ),
    )
    .where(Image.id == sa.bindparam("image_id"))
)


@dataclass(frozen=True)
class ImageAccess:
    image: Image
    access: ProjectAccess


def authorize_image(db: Session, user: User, image_id: int, needed: Role) -> ImageAccess:
    """The image if the caller holds ``needed`` in its project (the project gate's rule;
    a non-member gets 404, as for an image that does not exist), in one query."""
    row = db.execute(_IMAGE_PROJECT_ROLE, {"image_id": image_id, "user_id": user.id}).first()
    if row is None:
        raise NotFound(_NOT_FOUND)
    image, project, role = row
    return ImageAccess(image=image, access=grant(user, project, role, needed, not_found=_NOT_FOUND))


def _image(needed: Role) -> Any:
    return gate("image_id", lambda db, who, id_: authorize_image(db, who, id_, needed))


ImageViewer = Annotated[ImageAccess, Depends(_image(Role.viewer))]
ImageAnnotator = Annotated[ImageAccess, Depends(_image(Role.annotator))]
ImageOwner = Annotated[ImageAccess, Depends(_image(Role.owner))]
