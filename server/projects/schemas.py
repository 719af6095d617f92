from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, Field

from server.kit.roles import Role
from server.kit.schemas import Description, Name, ReadSchema, Schema

MAX_CLASSES = 1000

ClassName = Annotated[str, Field(min_length=1, max_length=100)]


def _unique_classes(classes: list[str]) -> list[str]:
    seen: set[str] = set()
    for name in classes:
        if not name.strip():
            raise ValueError("class names must not be blank")
        key = name.strip().casefold()
        if key in seen:
            raise ValueError(f"duplicate class name {name!r}")
        seen.add(key)
    return [name.strip() for name in classes]


Classes = Annotated[list[ClassName], Field(max_length=MAX_CLASSES), AfterValidator(_unique_classes)]


class ProjectCreate(Schema):
    name: Name
    description: Description = ""
    classes: Classes = Field(default_factory=list)


class ProjectUpdate(Schema):
    name: Name | None = None
    description: Description | None = None
    classes: Classes | None = None


class ImageCounts(ReadSchema):
    total: int = 0
    unlabeled: int = 0
    predicted: int = 0
    reviewed: int = 0


class ProjectRead(ReadSchema):
    id: int
    name: str
    description: str
    classes: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    role: Role


class ProjectDetail(ProjectRead):
    images: ImageCounts


class MemberPut(Schema):
    role: Role


class MemberRead(ReadSchema):
    user_id: int
    username: str
    display_name: str | None
    email: str | None
    role: Role
    source: str
