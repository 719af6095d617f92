from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.admin.schemas import AuditRead, UserAdminRead, UserUpdate
from server.audit import service as audit
from server.audit.filters import AuditFilter
from server.auth import service as auth
from server.kit.errors import Conflict, NotFound
from server.kit.pagination import decode_cursor, page
from server.models.audit import AuditEvent
from server.models.auth import User


def list_users(
    db: Session, limit: int, cursor: str | None
) -> tuple[list[UserAdminRead], str | None]:
    after = decode_cursor(cursor)
    stmt = sa.select(User).order_by(User.id).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(User.id > after)
    return page(list(db.scalars(stmt)), limit, UserAdminRead.model_validate)


def _other_active_admins(db: Session, user: User) -> int:
    return (
        db.scalar(
            sa.select(sa.func.count())
            .select_from(User)
            .where(User.is_admin.is_(True), User.is_active.is_(True), User.id != user.id)
        )
        or 0
    )


def update_user(
    db: Session, actor: User, user_id: int, body: UserUpdate, ip: str | None
) -> UserAdminRead:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    losing_admin = (body.is_active is False or body.is_admin is False) and user.is_admin
    if losing_admin and user.is_active and _other_active_admins(db, user) == 0:
        raise Conflict("this is the last active administrator")
    changes: dict[str, Any] = {}
    if body.password is not None:
        if not user.is_local:
            raise Conflict(
                "only local accounts have a password here; SSO users change it at "
                "their identity provider"
            )
        auth.set_password(db, user, body.password)
        changes["password"] = "changed"  # noqa: S105
    if body.is_admin is not None and body.is_admin != user.is_admin:
        user.is_admin = body.is_admin
        changes["is_admin"] = body.is_admin
    if body.is_active is not None and body.is_active != user.is_active:
        user.is_active = body.is_active
        changes["is_active"] = body.is_active
        if not body.is_active:
            auth.revoke_user_sessions(db, user)
    db.flush()
    if changes:
        audit.record(
            db, "user.update", actor=actor, target_type="user", target_id=user.id, ip=ip, **changes
        )
    return UserAdminRead.model_validate(user)


def list_audit(
    db: Session, limit: int, cursor: str | None, filters: AuditFilter
) -> tuple[list[AuditRead], str | None]:
    before = decode_cursor(cursor)
    stmt = (
        sa.select(AuditEvent)
        .where(*filters.where())
        .order_by(AuditEvent.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        stmt = stmt.where(AuditEvent.id < before)
    return page(list(db.scalars(stmt)), limit, AuditRead.model_validate)
