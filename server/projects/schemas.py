from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from server.kit.roles import Role
from server.kit.schemas import Description, Name, ReadSchema, Schema

MAX_CLASSES = 1000
MAX_CLASS_NAME_LENGTH = 100

ClassName = Annotated[str, Field(min_length=1, max_length=MAX_CLASS_NAME_LENGTH)]


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

# Distinct, readable on photos; class i gets PALETTE[i % len(PALETTE)] unless it has its own.
# frontend/src/features/projects/palette.ts holds the same list.
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
    "#000075",
    "#a9a9a9",
    "#ffe119",
)

Color = Annotated[
    str,
    Field(pattern=r"^#[0-9a-fA-F]{6}$", examples=["#e6194b"]),
    AfterValidator(str.lower),
]
ClassColors = Annotated[
    list[Color],
    Field(
        max_length=MAX_CLASSES,
        description="'#rrggbb' per class, parallel to classes; missing ones use the palette.",
    ),
]


def class_colors(classes: list[str], colors: list[str]) -> list[str]:
    """One colour per class: its own, else the palette's."""
    return [
        colors[i] if i < len(colors) else PALETTE[i % len(PALETTE)] for i in range(len(classes))
    ]


class ProjectCreate(Schema):
    name: Name
    description: Description = ""
    classes: Classes = Field(default_factory=list)
    class_colors: ClassColors = Field(default_factory=list)

    @model_validator(mode="after")
    def _colors_fit(self) -> ProjectCreate:
        if len(self.class_colors) > len(self.classes):
            raise ValueError("class_colors has more entries than classes")
        return self


class ProjectUpdate(Schema):
    name: Name | None = None
    description: Description | None = None
    classes: Classes | None = None
    class_colors: ClassColors | None = None


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
    class_colors: list[str] = Field(description="'#rrggbb' per class, parallel to classes.")
    created_at: dt.datetime
    updated_at: dt.datetime
    role: Role


class SplitCounts(ReadSchema):
    """Image counts by status within each split (``none``: images without a split)."""

    train: ImageCounts = Field(default_factory=ImageCounts)
    val: ImageCounts = Field(default_factory=ImageCounts)
    test: ImageCounts = Field(default_factory=ImageCounts)
    none: ImageCounts = Field(default_factory=ImageCounts)


class ProjectDetail(ProjectRead):
    images: ImageCounts = Field(default_factory=ImageCounts)
    images_by_split: SplitCounts = Field(default_factory=SplitCounts)


class MemberPut(Schema):
    role: Role


class MemberRead(ReadSchema):
    user_id: int
    username: str
    display_name: str | None
    email: str | None
    role: Role
    source: str
