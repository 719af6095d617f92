from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.kit.db import Base, IdType, JSONType, UTCDateTime, created_at_column, id_column


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.canceled)


# Interactive requests (predict) run ahead of all batch work and are not held back by
# their user's concurrent-job limit; admins may set batch priorities below this.
INTERACTIVE_PRIORITY = 1000


class Job(Base):
    """One unit of work. This row, not the broker, is the truth about it."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The scheduler's scan: waiting jobs of a pool in priority order.
        sa.Index("ix_jobs_state_pool_priority_id", "state", "pool", "priority", "id"),
        sa.Index("ix_jobs_project_id_id", "project_id", "id"),
        sa.Index("ix_jobs_created_by_id", "created_by", "id"),
        sa.Index("ix_jobs_worker_id_state", "worker_id", "state"),
    )

    id: Mapped[int] = id_column()
    kind: Mapped[str] = mapped_column(sa.String(64))
    project_id: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("projects.id", ondelete="CASCADE")
    )
    created_by: Mapped[int | None] = mapped_column(
        IdType, sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    pool: Mapped[str] = mapped_column(sa.String(40))
    priority: Mapped[int] = mapped_column(default=0)
    state: Mapped[JobState] = mapped_column(
        sa.Enum(JobState, native_enum=False, length=16, create_constraint=True, name="job_state"),
        default=JobState.queued,
    )
    progress: Mapped[float] = mapped_column(default=0.0)
    message: Mapped[str] = mapped_column(sa.String(500), default="")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    worker_id: Mapped[str | None] = mapped_column(sa.String(64))
    gpu_index: Mapped[int | None]
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Set when the scheduler hands the job to the broker; cleared when it is re-queued.
    admitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # The broker's id of the message that may run this job; older messages are ignored.
    message_ref: Mapped[str | None] = mapped_column(sa.String(64))
    # Where the broker keeps that message (Redis), to notice when it vanished.
    broker_message_id: Mapped[str | None] = mapped_column(sa.String(64))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = created_at_column()
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Where a long job got to, so a redelivered attempt continues instead of restarting.
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    artifact_path: Mapped[str | None] = mapped_column(sa.String(500))

    @property
    def has_artifact(self) -> bool:
        return bool(self.artifact_path)


class JobEvent(Base):
    """Progress, state changes, log lines and metrics, in order; feeds SSE and logs."""

    __tablename__ = "job_events"
    __table_args__ = (sa.Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = id_column()
    job_id: Mapped[int] = mapped_column(IdType, sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = created_at_column()
    kind: Mapped[str] = mapped_column(sa.String(16))  # state | progress | log | metrics
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class WorkerRow(Base):
    """A live or recently live worker process, as it reports itself."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(sa.String(255))
    pools: Mapped[list[str]] = mapped_column(JSONType, default=list)
    slots: Mapped[int] = mapped_column(default=1)
    # [{index, name, utilization, memory_used, memory_total}] from the last heartbeat
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    started_at: Mapped[dt.datetime] = created_at_column()
    last_heartbeat: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    draining: Mapped[bool] = mapped_column(default=False)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[str] = mapped_column(sa.String(32), default="")
    # What the worker found at start (workers/gpus.py): the torch build, the CUDA it was
    # built for and the NVIDIA driver; None where unknown (no torch, no NVML).
    torch_version: Mapped[str | None] = mapped_column(sa.String(64))
    cuda_version: Mapped[str | None] = mapped_column(sa.String(64))
    driver_version: Mapped[str | None] = mapped_column(sa.String(64))


class Quota(Base):
    """An admin-set cap on one user's concurrent jobs in one pool."""

    __tablename__ = "quotas"

    user_id: Mapped[int] = mapped_column(
        IdType, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    pool: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    max_running: Mapped[int]
