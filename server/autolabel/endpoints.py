from __future__ import annotations

from fastapi import APIRouter, Request, status

from server.auth.dependencies import SettingsDep
from server.autolabel.schemas import AutolabelRequest
from server.jobs import service as jobs
from server.jobs.schemas import JobRead
from server.kit.db import DB
from server.kit.errors import Unprocessable
from server.models.models import ModelState, RegisteredModel
from server.projects.auth import ProjectAnnotator

router = APIRouter(prefix="/api/projects/{project_id}/jobs", tags=["autolabel"])

_STATUSES = {
    "unlabeled": ["unlabeled"],
    "predicted": ["predicted"],
    "all": ["unlabeled", "predicted"],
}


@router.post("/autolabel", status_code=status.HTTP_202_ACCEPTED, operation_id="autolabel")
def autolabel(
    body: AutolabelRequest,
    access: ProjectAnnotator,
    db: DB,
    settings: SettingsDep,
    request: Request,
) -> JobRead:
    """Pre-label images with a model (a job in a GPU pool); reviewed images are kept."""
    project = access.project
    model_id = body.model_id or project.default_model_id
    if model_id is None:
        raise Unprocessable("no model given and the project has no promoted model")
    model = db.get(RegisteredModel, model_id)
    if model is None or model.project_id != project.id:
        raise Unprocessable(f"model {model_id} is not a model of this project")
    if model.state is not ModelState.ready:
        raise Unprocessable(f"model {model_id} is not ready ({model.state.value})")
    params = body.model_dump(exclude={"pool", "status", "model_id"}) | {
        "model_id": model.id,
        "statuses": _STATUSES[body.status],
    }
    job = jobs.submit(
        db,
        settings,
        request.app.state.kinds,
        kind="autolabel.run",
        user=access.principal.user,
        project_id=project.id,
        params=params,
        pool=body.pool,
    )
    return jobs.read(db, job)
