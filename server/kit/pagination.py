"""Keyset pagination: opaque cursors over a monotonically increasing id."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Query

from server.kit.db import MAX_ID
from server.kit.errors import BadRequest

Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=100)]


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        last_id = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("invalid cursor") from None
    if prefix != "id" or not 0 < last_id <= MAX_ID:
        raise BadRequest("invalid cursor")
    return last_id
