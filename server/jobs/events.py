"""Job events and the wake-ups that go with them.

Events are rows (the source of truth for logs, metrics and the SSE stream). On
PostgreSQL each insert also sends ``NOTIFY``, delivered only when the transaction
commits, so listeners never see an event before it is readable. In-process
schedulers (standalone) are woken after the commit through the session's ``waker``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from server.kit.db import is_postgresql
from server.models.job import JobEvent

EVENTS_CHANNEL = "oculab_job_events"
SCHEDULER_CHANNEL = "oculab_scheduler"
WAKER_KEY = "oculab_waker"


class Waker:
    """Calls the in-process scheduler's ``wake`` once it exists (standalone only)."""

    def __init__(self) -> None:
        self.target: Callable[[], None] | None = None

    def wake(self) -> None:
        if self.target is not None:
            self.target()


def add(db: Session, job_id: int, kind: str, data: dict[str, Any]) -> None:
    db.add(JobEvent(job_id=job_id, kind=kind, data=data))
    if is_postgresql(db):
        db.execute(sa.select(sa.func.pg_notify(EVENTS_CHANNEL, str(job_id))))


def wake_scheduler(db: Session) -> None:
    if is_postgresql(db):
        db.execute(sa.select(sa.func.pg_notify(SCHEDULER_CHANNEL, "")))
    waker = db.info.get(WAKER_KEY)
    if isinstance(waker, Waker) and not db.info.get("_wake_pending"):
        db.info["_wake_pending"] = True

        def after_commit(session: Session) -> None:
            session.info.pop("_wake_pending", None)
            waker.wake()

        event.listen(db, "after_commit", after_commit, once=True)
