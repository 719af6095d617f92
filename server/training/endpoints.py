from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from server.auth.dependencies import SettingsDep
from server.jobs import service as jobs
from server.jobs.schemas import JobRead
from server.kit.db import DB
from server.projects.auth import ProjectOwner, ProjectViewer
from server.training import service
from server.training.schemas import (
    SEED_MAX,
    VAL_FRACTION_DEFAULT,
    VAL_FRACTION_MAX,
    TrainingData,
    TrainRequest,
)

router = APIRouter(prefix="/api/projects/{project_id}", tags=["training"])


@router.get("/training-data", operation_id="training_data")
def training_data(
    access: ProjectViewer,
    db: DB,
    settings: SettingsDep,
    val_fraction: Annotated[float, Query(ge=0, le=VAL_FRACTION_MAX)] = VAL_FRACTION_DEFAULT,
    seed: Annotated[int, Query(ge=0, le=SEED_MAX)] = 0,
    only_reviewed: bool = True,
) -> TrainingData:
    """The images (with their train/val split) and boxes per class a training run with
    these parameters would use now, and why it would be refused, if it would. Viewers
    may read it: it counts what they can already see image by image."""
    return service.training_data(
        db,
        settings,
        access.project,
        val_fraction=val_fraction,
        seed=seed,
        only_reviewed=only_reviewed,
    )


@router.post("/jobs/train", status_code=status.HTTP_202_ACCEPTED, operation_id="train")
def train(
    body: TrainRequest, access: ProjectOwner, db: DB, settings: SettingsDep, request: Request
) -> JobRead:
    """Train a YOLO model on the project's reviewed images (a job in a GPU pool)."""
    job = service.submit(db, settings, request.app.state.kinds, access.project, access.user, body)
    return jobs.read(db, job)
