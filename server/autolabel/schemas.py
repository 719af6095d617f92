from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictFloat, StrictInt

from server.kit.schemas import Schema


class AutolabelRequest(Schema):
    model_id: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)] | None = Field(
        default=None, description="default: the project's promoted model"
    )
    conf: Annotated[StrictFloat, Field(ge=0, le=1)] = 0.25
    iou: Annotated[StrictFloat, Field(ge=0, le=1)] = 0.7
    # Reviewed images are never touched; "all" re-labels earlier predictions too.
    status: Literal["unlabeled", "predicted", "all"] = "unlabeled"
    batch: Annotated[StrictInt, Field(ge=1, le=256)] | None = None
    imgsz: Annotated[StrictInt, Field(ge=32, le=2048, multiple_of=32)] | None = None
    pool: Annotated[str, Field(max_length=40)] | None = None
