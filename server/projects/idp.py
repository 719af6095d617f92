"""Project roles granted by IdP groups (``OCULAB_OIDC_PROJECT_ROLES``): applied at each
browser login, through ``auth.service.MembershipSync``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.kit.roles import Role
from server.models.auth import User
from server.models.project import Membership, Project
from server.settings import Settings


def sync_group_memberships(db: Session, settings: Settings, user: User) -> dict[str, Role]:
    """Grant the project roles that the user's IdP groups map to; drop lapsed grants.

    Memberships an owner set by hand are never touched. Returns the roles the groups
    grant, by project name (projects that do not exist are left out).
    """
    wanted: dict[str, Role] = {}
    for group in user.groups:
        for project_name, role in settings.oidc_project_roles.get(group, {}).items():
            if project_name not in wanted or role.allows(wanted[project_name]):
                wanted[project_name] = role
    projects = (
        {p.name: p for p in db.scalars(sa.select(Project).where(Project.name.in_(wanted)))}
        if wanted
        else {}
    )
    existing = {
        m.project_id: m
        for m in db.scalars(sa.select(Membership).where(Membership.user_id == user.id))
    }
    granted: set[int] = set()
    for name, role in wanted.items():
        project = projects.get(name)
        if project is None:
            continue
        granted.add(project.id)
        membership = existing.get(project.id)
        if membership is None:
            db.add(Membership(project_id=project.id, user_id=user.id, role=role, source="idp"))
            audit.record(
                db,
                "membership.grant",
                actor=None,
                actor_name="idp",
                target_type="user",
                target_id=user.id,
                project_id=project.id,
                role=role.value,
                group_mapping=True,
            )
        elif membership.source == "idp" and membership.role != role:
            membership.role = role
    for project_id, membership in existing.items():
        if membership.source == "idp" and project_id not in granted:
            db.delete(membership)
            audit.record(
                db,
                "membership.revoke",
                actor=None,
                actor_name="idp",
                target_type="user",
                target_id=user.id,
                project_id=project_id,
                group_mapping=True,
            )
    db.flush()
    return {name: role for name, role in wanted.items() if name in projects}
