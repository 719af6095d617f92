from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel

from server.kit.schemas import ReadSchema
from server.models.image import ImageStatus, Split


class ImageRead(ReadSchema):
    id: int
    project_id: int
    filename: str
    sha256: str
    format: str
    width: int
    height: int
    size_bytes: int
    status: ImageStatus
    split: Split | None
    revision: int
    created_at: dt.datetime
    annotated_at: dt.datetime | None


class ImageNeighbors(ReadSchema):
    """The images around one image, in id order (the gallery's order), for an editor's
    previous / next keys; ``next_unreviewed`` wraps around to the project's start."""

    previous: int | None
    next: int | None
    next_unreviewed: int | None


class UploadItem(BaseModel):
    filename: str
    status: Literal["created", "duplicate", "rejected"]
    image_id: int | None = None
    sha256: str | None = None
    reason: str | None = None
    kind: str | None = None


class UploadResult(BaseModel):
    created: int
    duplicate: int
    rejected: int
    items: list[UploadItem]

    @classmethod
    def from_items(cls, items: list[UploadItem]) -> UploadResult:
        return cls(
            created=sum(i.status == "created" for i in items),
            duplicate=sum(i.status == "duplicate" for i in items),
            rejected=sum(i.status == "rejected" for i in items),
            items=items,
        )
