from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from server.kit.schemas import ReadSchema, Schema
from server.models.job import JobState


class JobRead(ReadSchema):
    id: int
    kind: str
    project_id: int | None
    state: JobState
    progress: float
    message: str
    pool: str
    priority: int
    position: int | None = Field(
        default=None, description="Place in the pool's line while waiting (1 = next)."
    )
    worker: str | None = Field(validation_alias="worker_id")
    gpu: int | None = Field(validation_alias="gpu_index")
    attempts: int
    max_attempts: int
    created_by: int | None
    created_by_name: str | None = None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    params: dict[str, Any]
    result: dict[str, Any] | None
    has_artifact: bool


class JobEventRead(ReadSchema):
    id: int
    created_at: dt.datetime
    kind: str
    data: dict[str, Any]


class PriorityUpdate(Schema):
    priority: Annotated[StrictInt, Field(ge=-999, le=999)]


class DrainUpdate(Schema):
    draining: StrictBool = True


class QuotaPut(Schema):
    user_id: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
    pool: Annotated[str, Field(min_length=1, max_length=40)]
    max_running: Annotated[StrictInt, Field(ge=0, le=1000)] | None = Field(
        description="null removes the quota (the default limit applies again)"
    )


class QuotaRead(ReadSchema):
    user_id: int
    username: str | None = None
    pool: str
    max_running: int


class DiagnosticJobs(Schema):
    pool: Annotated[str, Field(min_length=1, max_length=40)]
    count: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    seconds: Annotated[StrictFloat, Field(ge=0, le=3600)] = 0
