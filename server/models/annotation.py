from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.kit.db import Base, IdType, id_column


class BoxStatus(StrEnum):
    predicted = "predicted"
    accepted = "accepted"
    rejected = "rejected"


class Annotation(Base):
    """One box. x, y are the top-left corner; all four numbers are normalised to [0, 1]."""

    __tablename__ = "annotations"

    id: Mapped[int] = id_column()
    image_id: Mapped[int] = mapped_column(
        IdType, sa.ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]  # order within the image, as the client sent it
    class_id: Mapped[int]
    x: Mapped[float]
    y: Mapped[float]
    w: Mapped[float]
    h: Mapped[float]
    source: Mapped[str] = mapped_column(sa.String(64), default="manual")
    confidence: Mapped[float | None]
    status: Mapped[BoxStatus] = mapped_column(
        sa.Enum(BoxStatus, native_enum=False, length=16, create_constraint=True, name="box_status"),
        default=BoxStatus.accepted,
    )
