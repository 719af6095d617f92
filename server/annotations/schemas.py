from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Literal

from pydantic import Field, StrictFloat, StrictInt, field_validator, model_validator

from server.images.schemas import ImageNeighbors, ImageRead
from server.kit.db import MAX_ID
from server.kit.schemas import ReadSchema, Schema
from server.models.annotation import BoxStatus
from server.projects.schemas import ProjectDetail

Unit = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
# Boxes that end a hair past the edge from float rounding are clamped, not refused.
_EDGE_TOLERANCE = 1e-6
_SOURCE = re.compile(r"^(manual|model:[1-9][0-9]{0,18})$")


class Box(Schema):
    class_id: Annotated[StrictInt, Field(ge=0, le=MAX_ID)]
    x: Unit
    y: Unit
    w: Annotated[StrictFloat, Field(gt=0.0, le=1.0)]
    h: Annotated[StrictFloat, Field(gt=0.0, le=1.0)]
    source: Annotated[str, Field(max_length=64)] = "manual"
    confidence: Unit | None = None
    status: BoxStatus = BoxStatus.accepted

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not _SOURCE.match(value):
            raise ValueError("source must be 'manual' or 'model:<model id>'")
        return value

    @model_validator(mode="after")
    def _inside_image(self) -> Box:
        if self.x + self.w > 1.0 + _EDGE_TOLERANCE or self.y + self.h > 1.0 + _EDGE_TOLERANCE:
            raise ValueError("box extends outside the image (x + w and y + h must be <= 1)")
        self.w = min(self.w, 1.0 - self.x)
        self.h = min(self.h, 1.0 - self.y)
        if self.w <= 0 or self.h <= 0 or math.isclose(self.w, 0.0):
            raise ValueError("box must have a positive width and height")
        return self


class AnnotationsPut(Schema):
    base_revision: Annotated[StrictInt, Field(ge=0, le=MAX_ID)]
    boxes: list[Box]


class ReviewAction(Schema):
    action: Literal["accept_all", "reject_all"]


class BoxRead(ReadSchema):
    class_id: int
    x: float
    y: float
    w: float
    h: float
    source: str
    confidence: float | None
    status: BoxStatus


class AnnotationsRead(ReadSchema):
    image_id: int
    revision: int
    status: str
    annotated_by: int | None
    annotated_at: dt.datetime | None
    boxes: list[BoxRead]


class EditorStart(ReadSchema):
    """Everything the editor needs to open an image, in one answer: the page's start
    costs one request (one session check, one image and project lookup), not four."""

    image: ImageRead
    project: ProjectDetail
    annotations: AnnotationsRead
    neighbors: ImageNeighbors
