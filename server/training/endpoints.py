from __future__ import annotations

from fastapi import APIRouter, Request, status

from server.auth.dependencies import SettingsDep
from server.jobs import service as jobs
from server.jobs.schemas import JobRead
from server.kit.db import DB
from server.kit.errors import Unprocessable
from server.models.models import ModelState, RegisteredModel
from server.projects.auth import ProjectOwner
from server.training.schemas import TrainRequest

router = APIRouter(prefix="/api/projects/{project_id}/jobs", tags=["training"])


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, operation_id="train")
def train(
    body: TrainRequest, access: ProjectOwner, db: DB, settings: SettingsDep, request: Request
) -> JobRead:
    """Train a YOLO model on the project's reviewed images (a job in a GPU pool)."""
    project = access.project
    if not project.classes:
        raise Unprocessable("the project has no classes to train")
    base = str(body.base)
    if base.isdigit():
        model = db.get(RegisteredModel, int(base))
        if model is None or model.project_id != project.id:
            raise Unprocessable(f"base model {base} is not a model of this project")
        if model.state is not ModelState.ready:
            raise Unprocessable(f"base model {base} is not ready ({model.state.value})")
        base = f"model:{model.id}"
    params = body.model_dump(exclude={"pool"}) | {"base": base}
    job = jobs.submit(
        db,
        settings,
        request.app.state.kinds,
        kind="training.train",
        user=access.principal.user,
        project_id=project.id,
        params=params,
        pool=body.pool,
    )
    return jobs.read(db, job)
