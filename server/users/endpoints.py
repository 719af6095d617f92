from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query

from server.auth.dependencies import CurrentPrincipal
from server.kit.db import DB
from server.kit.schemas import ReadSchema
from server.models.auth import User

router = APIRouter(prefix="/api/users", tags=["users"])


class UserSummary(ReadSchema):
    id: int
    username: str
    display_name: str | None
    email: str | None


@router.get("", operation_id="search_users")
def search_users(
    principal: CurrentPrincipal,
    db: DB,
    q: Annotated[str, Query(max_length=100)] = "",
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> list[UserSummary]:
    q = q.replace("\x00", "").strip().lower()
    stmt = sa.select(User).where(User.is_active.is_(True))
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            sa.or_(
                sa.func.lower(User.username).like(pattern, escape="\\"),
                sa.func.lower(sa.func.coalesce(User.display_name, "")).like(pattern, escape="\\"),
                sa.func.lower(sa.func.coalesce(User.email, "")).like(pattern, escape="\\"),
            )
        )
    users = db.scalars(stmt.order_by(User.username, User.id).limit(limit))
    return [UserSummary.model_validate(u) for u in users]
