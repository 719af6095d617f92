"""Keyset pagination: opaque cursors over a monotonically increasing id."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Protocol, TypeVar

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


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


R = TypeVar("R")
T = TypeVar("T", bound=_HasId)


def page(rows: Sequence[R], limit: int, convert: Callable[[R], T]) -> tuple[list[T], str | None]:
    """One page from rows fetched with ``LIMIT limit + 1``: the extra row only says that
    another page exists, and the cursor points after the last item returned."""
    items = [convert(row) for row in rows[:limit]]
    return items, encode_cursor(items[-1].id) if len(rows) > limit else None
