"""Writing an image's boxes: the one place that replaces them.

A save in the editor, an auto-label batch and a dataset import all do the same three
statements: a compare-and-swap UPDATE on the image's revision (which also sets the
status, who annotated it and the review queue's ``min_confidence``), a DELETE of the old
boxes and one multi-row INSERT of the new ones. They differ only in the status they
set, whether the annotator changes and whether a reviewed image may be overwritten.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import NamedTuple, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.annotations.confidence import lowest_predicted_confidence
from server.models.annotation import Annotation, BoxStatus
from server.models.image import Image, ImageStatus

_ANNOTATIONS = cast(sa.Table, Annotation.__table__)
_IMAGES = cast(sa.Table, Image.__table__)


class BoxRow(Protocol):
    """What a written box holds: a validated ``schemas.Box`` or a ``NewBox``."""

    @property
    def class_id(self) -> int: ...
    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...
    @property
    def w(self) -> float: ...
    @property
    def h(self) -> float: ...
    @property
    def source(self) -> str: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def status(self) -> BoxStatus: ...


class NewBox(NamedTuple):
    """A box made by the server (a model's detection), not validated from a request."""

    class_id: int
    x: float
    y: float
    w: float
    h: float
    source: str
    confidence: float | None
    status: BoxStatus


@functools.lru_cache(maxsize=4)
def _bump(*, keep_reviewed: bool, set_annotator: bool) -> sa.Update:
    """The compare-and-swap, built once per variant so its compiled form is cached.

    It is the lock: on PostgreSQL a concurrent writer blocks on the row, then finds the
    revision moved and matches 0 rows; on SQLite every write transaction is BEGIN
    IMMEDIATE."""
    guard = [
        _IMAGES.c.id == sa.bindparam("image_id"),
        _IMAGES.c.revision == sa.bindparam("base"),
    ]
    if keep_reviewed:
        guard.append(_IMAGES.c.status != ImageStatus.reviewed)
    values: dict[str, object] = {
        "revision": _IMAGES.c.revision + 1,
        "status": sa.bindparam("new_status"),
        "annotated_at": sa.bindparam("now"),
        "min_confidence": sa.bindparam("lowest"),
    }
    if set_annotator:
        values["annotated_by"] = sa.bindparam("user_id")
    return sa.update(_IMAGES).where(*guard).values(values)


_DELETE_BOXES = sa.delete(_ANNOTATIONS).where(_ANNOTATIONS.c.image_id == sa.bindparam("image_id"))

# The boxes go in as one multi-row INSERT (per chunk) in the driver's own SQL: given a
# list of rows SQLAlchemy runs an executemany (on psycopg a pipeline, about 4x the CPU
# of one statement for a few boxes), and a multi-row ``values()`` is compiled anew for
# every save.
_INSERT_COLUMNS = (
    "image_id",
    "position",
    "class_id",
    "x",
    "y",
    "w",
    "h",
    "source",
    "confidence",
    "status",
)
# 10 parameters a row: far below SQLite's 32766 and PostgreSQL's 65535 per statement.
_INSERT_CHUNK = 500
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


@functools.lru_cache(maxsize=64)
def _insert_sql(placeholder: str, rows: int) -> str:
    row = "(" + ", ".join([placeholder] * len(_INSERT_COLUMNS)) + ")"
    columns = ", ".join(_INSERT_COLUMNS)
    values = ", ".join([row] * rows)
    # Names and placeholders are constants of this module: no input reaches the text.
    return f"INSERT INTO {_ANNOTATIONS.name} ({columns}) VALUES {values}"  # noqa: S608


def _insert_boxes(conn: Connection, image_id: int, boxes: Sequence[BoxRow]) -> None:
    placeholder = _PLACEHOLDERS[conn.dialect.paramstyle]
    for start in range(0, len(boxes), _INSERT_CHUNK):
        chunk = boxes[start : start + _INSERT_CHUNK]
        params: list[object] = []
        for position, box in enumerate(chunk, start):
            # The status column (a non-native Enum) stores the member's name.
            params += (image_id, position, box.class_id, box.x, box.y, box.w, box.h)
            params += (box.source, box.confidence, box.status.name)
        conn.exec_driver_sql(_insert_sql(placeholder, len(chunk)), tuple(params))


def replace_boxes(
    conn: Connection,
    image_id: int,
    boxes: Sequence[BoxRow],
    *,
    expected_revision: int,
    status: ImageStatus,
    annotated_by: int | None,
    now: dt.datetime,
    keep_reviewed: bool = False,
) -> bool:
    """Replaces the image's boxes with ``boxes`` if its revision is still
    ``expected_revision`` (and, with ``keep_reviewed``, it is not reviewed); returns
    whether it did. The revision goes up by one; the image gets ``status``, ``now`` as
    its annotation time and ``annotated_by`` as its annotator (None keeps the one it
    has: a model's boxes are nobody's work)."""
    params: dict[str, object] = {
        "image_id": image_id,
        "base": expected_revision,
        "new_status": status,
        "now": now,
        "lowest": lowest_predicted_confidence(boxes),
    }
    if annotated_by is not None:
        params["user_id"] = annotated_by
    bumped = conn.execute(
        _bump(keep_reviewed=keep_reviewed, set_annotator=annotated_by is not None), params
    )
    if bumped.rowcount != 1:
        return False
    conn.execute(_DELETE_BOXES, {"image_id": image_id})
    _insert_boxes(conn, image_id, boxes)
    return True
