from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.kit.db import Base, IdType, JSONType, created_at_column, id_column


class ModelState(StrEnum):
    pending = "pending"  # weights stored; a worker has not inspected them yet
    ready = "ready"
    failed = "failed"


class RegisteredModel(Base):
    """YOLO weights in the registry. The file is a blob named by its sha256."""

    __tablename__ = "models"
    __table_args__ = (sa.Index("ix_models_project_id_id", "project_id", "id"),)

    id: Mapped[int] = id_column()
    project_id: Mapped[int] = mapped_column(
        IdType, sa.ForeignKey("projects.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    state: Mapped[ModelState] = mapped_column(
        sa.Enum(
            ModelState, native_enum=False, length=16, create_constraint=True, name="model_state"
        ),
        default=ModelState.pending,
    )
    error: Mapped[str | None] = mapped_column(sa.Text)
    source: Mapped[str] = mapped_column(sa.String(16))  # "upload" | "training"
    filename: Mapped[str] = mapped_column(sa.String(255), default="weights.pt")
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    # Filled by the inspection job (uploads) or by training.
    task: Mapped[str | None] = mapped_column(sa.String(32))
    class_names: Mapped[list[str]] = mapped_column(JSONType, default=list)
    imgsz: Mapped[int | None]
    parameters: Mapped[int | None] = mapped_column(sa.BigInteger)
    architecture: Mapped[str | None] = mapped_column(sa.String(100))
    # Lineage
    base: Mapped[str | None] = mapped_column(sa.String(200))  # "yolo11n.yaml" | "model:<id>"
    base_model_id: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("models.id", ondelete="SET NULL")
    )
    # The training job that made it; unique so a redelivered job registers it once.
    job_id: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("jobs.id", ondelete="SET NULL"), unique=True
    )
    dataset_snapshot: Mapped[str | None] = mapped_column(sa.String(64))
    hyperparams: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = created_at_column()
