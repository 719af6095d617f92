"""Submitting an auto-label run."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.autolabel.schemas import AutolabelRequest
from server.jobs import service as jobs
from server.jobs.kinds import JobKind
from server.kit.errors import Unprocessable
from server.models.auth import User
from server.models.job import Job
from server.models.project import Project
from server.registry.service import ready_model
from server.settings import Settings

# The image statuses each choice of the request labels; reviewed images never.
_STATUSES = {
    "unlabeled": ["unlabeled"],
    "predicted": ["predicted"],
    "all": ["unlabeled", "predicted"],
}


def submit(
    db: Session,
    settings: Settings,
    kinds: dict[str, JobKind],
    project: Project,
    user: User,
    body: AutolabelRequest,
) -> Job:
    """Queues an auto-label run with the given model, or the project's promoted one;
    it must be the project's and ready (the job checks again when it starts)."""
    model_id = body.model_id or project.default_model_id
    if model_id is None:
        raise Unprocessable("no model given and the project has no promoted model")
    model = ready_model(db, project.id, model_id)
    params = body.model_dump(exclude={"pool", "status", "model_id"}) | {
        "model_id": model.id,
        "statuses": _STATUSES[body.status],
    }
    return jobs.submit(
        db,
        settings,
        kinds,
        kind="autolabel.run",
        user=user,
        project_id=project.id,
        params=params,
        pool=body.pool,
    )
