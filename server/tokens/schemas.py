from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import Field, StrictInt

from server.kit.schemas import Name, ReadSchema, Schema


class TokenCreate(Schema):
    name: Name
    # None: never expires. Default 90 days so forgotten tokens age out.
    expires_in_days: Annotated[StrictInt, Field(ge=1, le=3650)] | None = 90


class TokenRead(ReadSchema):
    id: int
    name: str
    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="The secret. Shown only in this response.")
