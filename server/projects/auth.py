"""The authorisation gate: every project-scoped object is checked here, nowhere else.

A caller who is not a member (and not an admin) gets 404, so ids of other projects
reveal nothing. A member whose role is too weak gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends
from sqlalchemy.orm import Session

from server.auth.dependencies import CurrentPrincipal, Principal
from server.kit.db import DB
from server.kit.errors import Forbidden, NotFound
from server.kit.roles import Role
from server.kit.schemas import PathId
from server.models.project import Membership, Project


@dataclass(frozen=True)
class ProjectAccess:
    project: Project
    role: Role
    principal: Principal


def authorize_project(
    db: Session,
    principal: Principal,
    project_id: int,
    needed: Role,
    *,
    not_found: str = "project not found",
) -> ProjectAccess:
    user = principal.user
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
    return grant(principal, project, role, needed, not_found=not_found)


def grant(
    principal: Principal,
    project: Project,
    membership: Role | None,
    needed: Role,
    *,
    not_found: str = "project not found",
) -> ProjectAccess:
    """The rule, for a project and the caller's membership role (None: not a member)
    however they were loaded: admins act as owners, a non-member gets 404, too weak a
    role 403."""
    role = Role.owner if principal.user.is_admin else membership
    if role is None:
        raise NotFound(not_found)
    if not role.allows(needed):
        raise Forbidden(f"this needs the {needed.value} role in the project (you are {role.value})")
    return ProjectAccess(project=project, role=role, principal=principal)


def member_project_ids(principal: Principal) -> Any:
    """A subquery of the project ids the caller may see, for scoping list queries."""
    if principal.user.is_admin:
        return sa.select(Project.id)
    return sa.select(Membership.project_id).where(Membership.user_id == principal.user.id)


def _gate(needed: Role) -> Any:
    def dependency(project_id: PathId, principal: CurrentPrincipal, db: DB) -> ProjectAccess:
        return authorize_project(db, principal, project_id, needed)

    return dependency


ProjectViewer = Annotated[ProjectAccess, Depends(_gate(Role.viewer))]
ProjectAnnotator = Annotated[ProjectAccess, Depends(_gate(Role.annotator))]
ProjectOwner = Annotated[ProjectAccess, Depends(_gate(Role.owner))]
