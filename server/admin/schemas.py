from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import Field, StrictBool

from server.kit.schemas import ReadSchema, Schema

Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Password = Annotated[str, Field(min_length=8, max_length=1024)]


class UserCreate(Schema):
    username: Username
    password: Password
    is_admin: StrictBool = False


class UserUpdate(Schema):
    is_active: StrictBool | None = None
    is_admin: StrictBool | None = None
    password: Password | None = None


class UserAdminRead(ReadSchema):
    id: int
    issuer: str
    subject: str
    username: str
    email: str | None
    display_name: str | None
    is_admin: bool
    is_active: bool
    is_local: bool
    groups: list[str]
    created_at: dt.datetime
    last_login_at: dt.datetime | None


class AuditRead(ReadSchema):
    id: int
    created_at: dt.datetime
    actor_id: int | None
    actor_name: str | None
    action: str
    target_type: str | None
    target_id: str | None
    project_id: int | None
    ip: str | None
    details: dict[str, Any]
