from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.kit.db import Base, IdType, JSONType, created_at_column, id_column


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = id_column()
    created_at: Mapped[dt.datetime] = created_at_column()
    # No foreign keys: the trail must outlive the users and objects it names.
    actor_id: Mapped[int | None] = mapped_column(IdType, index=True)
    actor_name: Mapped[str | None] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(sa.String(32))
    target_id: Mapped[str | None] = mapped_column(sa.String(64))
    project_id: Mapped[int | None] = mapped_column(IdType, index=True)
    ip: Mapped[str | None] = mapped_column(sa.String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
