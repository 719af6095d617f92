from __future__ import annotations

import base64
import binascii
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from PIL import Image as PILImage
from sqlalchemy import event
from sqlalchemy.orm import Session

from server.annotations.models import Annotation
from server.audit import service as audit
from server.auth.models import User
from server.images import processing
from server.images.models import Image, ImageStatus, Split
from server.images.schemas import ImageNeighbors, ImageRead, UploadItem, UploadResult
from server.images.upload import ReceivedFile
from server.kit.db import MAX_ID, dialect_insert, utcnow
from server.kit.errors import (
    BadRequest,
    NotFound,
    OculabError,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from server.kit.pagination import decode_cursor, page
from server.kit.storage import Storage
from server.projects.models import Project
from server.settings import Settings

log = logging.getLogger(__name__)

ImageOrder = Literal["id", "confidence"]


@dataclass(frozen=True)
class Stored:
    sha256: str
    info: processing.ImageInfo
    size: int


def _store_one(storage: Storage, settings: Settings, received: ReceivedFile) -> Stored:
    if received.too_large:
        raise processing.RejectedImage(
            f"file is larger than the limit of {settings.max_upload_bytes} bytes", "too_large"
        )
    if received.size == 0:
        raise processing.RejectedImage("file is empty")
    sha = received.sha256
    blob = storage.blob_path(sha)
    thumb = storage.thumbnail_path(sha)

    def thumbnail(img: PILImage.Image) -> None:
        processing.write_thumbnail(storage, img, thumb, settings.thumbnail_size)

    info = processing.inspect(
        received.path,
        max_pixels=settings.max_image_pixels,
        thumb_size=settings.thumbnail_size,
        on_decoded=thumbnail,
    )
    storage.commit_file(received.path, blob)
    return Stored(sha256=sha, info=info, size=received.size)


def ingest(
    db: Session,
    storage: Storage,
    settings: Settings,
    project: Project,
    user: User,
    files: list[ReceivedFile],
    split: Split | None,
) -> UploadResult:
    """Validates each received file and records the new ones. Per-file outcome; an
    error carrying the items when every file was rejected (an upload request's answer)."""
    result = store_files(db, storage, settings, project, user, files, split)
    if result.items and result.rejected == len(result.items):
        raise _all_rejected(result)
    return result


def store_files(
    db: Session,
    storage: Storage,
    settings: Settings,
    project: Project,
    user: User,
    files: list[ReceivedFile],
    split: Split | None,
) -> UploadResult:
    """Validates each received file and records the new ones; one item per file, in
    order. Never raises for a rejected file (dataset imports report them per file)."""
    items: list[UploadItem] = []
    try:
        for received in files:
            try:
                stored = _store_one(storage, settings, received)
            except processing.RejectedImage as exc:
                received.path.unlink(missing_ok=True)
                items.append(
                    UploadItem(
                        filename=received.filename,
                        status="rejected",
                        reason=exc.reason,
                        kind=exc.kind,
                    )
                )
                continue
            image_id = db.scalar(
                dialect_insert(db, Image)
                .values(
                    project_id=project.id,
                    sha256=stored.sha256,
                    filename=received.filename,
                    format=stored.info.format,
                    width=stored.info.width,
                    height=stored.info.height,
                    size_bytes=stored.size,
                    status=ImageStatus.unlabeled,
                    split=split,
                    revision=0,
                    uploaded_by=user.id,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["project_id", "sha256"])
                .returning(Image.id)
            )
            if image_id is None:
                existing = db.scalar(
                    sa.select(Image.id).where(
                        Image.project_id == project.id, Image.sha256 == stored.sha256
                    )
                )
                items.append(
                    UploadItem(
                        filename=received.filename,
                        status="duplicate",
                        image_id=existing,
                        sha256=stored.sha256,
                    )
                )
            else:
                items.append(
                    UploadItem(
                        filename=received.filename,
                        status="created",
                        image_id=image_id,
                        sha256=stored.sha256,
                    )
                )
    finally:
        for received in files:
            received.path.unlink(missing_ok=True)
    return UploadResult.from_items(items)


def _all_rejected(result: UploadResult) -> OculabError:
    kinds = {item.kind for item in result.items}
    payload = result.model_dump(mode="json")
    first = result.items[0].reason or "rejected"
    detail = (
        f"no file was accepted: {first}"
        if len(result.items) == 1
        else (f"none of the {len(result.items)} files was accepted")
    )
    cls: type[OculabError]
    if kinds == {"too_large"}:
        cls = PayloadTooLarge
    elif kinds == {"unsupported"}:
        cls = UnsupportedMediaType
    else:
        cls = Unprocessable
    return cls(detail, **{k: v for k, v in payload.items() if k != "detail"})


def read(image: Image) -> ImageRead:
    return ImageRead.model_validate(image)


def list_images(
    db: Session,
    project_id: int,
    *,
    status: ImageStatus | None,
    split: Split | None,
    limit: int,
    cursor: str | None,
    order: ImageOrder = "id",
) -> tuple[list[ImageRead], str | None]:
    stmt = sa.select(Image).where(Image.project_id == project_id)
    if status is not None:
        stmt = stmt.where(Image.status == status)
    if split is not None:
        stmt = stmt.where(Image.split == split)
    if order == "confidence":
        return _list_by_confidence(db, stmt, limit, cursor)
    after = decode_cursor(cursor)
    if after is not None:
        stmt = stmt.where(Image.id > after)
    rows = list(db.scalars(stmt.order_by(Image.id).limit(limit + 1)))
    return page(rows, limit, read)


# The review queue's order: the lowest confidence among an image's predicted boxes
# first (a box without a confidence counts as 0), ties by id; images without a
# predicted box last. Keyset pages over the stored (min_confidence, id), which the
# index (project_id, status, min_confidence, id) serves; the cursor carries both
# ("none" once the pages reach the images without a predicted box).


def _encode_confidence_cursor(confidence: float | None, image_id: int) -> str:
    value = "none" if confidence is None else repr(confidence)
    raw = f"conf:{value}:{image_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_confidence_cursor(cursor: str | None) -> tuple[float | None, int] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, value, last = raw.split(":")
        confidence = None if value == "none" else float(value)
        last_id = int(last)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("invalid cursor") from None
    if prefix != "conf" or not 0 < last_id <= MAX_ID:
        raise BadRequest("invalid cursor")
    if confidence is not None and not math.isfinite(confidence):
        raise BadRequest("invalid cursor")
    return confidence, last_id


def confidence_pages(
    stmt: sa.Select[Image], limit: int, after: tuple[float | None, int] | None
) -> tuple[sa.Select[Image] | None, sa.Select[Image]]:
    """The queries of one page of the review queue after ``after``, ``limit`` + 1 rows
    each: the images with a predicted box (None once the cursor is past them), then
    those without. Each condition is an index condition: ``(min_confidence, id) >
    (cursor)`` as a row comparison, not an OR that the index could only filter by."""
    lowest = Image.min_confidence
    unscored = stmt.where(lowest.is_(None))
    if after is not None and after[0] is None:
        return None, unscored.where(Image.id > after[1]).order_by(Image.id).limit(limit + 1)
    scored = stmt.where(lowest.is_not(None))
    if after is not None:
        scored = scored.where(sa.tuple_(lowest, Image.id) > sa.tuple_(after[0], after[1]))
    return (
        scored.order_by(lowest, Image.id).limit(limit + 1),
        unscored.order_by(Image.id).limit(limit + 1),
    )


def _list_by_confidence(
    db: Session, stmt: sa.Select[Image], limit: int, cursor: str | None
) -> tuple[list[ImageRead], str | None]:
    scored, unscored = confidence_pages(stmt, limit, _decode_confidence_cursor(cursor))
    rows = list(db.scalars(scored)) if scored is not None else []
    if len(rows) <= limit:
        rows += db.scalars(unscored.limit(limit + 1 - len(rows)))
    items = [read(row) for row in rows[:limit]]
    if len(rows) <= limit:
        return items, None
    last = rows[limit - 1]
    return items, _encode_confidence_cursor(last.min_confidence, last.id)


def neighbors(db: Session, image: Image) -> ImageNeighbors:
    """The previous and next image by id in the project, and the next one that is not
    reviewed (after this one, else from the start)."""
    same = Image.project_id == image.project_id
    previous = db.scalar(
        sa.select(Image.id).where(same, Image.id < image.id).order_by(Image.id.desc()).limit(1)
    )
    following = db.scalar(
        sa.select(Image.id).where(same, Image.id > image.id).order_by(Image.id).limit(1)
    )
    pending = sa.select(Image.id).where(
        same, Image.id != image.id, Image.status != ImageStatus.reviewed
    )
    next_unreviewed = db.scalar(
        pending.where(Image.id > image.id).order_by(Image.id).limit(1)
    ) or db.scalar(pending.where(Image.id < image.id).order_by(Image.id).limit(1))
    return ImageNeighbors(previous=previous, next=following, next_unreviewed=next_unreviewed)


def file_path(storage: Storage, image: Image) -> Path:
    path = storage.blob_path(image.sha256)
    if not path.exists():
        raise NotFound("the image file is missing from storage")
    return path


def thumbnail_path(storage: Storage, settings: Settings, image: Image) -> Path:
    target = storage.thumbnail_path(image.sha256)
    if not target.exists():
        processing.render_thumbnail(
            storage, file_path(storage, image), target, settings.thumbnail_size
        )
    return target


def delete(db: Session, storage: Storage, image: Image, user: User, ip: str | None) -> None:
    db.execute(sa.delete(Annotation).where(Annotation.image_id == image.id))
    db.delete(image)
    audit.record(
        db,
        "image.delete",
        actor=user,
        target_type="image",
        target_id=image.id,
        project_id=image.project_id,
        ip=ip,
        filename=image.filename,
        sha256=image.sha256,
    )
    db.flush()
    schedule_blob_gc(db, storage, [image.sha256])


def schedule_blob_gc(db: Session, storage: Storage, shas: list[str]) -> None:
    """After this transaction commits, delete blobs no image references any more."""
    if not shas:
        return
    engine = db.get_bind()

    def collect(_session: Session) -> None:
        try:
            _gc(engine, storage, set(shas))
        except Exception:
            # Orphaned blobs are harmless; a failed GC must not fail the request.
            log.warning("blob garbage collection failed", exc_info=True)

    event.listen(db, "after_commit", collect, once=True)


def _gc(engine: sa.Engine | sa.Connection, storage: Storage, shas: set[str]) -> None:
    with Session(bind=engine) as db:
        referenced: set[str] = set()
        candidates = sorted(shas)
        for start in range(0, len(candidates), 500):
            chunk = candidates[start : start + 500]
            referenced.update(db.scalars(sa.select(Image.sha256).where(Image.sha256.in_(chunk))))
    # Runs after the deleting transaction committed, so a reference found here is real.
    # (An upload of the same bytes into another project committing in between the
    # check and the unlink is the one race left; it is far rarer than a re-upload.)
    for sha in shas - referenced:
        storage.delete_blob(sha)
