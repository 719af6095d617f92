"""Job-scoped dependencies. A project's job follows the project's roles; a job with no
project (diagnostics) belongs to its creator and the admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy.orm import Session

from server.auth.dependencies import CurrentPrincipal, Principal
from server.kit.db import DB
from server.kit.errors import Forbidden, NotFound
from server.kit.roles import Role
from server.kit.schemas import PathId
from server.models.job import Job
from server.projects.auth import authorize_project

_NOT_FOUND = "job not found"


def authorize_job(db: Session, principal: Principal, job_id: int, *, manage: bool) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise NotFound(_NOT_FOUND)
    user = principal.user
    if user.is_admin:
        return job
    if job.project_id is None:
        if job.created_by != user.id:
            raise NotFound(_NOT_FOUND)
        return job
    access = authorize_project(db, principal, job.project_id, Role.viewer, not_found=_NOT_FOUND)
    if manage and job.created_by != user.id and access.role is not Role.owner:
        raise Forbidden("only the job's creator or a project owner can do this")
    return job


def _gate(manage: bool) -> Any:
    def dependency(job_id: PathId, principal: CurrentPrincipal, db: DB) -> Job:
        return authorize_job(db, principal, job_id, manage=manage)

    return dependency


JobViewer = Annotated[Job, Depends(_gate(manage=False))]
JobManager = Annotated[Job, Depends(_gate(manage=True))]
