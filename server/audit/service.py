from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from server.models.audit import AuditEvent
from server.models.auth import User


def record(
    db: Session,
    action: str,
    *,
    actor: User | None,
    target_type: str | None = None,
    target_id: int | str | None = None,
    project_id: int | None = None,
    ip: str | None = None,
    actor_name: str | None = None,
    **details: Any,
) -> AuditEvent:
    """Adds an audit event to the caller's transaction: it lands only if the change does."""
    event = AuditEvent(
        action=action,
        actor_id=actor.id if actor else None,
        actor_name=actor.username if actor else actor_name,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        project_id=project_id,
        ip=ip,
        details=details,
    )
    db.add(event)
    return event
