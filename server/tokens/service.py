from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.kit.db import utcnow
from server.kit.errors import Conflict, NotFound
from server.kit.secrets import API_TOKEN_PREFIX, new_token, token_hash
from server.models.auth import ApiToken, User

MAX_ACTIVE_TOKENS = 50


def create(
    db: Session, user: User, name: str, expires_in_days: int | None, ip: str | None
) -> tuple[ApiToken, str]:
    now = utcnow()
    active = db.scalar(
        sa.select(sa.func.count())
        .select_from(ApiToken)
        .where(
            ApiToken.user_id == user.id,
            ApiToken.revoked_at.is_(None),
            sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
    )
    if (active or 0) >= MAX_ACTIVE_TOKENS:
        raise Conflict(f"at most {MAX_ACTIVE_TOKENS} active tokens; revoke one first")
    secret = new_token(API_TOKEN_PREFIX)
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=token_hash(secret),
        prefix=secret[: len(API_TOKEN_PREFIX) + 6],
        created_at=now,
        expires_at=now + dt.timedelta(days=expires_in_days) if expires_in_days else None,
    )
    db.add(token)
    db.flush()
    audit.record(
        db, "token.create", actor=user, target_type="token", target_id=token.id, ip=ip, name=name
    )
    return token, secret


def list_for(db: Session, user: User) -> list[ApiToken]:
    return list(
        db.scalars(sa.select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    )


def revoke(db: Session, user: User, token_id: int, ip: str | None) -> None:
    token = db.scalar(
        sa.select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id)
    )
    if token is None:
        raise NotFound("token not found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(
            db,
            "token.revoke",
            actor=user,
            target_type="token",
            target_id=token.id,
            ip=ip,
            name=token.name,
        )
