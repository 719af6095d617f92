"""The authorisation gate: every project-scoped object is checked here, nowhere else.

A caller who is not a member (and not an admin) gets 404, so ids of other projects
reveal nothing. A member whose role is too weak gets 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Path
from sqlalchemy.orm import Session

from server.auth.dependencies import CurrentPrincipal
from server.kit.db import DB, MAX_ID
from server.kit.errors import Forbidden, NotFound
from server.kit.roles import Role
from server.models.auth import User
from server.models.project import Membership, Project

T = TypeVar("T")


@dataclass(frozen=True)
class ProjectAccess:
    project: Project
    role: Role
    user: User


def authorize_project(
    db: Session,
    user: User,
    project_id: int,
    needed: Role,
    *,
    not_found: str = "project not found",
) -> ProjectAccess:
    row = db.execute(
        sa.select(Project, Membership.role)
        .outerjoin(
            Membership,
            sa.and_(Membership.project_id == Project.id, Membership.user_id == user.id),
        )
        .where(Project.id == project_id)
    ).first()
    if row is None:
        raise NotFound(not_found)
    project, role = row
    return grant(user, project, role, needed, not_found=not_found)


def grant(
    user: User,
    project: Project,
    membership: Role | None,
    needed: Role,
    *,
    not_found: str = "project not found",
) -> ProjectAccess:
    """The rule, for a project and the caller's membership role (None: not a member)
    however they were loaded: admins act as owners, a non-member gets 404, too weak a
    role 403."""
    role = Role.owner if user.is_admin else membership
    if role is None:
        raise NotFound(not_found)
    if not role.allows(needed):
        raise Forbidden(f"this needs the {needed.value} role in the project (you are {role.value})")
    return ProjectAccess(project=project, role=role, user=user)


def member_project_ids(user: User) -> Any:
    """A subquery of the project ids the caller may see, for scoping list queries."""
    if user.is_admin:
        return sa.select(Project.id)
    return sa.select(Membership.project_id).where(Membership.user_id == user.id)


def gate(path_param: str, authorize: Callable[[Session, User, int], T]) -> Any:
    """A route dependency for the object the path names by ``path_param`` (an id):
    ``authorize`` loads it and checks the caller, or raises. Every object gate (projects,
    images, models, jobs) is one of these."""

    def dependency(object_id: int, principal: CurrentPrincipal, db: DB) -> T:
        return authorize(db, principal.user, object_id)

    # Set here, not in the signature: under postponed annotations FastAPI would
    # evaluate the signature's text where ``path_param`` does not exist.
    dependency.__annotations__["object_id"] = Annotated[
        int, Path(alias=path_param, ge=1, le=MAX_ID)
    ]
    return dependency


def _project(needed: Role) -> Any:
    return gate("project_id", lambda db, who, id_: authorize_project(db, who, id_, needed))


ProjectViewer = Annotated[ProjectAccess, Depends(_project(Role.viewer))]
ProjectAnnotator = Annotated[ProjectAccess, Depends(_project(Role.annotator))]
ProjectOwner = Annotated[ProjectAccess, Depends(_project(Role.owner))]
