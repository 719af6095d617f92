from __future__ import annotations

import datetime as dt
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.kit.db import Base, IdType, UTCDateTime, created_at_column, id_column


class ImageStatus(StrEnum):
    unlabeled = "unlabeled"  # nobody and no model has labelled it yet
    predicted = "predicted"  # holds model boxes that no person has reviewed
    reviewed = "reviewed"  # a person saved or reviewed its boxes


class Split(StrEnum):
    train = "train"
    val = "val"
    test = "test"


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "sha256"),
        # Keyset pages: WHERE project_id = ? [AND status = ?] AND id > ? ORDER BY id.
        sa.Index("ix_images_project_id_id", "project_id", "id"),
        sa.Index("ix_images_project_id_status_id", "project_id", "status", "id"),
        sa.Index("ix_images_project_id_split_id", "project_id", "split", "id"),
        # The review queue: WHERE project_id = ? AND status = ? ORDER BY min_confidence, id.
        sa.Index(
            "ix_images_project_id_status_min_confidence_id",
            "project_id",
            "status",
            "min_confidence",
            "id",
        ),
    )

    id: Mapped[int] = id_column()
    project_id: Mapped[int] = mapped_column(
        IdType, sa.ForeignKey("projects.id", ondelete="CASCADE")
    )
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    filename: Mapped[str] = mapped_column(sa.String(255))
    format: Mapped[str] = mapped_column(sa.String(8))
    width: Mapped[int]
    height: Mapped[int]
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[ImageStatus] = mapped_column(
        sa.Enum(
            ImageStatus, native_enum=False, length=16, create_constraint=True, name="image_status"
        ),
        default=ImageStatus.unlabeled,
    )
    split: Mapped[Split | None] = mapped_column(
        sa.Enum(Split, native_enum=False, length=8, create_constraint=True, name="split")
    )
    # Bumped on every annotation write; PUT must name the revision it started from.
    revision: Mapped[int] = mapped_column(default=0)
    # The lowest confidence among the image's predicted boxes (a box without one counts
    # as 0); NULL when it has none. Kept by the one box write (annotations/boxes.py,
    # replace_boxes), so the review queue reads it from an index instead of scanning
    # boxes per page.
    min_confidence: Mapped[float | None]
    uploaded_by: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = created_at_column()
    annotated_by: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    annotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
