"""The ORM tables, one module per domain. A leaf package: it imports only ``server.kit``,
so every domain may import any table without an arrow pointing up. Importing it puts
every table on ``Base.metadata`` (alembic, tests)."""

from server.kit.db import Base
from server.models.annotation import Annotation
from server.models.audit import AuditEvent
from server.models.auth import ApiToken, LoginSession, User
from server.models.image import Image
from server.models.job import Job, JobEvent, Quota, WorkerRow
from server.models.project import Membership, Project
from server.models.registered_model import RegisteredModel

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
