"""Job-scoped dependencies. A project's job follows the project's roles; a job with no
project (diagnostics) belongs to its creator and the admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy.orm import Session

from server.kit.errors import Forbidden, NotFound
from server.kit.roles import Role
from server.models.auth import User
from server.models.job import Job
from server.projects.auth import authorize_project, gate

_NOT_FOUND = "job not found"


def authorize_job(db: Session, user: User, job_id: int, *, manage: bool) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise NotFound(_NOT_FOUND)
    if user.is_admin:
        return job
    if job.project_id is None:
        if job.created_by != user.id:
            raise NotFound(_NOT_FOUND)
        return job
    access = authorize_project(db, user, job.project_id, Role.viewer, not_found=_NOT_FOUND)
    if manage and job.created_by != user.id and access.role is not Role.owner:
        raise Forbidden("only the job's creator or a project owner can do this")
    return job


def _job(manage: bool) -> Any:
    return gate("job_id", lambda db, who, id_: authorize_job(db, who, id_, manage=manage))


JobViewer = Annotated[Job, Depends(_job(manage=False))]
JobManager = Annotated[Job, Depends(_job(manage=True))]
