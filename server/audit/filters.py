"""What an admin may ask of the audit trail: by action, project, actor and time."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

import sqlalchemy as sa
from pydantic import AfterValidator, AwareDatetime

from server.kit.errors import Unprocessable
from server.models.audit import AuditEvent


def _as_utc(value: dt.datetime) -> dt.datetime:
    # 0001-01-01T00:00+01:00 is a valid datetime whose UTC instant is not: refuse it
    # here (422) instead of letting the database layer overflow (500).
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


# An ISO 8601 instant with its offset ("2025-01-31T08:00:00Z"): a naive time would mean
# whatever the server's zone is, so it is refused rather than guessed.
Instant = Annotated[AwareDatetime, AfterValidator(_as_utc)]


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    project_id: int | None = None
    actor_id: int | None = None
    since: dt.datetime | None = None  # inclusive
    until: dt.datetime | None = None  # exclusive

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise Unprocessable("`since` must be earlier than `until`")

    def where(self) -> list[sa.ColumnElement[bool]]:
        clauses: list[sa.ColumnElement[bool]] = []
        if self.action:
            clauses.append(AuditEvent.action == self.action)
        if self.project_id is not None:
            clauses.append(AuditEvent.project_id == self.project_id)
        if self.actor_id is not None:
            clauses.append(AuditEvent.actor_id == self.actor_id)
        if self.since is not None:
            clauses.append(AuditEvent.created_at >= self.since)
        if self.until is not None:
            clauses.append(AuditEvent.created_at < self.until)
        return clauses
