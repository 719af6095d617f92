from __future__ import annotations

from fastapi import APIRouter, Request, status

from server.auth.dependencies import SettingsDep
from server.autolabel import service
from server.autolabel.schemas import AutolabelRequest
from server.jobs import service as jobs
from server.jobs.schemas import JobRead
from server.kit.db import DB
from server.projects.auth import ProjectAnnotator

router = APIRouter(prefix="/api/projects/{project_id}/jobs", tags=["autolabel"])


@router.post("/autolabel", status_code=status.HTTP_202_ACCEPTED, operation_id="autolabel")
def autolabel(
    body: AutolabelRequest,
    access: ProjectAnnotator,
    db: DB,
    settings: SettingsDep,
    request: Request,
) -> JobRead:
    """Pre-label images with a model (a job in a GPU pool); reviewed images are kept."""
    job = service.submit(db, settings, request.app.state.kinds, access.project, access.user, body)
    return jobs.read(db, job)
