"""Imports every domain's ORM models so ``Base.metadata`` is complete (alembic, tests)."""

from server.annotations.models import Annotation
from server.audit.models import AuditEvent
from server.auth.models import ApiToken, LoginSession, User
from server.images.models import Image
from server.jobs.models import Job, JobEvent, Quota, WorkerRow
from server.kit.db import Base
from server.models.models import RegisteredModel
from server.projects.models import Membership, Project

__all__ = [
    "Annotation",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Image",
    "Job",
    "JobEvent",
    "LoginSession",
    "Membership",
    "Project",
    "Quota",
    "RegisteredModel",
    "User",
    "WorkerRow",
]
