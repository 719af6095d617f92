from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from server.annotations.confidence import lowest_predicted_confidence
from server.annotations.models import Annotation, BoxStatus
from server.annotations.schemas import AnnotationsPut, AnnotationsRead, Box
from server.auth.models import User
from server.images.models import Image, ImageStatus
from server.kit.db import MAX_ID, utcnow
from server.kit.errors import Conflict, Unprocessable
from server.models.models import RegisteredModel
from server.projects.models import Project
from server.settings import Settings

_ANNOTATIONS = cast(sa.Table, Annotation.__table__)
_IMAGES = cast(sa.Table, Image.__table__)
_BOX_FIELDS = ("class_id", "x", "y", "w", "h", "source", "confidence", "status")

# Statements built once: each save and read runs them through the Core connection with
# their compiled form cached, no ORM objects made or flushed.
_READ_BOXES = (
    sa.select(*(_ANNOTATIONS.c[name] for name in _BOX_FIELDS))
    .where(_ANNOTATIONS.c.image_id == sa.bindparam("image_id"))
    .order_by(_ANNOTATIONS.c.position)
)
# The compare-and-swap is the lock: on PostgreSQL a concurrent writer blocks on the row,
# then finds the revision moved and matches 0 rows; on SQLite every write transaction
# is BEGIN IMMEDIATE. It also sets what the saved boxes decide (status, the review
# queue's min_confidence), so the save is one UPDATE on images.
_BUMP = (
    sa.update(_IMAGES)
    .where(_IMAGES.c.id == sa.bindparam("image_id"), _IMAGES.c.revision == sa.bindparam("base"))
    .values(
        revision=_IMAGES.c.revision + 1,
        status=sa.bindparam("new_status"),
        annotated_by=sa.bindparam("user_id"),
        annotated_at=sa.bindparam("now"),
        min_confidence=sa.bindparam("lowest"),
    )
)
_CURRENT_REVISION = sa.select(_IMAGES.c.revision).where(_IMAGES.c.id == sa.bindparam("image_id"))
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


def _insert_boxes(conn: Connection, image_id: int, boxes: Sequence[Box]) -> None:
    placeholder = _PLACEHOLDERS[conn.dialect.paramstyle]
    for start in range(0, len(boxes), _INSERT_CHUNK):
        chunk = boxes[start : start + _INSERT_CHUNK]
        params: list[object] = []
        for position, box in enumerate(chunk, start):
            # The status column (a non-native Enum) stores the member's name.
            params += (image_id, position, box.class_id, box.x, box.y, box.w, box.h)
            params += (box.source, box.confidence, box.status.name)
        conn.exec_driver_sql(_insert_sql(placeholder, len(chunk)), tuple(params))


def read(db: Session, image: Image) -> AnnotationsRead:
    # Hundreds of boxes per image: plain rows validated as dicts (pydantic's fast path),
    # not ORM objects read attribute by attribute (~5x the CPU at 500 boxes).
    rows = db.connection().execute(_READ_BOXES, {"image_id": image.id})
    boxes = [
        {
            "class_id": class_id,
            "x": x,
            "y": y,
            "w": w,
            "h": h,
            "source": source,
            "confidence": confidence,
            "status": status,
        }
        for class_id, x, y, w, h, source, confidence, status in rows
    ]
    return AnnotationsRead.model_validate(
        {
            "image_id": image.id,
            "revision": image.revision,
            "status": image.status.value,
            "annotated_by": image.annotated_by,
            "annotated_at": image.annotated_at,
            "boxes": boxes,
        }
    )


def save(
    db: Session,
    settings: Settings,
    project: Project,
    image: Image,
    user: User,
    body: AnnotationsPut,
) -> AnnotationsRead:
    """Replaces the image's boxes if nobody saved since ``base_revision``, else 409.

    The answer is built from what was written (the validated boxes, the revision the
    swap made), not read back."""
    if len(body.boxes) > settings.max_boxes_per_image:
        raise Unprocessable(f"at most {settings.max_boxes_per_image} boxes per image")
    n_classes = len(project.classes)
    for index, box in enumerate(body.boxes):
        if box.class_id >= n_classes:
            raise Unprocessable(
                f"boxes.{index}.class_id: {box.class_id} is out of range; the project has "
                f"{n_classes} classes (0..{n_classes - 1})"
            )
    _check_sources(db, project, image, body)
    pending = any(box.status is BoxStatus.predicted for box in body.boxes)
    status = ImageStatus.predicted if pending else ImageStatus.reviewed
    now = utcnow()
    lowest = lowest_predicted_confidence(body.boxes)
    conn = db.connection()
    bumped = conn.execute(
        _BUMP,
        {
            "image_id": image.id,
            "base": body.base_revision,
            "new_status": status,
            "user_id": user.id,
            "now": now,
            "lowest": lowest,
        },
    )
    if bumped.rowcount != 1:
        current = conn.execute(_CURRENT_REVISION, {"image_id": image.id}).scalar()
        raise Conflict(
            f"the annotations were saved by someone else meanwhile (revision {current}, "
            f"you started from {body.base_revision}); reload and apply your changes again",
            current_revision=current,
        )
    conn.execute(_DELETE_BOXES, {"image_id": image.id})
    _insert_boxes(conn, image.id, body.boxes)
    revision = body.base_revision + 1
    # The session's copy of the row learns what the UPDATE wrote, without a query.
    for name, value in (
        ("revision", revision),
        ("status", status),
        ("annotated_by", user.id),
        ("annotated_at", now),
        ("min_confidence", lowest),
    ):
        set_committed_value(image, name, value)
    return AnnotationsRead.model_validate(
        {
            "image_id": image.id,
            "revision": revision,
            "status": status.value,
            "annotated_by": user.id,
            "annotated_at": now,
            "boxes": body.boxes,
        }
    )


def _check_sources(db: Session, project: Project, image: Image, body: AnnotationsPut) -> None:
    """``model:<id>`` must name a model of this project: a box may not claim to come
    from a model that never made it. Sources the image already holds stay valid, so
    saving back the boxes an auto-label run wrote always works."""
    claimed = {box.source for box in body.boxes if box.source != "manual"}
    if not claimed:
        return
    held = set(
        db.scalars(
            sa.select(Annotation.source)
            .where(Annotation.image_id == image.id, Annotation.source.in_(claimed))
            .distinct()
        )
    )
    # The schema allows up to 19 digits; past MAX_ID no model can exist, and the
    # number must not reach the database (it overflows BIGINT there).
    ids = {int(source.removeprefix("model:")) for source in claimed - held}
    ids = {model_id for model_id in ids if model_id <= MAX_ID}
    known = set(
        db.scalars(
            sa.select(RegisteredModel.id).where(
                RegisteredModel.id.in_(ids), RegisteredModel.project_id == project.id
            )
        )
        if ids
        else ()
    )
    for index, box in enumerate(body.boxes):
        if box.source in claimed - held and int(box.source.removeprefix("model:")) not in known:
            raise Unprocessable(
                f"boxes.{index}.source: {box.source} is not a model of this project; use "
                "'manual' or the id of one of the project's models"
            )


def review(db: Session, image: Image, user: User, action: str) -> AnnotationsRead:
    """Accepts or rejects every predicted box at once; the image becomes reviewed."""
    verdict = BoxStatus.accepted if action == "accept_all" else BoxStatus.rejected
    db.execute(
        sa.update(Annotation)
        .where(Annotation.image_id == image.id, Annotation.status == BoxStatus.predicted)
        .values(status=verdict)
        .execution_options(synchronize_session=False)
    )
    db.execute(
        sa.update(Image)
        .where(Image.id == image.id)
        .values(
            revision=Image.revision + 1,
            status=ImageStatus.reviewed,
            annotated_by=user.id,
            annotated_at=utcnow(),
            min_confidence=None,  # no predicted box is left
        )
        .execution_options(synchronize_session=False)
    )
    db.flush()
    db.refresh(image)
    return read(db, image)
