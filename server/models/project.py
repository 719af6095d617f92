from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.kit.db import Base, IdType, JSONType, UTCDateTime, created_at_column, id_column, utcnow
from server.kit.roles import Role


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = id_column()
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # Ordered: a box's class_id indexes this list.
    classes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # "#rrggbb" per class, parallel to ``classes``; may be shorter (classes appended by
    # an import): readers fill the rest from the default palette.
    class_colors: Mapped[list[str]] = mapped_column(
        JSONType, default=list, server_default=sa.text("'[]'")
    )
    created_by: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    # The promoted model that auto-labeling uses by default. (models.project_id points
    # back here, so this side of the cycle is added after both tables exist.)
    default_model_id: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("models.id", ondelete="SET NULL", use_alter=True)
    )
    created_at: Mapped[dt.datetime] = created_at_column()
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Membership(Base):
    __tablename__ = "memberships"

    project_id: Mapped[int] = mapped_column(
        IdType, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        IdType, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[Role] = mapped_column(
        sa.Enum(Role, native_enum=False, length=16, create_constraint=True, name="role")
    )
    # "manual" (set by an owner) or "idp" (granted by an IdP group mapping, re-synced
    # at each login).
    source: Mapped[str] = mapped_column(sa.String(16), default="manual")
    created_at: Mapped[dt.datetime] = created_at_column()
