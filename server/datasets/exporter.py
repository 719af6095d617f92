"""The ``datasets.export`` job's work: walk the project's images and boxes in id order,
a batch at a time, and stream them into ``exports/<job id>.zip`` (``.csv`` for the
``csv`` format: the box table alone, no images), written atomically.

Memory stays flat with the project's size: one batch of rows at a time, image bytes
going through the zip writer's one buffer (zipwrite.py). What grows is only its list
of entries for the central directory (about a hundred bytes per file) and the set of
names used.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple

import sqlalchemy as sa

from server.datasets.csvformat import COLUMNS, box_row
from server.datasets.formats import (
    CocoWriter,
    ExportBox,
    ExportImage,
    FormatWriter,
    YoloWriter,
    ZipWriter,
)
from server.datasets.schemas import ExportReport, ExportRequest
from server.datasets.split import drawn_for_val
from server.datasets.zipwrite import ZipSink
from server.images.processing import DATASET_SUFFIXES, EXTENSIONS
from server.jobs.context import JobContext, JobFailed
from server.models.annotation import Annotation, BoxStatus
from server.models.image import Image, ImageStatus, Split
from server.models.job import Job
from server.models.project import Project

BATCH_IMAGES = 500
PROGRESS_SECONDS = 1.0
MAX_REPORTED_MISSING = 500
EXPORTS_DIR = "exports"

_OPEN_FLAGS = os.O_RDONLY  # os.open makes it non-inheritable (PEP 446)
_UNSAFE = re.compile(r"[^\w.\-]+")
_MAX_STEM = 150


def artifact_path(job_id: int, suffix: str = ".zip") -> str:
    return f"{EXPORTS_DIR}/{job_id}{suffix}"


def _blob_path(root: str, sha256: str) -> str:
    """``Storage.blob_path`` as text: a Path costs more per image than reading a small
    image does (tests/test_export_zip.py holds the two together)."""
    return f"{root}/blobs/{sha256[:2]}/{sha256}"


def _legacy_blob_path(root: str, sha256: str) -> str:
    """``Storage.legacy_blob_path`` as text."""
    return f"{root}/blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _open_blob(root: str, sha256: str) -> int:
    """``Storage.blob_file`` opened: the legacy place is tried only when the blob is not
    where blobs are written now."""
    try:
        return os.open(_blob_path(root, sha256), _OPEN_FLAGS)
    except FileNotFoundError:
        return os.open(_legacy_blob_path(root, sha256), _OPEN_FLAGS)


def split_for(image_split: Split | None, sha256: str, request: ExportRequest) -> str:
    """Stored split (none = train), or a train/val draw that depends only on the seed
    and the image's bytes, so the same request gives the same split every time."""
    if request.val_fraction <= 0:
        return image_split.value if image_split else "train"
    return "val" if drawn_for_val(request.seed, sha256, request.val_fraction) else "train"


class Namer:
    """Zip-safe, unique file names: two images may share a name (and a.jpg and a.png
    would share a label file), so a repeated stem gets the image id appended."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def name(self, image_id: int, filename: str, fmt: str) -> str:
        stem, suffix = os.path.splitext(filename)
        stem = _UNSAFE.sub("_", stem).strip("._")[:_MAX_STEM] or f"image_{image_id}"
        # A name keeps its suffix only if it is one of its format's that dataset tools
        # know; anything else gets the format's first, so YOLO loaders see every file.
        suffixes = EXTENSIONS.get(fmt, (f".{fmt}",))
        kept = suffix.lower() in suffixes and suffix.lower() in DATASET_SUFFIXES
        suffix = suffix.lower() if kept else suffixes[0]
        while stem.casefold() in self.used:
            stem = f"{stem}_{image_id}"
        self.used.add(stem.casefold())
        return stem + suffix


class _Row(NamedTuple):
    id: int
    sha256: str
    filename: str
    format: str
    width: int
    height: int
    status: ImageStatus
    split: Split | None


def _image_page(
    wanted: list[sa.ColumnElement[bool]],
) -> sa.Select[int, str, str, str, int, int, ImageStatus, Split | None]:
    return (
        sa.select(
            Image.id,
            Image.sha256,
            Image.filename,
            Image.format,
            Image.width,
            Image.height,
            Image.status,
            Image.split,
        )
        .where(*wanted, Image.id > sa.bindparam("after", type_=sa.Integer))
        .order_by(Image.id)
        .limit(BATCH_IMAGES)
    )


def _box_page(
    wanted: list[sa.ColumnElement[bool]], statuses: list[BoxStatus]
) -> sa.Select[int, int, float, float, float, float, float | None]:
    # The page's id range, joined back to its images rather than IN (the page's ids):
    # the same SQL text every time. The range also bounds the boxes' own image_id, so
    # each page reads its boxes from the index rather than every box of the table.
    after, last = sa.bindparam("after", type_=sa.Integer), sa.bindparam("last", type_=sa.Integer)
    return (
        sa.select(
            Annotation.image_id,
            Annotation.class_id,
            Annotation.x,
            Annotation.y,
            Annotation.w,
            Annotation.h,
            Annotation.confidence,
        )
        .join(Image, Image.id == Annotation.image_id)
        .where(
            *wanted,
            Image.id > after,
            Image.id <= last,
            Annotation.image_id > after,
            Annotation.image_id <= last,
            Annotation.status.in_(statuses),
        )
        .order_by(Annotation.image_id, Annotation.position)
    )


def _batches(
    ctx: JobContext, request: ExportRequest
) -> Iterator[list[tuple[_Row, list[ExportBox]]]]:
    """Images with their exported boxes, by id, BATCH_IMAGES at a time (keyset pages)."""
    statuses = [BoxStatus.accepted]
    if not request.only_reviewed:
        statuses.append(BoxStatus.predicted)
    wanted = [Image.project_id == ctx.project_id]
    if request.only_reviewed:
        wanted.append(Image.status == ImageStatus.reviewed)
    # Built once: each page only binds its range.
    image_page, box_page = _image_page(wanted), _box_page(wanted, statuses)
    after = 0
    while True:
        # Reads only: no fence (that is for writes, and costs a row lock and a commit
        # per page); progress() in the caller still notices a lost or canceled job.
        with ctx.sessionmaker() as db, db.begin():
            # Core execution and fetchall: plain rows at a fraction of the ORM's cost.
            conn = db.connection()
            rows = [_Row(*r) for r in conn.execute(image_page, {"after": after}).all()]
            if not rows:
                return
            boxes: dict[int, list[ExportBox]] = {row.id: [] for row in rows}
            page = conn.execute(box_page, {"after": after, "last": rows[-1].id}).all()
        for image_id, class_id, x, y, w, h, confidence in page:
            boxes[image_id].append(ExportBox(class_id, x, y, w, h, confidence))
        yield [(row, boxes[row.id]) for row in rows]
        after = rows[-1].id


def _snapshot(ctx: JobContext, request: ExportRequest) -> tuple[list[str], int]:
    with ctx.session() as db:
        project = db.get(Project, ctx.project_id)
        if project is None:
            raise JobFailed("the project no longer exists")
        stmt = sa.select(sa.func.count()).where(Image.project_id == project.id)
        if request.only_reviewed:
            stmt = stmt.where(Image.status == ImageStatus.reviewed)
        return list(project.classes), db.scalar(stmt) or 0


class _Export:
    """One export's zip and tallies, fed image by image."""

    def __init__(
        self, ctx: JobContext, request: ExportRequest, sink: ZipSink, classes: list[str]
    ) -> None:
        self.storage = ctx.storage
        self.blob_root = os.fspath(ctx.storage.root)
        self.request = request
        self.out = ZipWriter(sink)
        self.writer: FormatWriter = (
            YoloWriter(self.out, self.storage, classes)
            if request.format == "yolo"
            else CocoWriter(self.out, self.storage, classes)
        )
        self.namer = Namer()
        self.splits: Counter[str] = Counter()
        self.missing: list[int] = []
        self.images = 0
        self.boxes = 0

    def add(self, row: _Row, boxes: list[ExportBox]) -> None:
        image = ExportImage(
            id=row.id,
            sha256=row.sha256,
            name=self.namer.name(row.id, row.filename, row.format),
            format=row.format,
            width=row.width,
            height=row.height,
            status=row.status,
            split=split_for(row.split, row.sha256, self.request),
        )
        try:
            fd = _open_blob(self.blob_root, row.sha256)
        except FileNotFoundError:
            # Reported, not fatal: one lost file should not cost the whole export.
            self.missing.append(row.id)
            return
        try:
            size = os.fstat(fd).st_size
            self.out.copy_file(f"images/{image.split}/{image.name}", fd, size)
        finally:
            os.close(fd)
        self.writer.add(image, boxes)
        self.splits[image.split] += 1
        self.images += 1
        if row.status is not ImageStatus.unlabeled:
            self.boxes += len(boxes)


def _run_csv(
    ctx: JobContext, request: ExportRequest, classes: list[str], total: int
) -> ExportReport:
    """One row per exported box (see csvformat.py); an image without boxes has no row."""
    relative = artifact_path(ctx.job_id, ".csv")
    final = ctx.storage.root / relative
    images = rows = 0
    next_report = time.monotonic() + PROGRESS_SECONDS
    with ctx.storage.atomic_writer(final) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        # The csv module's default dialect: RFC 4180 quoting, CRLF line ends.
        writer = csv.writer(text)
        writer.writerow(COLUMNS)
        for batch in _batches(ctx, request):
            for row, boxes in batch:
                images += 1
                for box in boxes:
                    name = classes[box.class_id] if box.class_id < len(classes) else ""
                    writer.writerow(
                        box_row(
                            row.filename,
                            name,
                            box.confidence,
                            (box.x, box.y, box.w, box.h),
                            row.width,
                            row.height,
                        )
                    )
                    rows += 1
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_SECONDS
                ctx.progress(images / max(total, 1), f"exported {images} of {total} images")
        text.flush()
        text.detach()  # the writer's file stays open for atomic_writer to finish
    with ctx.session() as db:
        db.execute(sa.update(Job).where(Job.id == ctx.job_id).values(artifact_path=relative))
    return ExportReport(
        format=request.format,
        images=images,
        boxes=rows,
        splits={},
        missing_files=[],
        zip_bytes=final.stat().st_size,
    )


def run(ctx: JobContext, request: ExportRequest) -> ExportReport:
    classes, total = _snapshot(ctx, request)
    if request.format == "csv":
        return _run_csv(ctx, request, classes, total)
    relative = artifact_path(ctx.job_id)
    final = ctx.storage.root / relative
    now = time.localtime()
    date_time = (now.tm_year, now.tm_mon, now.tm_mday, now.tm_hour, now.tm_min, now.tm_sec)
    with ctx.storage.atomic_writer(final) as fh:
        sink = ZipSink(fh, date_time, flush_behind=ctx.storage.fsync)
        export = _Export(ctx, request, sink, classes)
        next_report = time.monotonic() + PROGRESS_SECONDS
        try:
            for batch in _batches(ctx, request):
                for row, boxes in batch:
                    export.add(row, boxes)
                    if time.monotonic() >= next_report:
                        # Also where a cancel takes effect, within a second even when
                        # a batch of large images takes longer; a report costs a few
                        # queries, so at most one a second.
                        next_report = time.monotonic() + PROGRESS_SECONDS
                        done = export.images + len(export.missing)
                        ctx.progress(done / max(total, 1), f"exported {done} of {total} images")
            export.writer.finish()
            sink.close()
        finally:
            export.writer.close()
    # The runtime records success only after we return; the artifact goes in with it.
    with ctx.session() as db:
        db.execute(sa.update(Job).where(Job.id == ctx.job_id).values(artifact_path=relative))
    return ExportReport(
        format=request.format,
        images=export.images,
        boxes=export.boxes,
        splits=dict(sorted(export.splits.items())),
        missing_files=export.missing[:MAX_REPORTED_MISSING],
        zip_bytes=final.stat().st_size,
    )
