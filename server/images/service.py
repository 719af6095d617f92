from __future__ import annotations

import base64
import binascii
import logging
import math
from concurrent import futures
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.blobs import service as blobs
from server.images import decoding, processing
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
from server.models.annotation import Annotation
from server.models.auth import User
from server.models.image import Image, ImageStatus, Split
from server.models.project import Project
from server.settings import Settings

log = logging.getLogger(__name__)

ImageOrder = Literal["id", "confidence"]


# How much of one upload request is kept in memory rather than written by the event
# loop as it arrives (``receive_multipart``): a hundred photo-sized JPEGs, well under
# what a decode and a write hold anyway.
UPLOAD_MEMORY_BYTES = 16 * 1024 * 1024


# An upload request in flight: the thumbnails of earlier uploads wait until uploads
# have gone quiet (decoding.QUIET_SECONDS), so that they do not slow this one.
receiving = decoding.receiving


class Intake:
    """The checks of one upload's files, each started as soon as the file has arrived
    (``add``), so that decoding in the pool overlaps receiving the rest."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self._storage = storage
        self._settings = settings
        self._checker = decoding.Checker()
        self._order: list[str] = []  # sha256 of each check, in the order added
        self._seen: set[str] = set()
        self._syncs: list[tuple[Path, Future[None]]] = []

    def add(self, received: ReceivedFile) -> None:
        sha = received.sha256
        if received.too_large or received.size == 0 or sha in self._seen:
            return
        self._seen.add(sha)
        # A file received in memory is decoded from its bytes, and written to its temp
        # path by the storage's threads meanwhile.
        self._checker.add(
            processing.Check(
                path=str(received.path),
                max_pixels=self._settings.max_image_pixels,
                data=received.data,
            )
        )
        # Written (and fsync'ed, in the storage's file mode), and its blob's folder made,
        # while it is checked and the next files arrive (wasted on a rejected file,
        # which is rare): storing the request's blobs is then only renames and making
        # their folders durable.
        synced = self._storage.prepare_soon(
            received.path, self._storage.blob_path(sha), received.data
        )
        self._syncs.append((received.path, synced))
        self._order.append(sha)

    def verdicts(self) -> dict[str, processing.Checked]:
        """Each distinct file's verdict, once every file is also durably on disk."""
        # Every write ends before anything can fail: the caller's clean-up then finds
        # each temp file that will ever exist. The writes are usually done by the time
        # the last file has arrived; the decoding of the last files is not.
        futures.wait([synced for _, synced in self._syncs])
        for _, synced in self._syncs:
            synced.result()
        durable = self._storage.durable_soon([path for path, _ in self._syncs])
        verdicts = dict(zip(self._order, self._checker.results(), strict=True))
        durable.result()
        return verdicts

    def abandon(self, *, wait: bool = True) -> None:
        """For a request that failed before its files were stored: what has not started
        is not decoded or written, and the temp files the storage's threads wrote are
        removed, once written (``wait``, off the event loop), or as each write ends."""
        self._checker.abandon()
        for _, synced in self._syncs:
            synced.cancel()
        if wait:
            futures.wait([synced for _, synced in self._syncs])
            for path, _ in self._syncs:
                path.unlink(missing_ok=True)
        else:
            for path, synced in self._syncs:
                synced.add_done_callback(partial(_remove, path))


def _remove(path: Path, _written: Future[None]) -> None:
    path.unlink(missing_ok=True)


def ingest(
    db: Session,
    storage: Storage,
    settings: Settings,
    project: Project,
    user: User,
    files: list[ReceivedFile],
    split: Split | None,
    intake: Intake | None = None,
) -> UploadResult:
    """Validates each received file and records the new ones. Per-file outcome; an
    error carrying the items when every file was rejected (an upload request's answer)."""
    result = store_files(db, storage, settings, project, user, files, split, intake)
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
    intake: Intake | None = None,
) -> UploadResult:
    """Validates each received file and records the new ones; one item per file, in
    order. Never raises for a rejected file (dataset imports report them per file).

    Every file is fully decoded (in the decode pool) before it can be listed; the new
    blobs are fsync'ed together, with their directories, before their rows are written
    in one INSERT, and the caller's commit makes them visible. A rejected file leaves
    nothing behind: no blob, no thumbnail, no row. Thumbnails are queued, not waited
    for."""
    try:
        if intake is None:
            intake = Intake(storage, settings)
            for received in files:
                intake.add(received)
        verdicts = intake.verdicts()
        accepted = {sha: v.info for sha, v in verdicts.items() if v.info is not None}
        existing = _existing_ids(db, project.id, list(accepted))
        fresh: dict[str, ReceivedFile] = {}  # the first of equal files, in upload order
        for received in files:
            if received.sha256 in accepted and received.sha256 not in existing:
                fresh.setdefault(received.sha256, received)
        # Where each blob is, or goes: one an earlier release stored stays at its legacy
        # place rather than being stored twice, and its thumbnail is rendered from there.
        blobs = {sha: storage.blob_file(sha) for sha in accepted}
        storage.commit_files(
            [(received.path, blobs[sha]) for sha, received in fresh.items()], prepared=True
        )
        created = _insert_rows(db, project, user, split, fresh, accepted)
        # After the response, at the lowest priority; rendered on demand until then.
        decoding.render_later(
            storage.root,
            [(blob, storage.thumbnail_path(sha)) for sha, blob in blobs.items()],
            settings.thumbnail_size,
        )
        ids = existing | created
        if len(ids) < len(accepted):
            # Inserted meanwhile by a concurrent upload of the same bytes.
            ids |= _existing_ids(db, project.id, [sha for sha in accepted if sha not in ids])
        return UploadResult.from_items(
            _items(settings, files, verdicts, ids, set(created.values()))
        )
    finally:
        for received in files:
            received.path.unlink(missing_ok=True)


def _existing_ids(db: Session, project_id: int, shas: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(shas), _ROWS_PER_STATEMENT):
        chunk = shas[start : start + _ROWS_PER_STATEMENT]
        rows = db.execute(
            sa.select(Image.sha256, Image.id).where(
                Image.project_id == project_id, Image.sha256.in_(chunk)
            )
        )
        found.update((sha, image_id) for sha, image_id in rows)
    return found


# Shas per SELECT ... IN: well under SQLite's 32,766 bound parameters.
_ROWS_PER_STATEMENT = 500


def _insert_rows(
    db: Session,
    project: Project,
    user: User,
    split: Split | None,
    fresh: dict[str, ReceivedFile],
    accepted: dict[str, processing.ImageInfo],
) -> dict[str, int]:
    """The new images' rows; sha256 -> id of the rows it created (a row inserted
    meanwhile by a concurrent upload of the same bytes is skipped)."""
    now = utcnow()
    rows = [
        {
            "project_id": project.id,
            "sha256": sha,
            "filename": received.filename,
            "format": accepted[sha].format,
            "width": accepted[sha].width,
            "height": accepted[sha].height,
            "size_bytes": received.size,
            "status": ImageStatus.unlabeled,
            "split": split,
            "revision": 0,
            "uploaded_by": user.id,
            "created_at": now,
        }
        for sha, received in fresh.items()
    ]
    if not rows:
        return {}
    # Core executemany: SQLAlchemy sends these as multi-row INSERTs ("insertmanyvalues")
    # from one cached compilation, without the ORM's per-row bookkeeping.
    statement = (
        dialect_insert(db, Image.__table__)
        .on_conflict_do_nothing(index_elements=["project_id", "sha256"])
        .returning(Image.__table__.c.sha256, Image.__table__.c.id)
    )
    result = db.connection().execute(statement, rows)
    return {sha: image_id for sha, image_id in result}


def _items(
    settings: Settings,
    files: list[ReceivedFile],
    verdicts: dict[str, processing.Checked],
    ids: dict[str, int],
    created_ids: set[int],
) -> list[UploadItem]:
    items: list[UploadItem] = []
    reported: set[str] = set()
    for received in files:
        sha = received.sha256
        checked = verdicts.get(sha)
        rejected: processing.RejectedImage | None = None
        if received.too_large:
            rejected = processing.RejectedImage(
                f"file is larger than the limit of {settings.max_upload_bytes} bytes",
                "too_large",
            )
        elif received.size == 0:
            rejected = processing.RejectedImage("file is empty")
        elif checked is not None and checked.rejected is not None:
            rejected = checked.rejected
        if rejected is not None:
            items.append(
                UploadItem(
                    filename=received.filename,
                    status="rejected",
                    reason=rejected.reason,
                    kind=rejected.kind,
                )
            )
            continue
        image_id = ids.get(sha)
        if image_id is None:
            # Its row, inserted by a concurrent upload of the same bytes, was deleted
            # before this upload could read its id.
            items.append(
                UploadItem(
                    filename=received.filename,
                    status="rejected",
                    reason="the image was deleted while it was being uploaded; upload it again",
                    kind="invalid",
                )
            )
            continue
        first = sha not in reported and image_id in created_ids
        reported.add(sha)
        items.append(
            UploadItem(
                filename=received.filename,
                status="created" if first else "duplicate",
                image_id=image_id,
                sha256=sha,
            )
        )
    return items


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
    path = storage.blob_file(image.sha256)
    if not path.exists():
        raise NotFound("the image file is missing from storage")
    return path


def thumbnail_path(storage: Storage, settings: Settings, image: Image) -> Path:
    target = storage.thumbnail_path(image.sha256)
    if not processing.usable_thumbnail(target):
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
    blobs.schedule_gc(db, storage, [image.sha256])
