from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from server.kit.schemas import ReadSchema
from server.models.registered_model import ModelState


class ModelRead(ReadSchema):
    id: int
    project_id: int
    name: str
    state: ModelState
    error: str | None
    source: str
    filename: str
    sha256: str
    size_bytes: int
    task: str | None
    class_names: list[str]
    imgsz: int | None
    parameters: int | None
    architecture: str | None
    base: str | None
    base_model_id: int | None
    job_id: int | None
    dataset_snapshot: str | None
    hyperparams: dict[str, Any]
    metrics: dict[str, Any]
    created_by: int | None
    created_at: dt.datetime
    promoted: bool = False


class ModelUploaded(BaseModel):
    model: ModelRead
    inspect_job_id: int


class PredictedBox(BaseModel):
    class_id: int | None  # the project's class id, None when the project lacks the class
    class_name: str
    confidence: float
    x: float
    y: float
    w: float
    h: float


class PredictedImage(BaseModel):
    filename: str
    width: int
    height: int
    boxes: list[PredictedBox]


class PredictResult(BaseModel):
    model_id: int
    job_id: int
    images: list[PredictedImage]
    device: str = Field(
        description="where the model ran: `cuda:N`, or `cpu` (also while longer jobs held "
        "every GPU slot)"
    )
    half: bool = Field(description="whether it ran in FP16")
