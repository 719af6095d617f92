"""The ``datasets.import`` job's work: plan the zip, map its classes, then store images
and their boxes batch by batch, each batch one transaction.

Images go through the same checks and content-addressed storage as uploads
(``images.service.store_files``). Re-importing a zip changes nothing: images are
de-duplicated by sha256, and boxes are only written onto images nobody has labelled.
"""

from __future__ import annotations

import zipfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from server.annotations.boxes import replace_boxes
from server.annotations.schemas import Box
from server.datasets import coco, yolo
from server.datasets.layout import Plan, PlannedImage, dataset_members, detect
from server.datasets.schemas import ImportCounts, ImportReport, Issue
from server.datasets.zipread import MemberError, extract
from server.images.schemas import UploadItem
from server.images.service import store_files
from server.images.upload import ReceivedFile
from server.jobs.context import JobContext, JobFailed
from server.kit.db import utcnow
from server.kit.storage import HashingWriter
from server.models.annotation import Annotation
from server.models.auth import User
from server.models.image import Image, ImageStatus, Split
from server.models.project import Project
from server.projects.schemas import Classes
from server.settings import Settings

# One transaction per batch: short enough that cancel (checked between batches) and
# other writers (SQLite has one write lock) are not kept waiting long.
BATCH_IMAGES = 200
BATCH_BYTES = 256 * 1024 * 1024
MAX_REPORTED_ISSUES = 500

_classes_adapter: TypeAdapter[list[str]] = TypeAdapter(Classes)


class Reporter:
    """Counts everything; keeps the first issues (a 100k-image zip can have 100k)."""

    def __init__(self) -> None:
        self.counts = ImportCounts()
        self.issues: list[Issue] = []
        self.issues_total = 0

    def add(self, issue: Issue) -> None:
        self.issues_total += 1
        if len(self.issues) < MAX_REPORTED_ISSUES:
            self.issues.append(issue)

    def note(self, file: str, reason: str) -> None:
        self.add(Issue(file=file, reason=reason))

    def skip_labels(self, issues: list[Issue]) -> None:
        self.counts.labels_skipped += len(issues)
        for issue in issues:
            self.add(issue)


def map_classes(ctx: JobContext, classes: dict[int, str]) -> tuple[dict[int, int], list[str]]:
    """Dataset class id -> project class index, by name, case-insensitively. Names the
    project lacks are appended, which keeps every existing class id stable."""
    with ctx.session() as db:
        project = db.scalar(
            sa.select(Project).where(Project.id == ctx.project_id).with_for_update()
        )
        if project is None:
            raise JobFailed("the project no longer exists")
        current = list(project.classes)
        index = {name.casefold(): i for i, name in enumerate(current)}
        mapping: dict[int, int] = {}
        added: list[str] = []
        for class_id, raw in sorted(classes.items()):
            name = raw.strip()
            if not name:
                raise JobFailed(f"the dataset's class {class_id} has a blank name")
            if not name.isprintable():
                raise JobFailed(f"the dataset's class {class_id} name {name!r} is not printable")
            key = name.casefold()
            if key not in index:
                index[key] = len(current)
                current.append(name)
                added.append(name)
            mapping[class_id] = index[key]
        if added:
            try:
                project.classes = _classes_adapter.validate_python(current)
            except ValidationError as exc:
                reason = "; ".join(err["msg"] for err in exc.errors())
                raise JobFailed(
                    f"the dataset's classes cannot be added to the project: {reason}"
                ) from None
        return mapping, added


def _batches(plan: Plan, members: dict[str, zipfile.ZipInfo]) -> Iterator[list[PlannedImage]]:
    batch: list[PlannedImage] = []
    size = 0
    for planned in plan.images:
        batch.append(planned)
        size += members[planned.entry].file_size
        if len(batch) >= BATCH_IMAGES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class BatchImport:
    def __init__(
        self,
        ctx: JobContext,
        archive: zipfile.ZipFile,
        plan: Plan,
        class_map: dict[int, int],
        reporter: Reporter,
    ) -> None:
        self.ctx = ctx
        self.archive = archive
        self.plan = plan
        self.class_map = class_map
        self.reporter = reporter

    def run(self, batch: list[PlannedImage]) -> None:
        received: list[tuple[PlannedImage, ReceivedFile]] = []
        try:
            for planned in batch:
                file = self._extract(planned)
                if file is not None:
                    received.append((planned, file))
            # Labels are parsed before the transaction opens: on SQLite it holds the
            # one write lock.
            labels = {planned.entry: self._labels(planned) for planned, _ in received}
            with self.ctx.session() as db:
                self._store(db, received, labels)
        finally:
            for _, file in received:
                file.path.unlink(missing_ok=True)

    def _extract(self, planned: PlannedImage) -> ReceivedFile | None:
        settings, storage = self.ctx.settings, self.ctx.storage
        info = self.archive.getinfo(planned.entry)
        if info.file_size > settings.max_upload_bytes:
            self._rejected(
                planned,
                f"is {info.file_size} bytes, over the per-image limit of "
                f"{settings.max_upload_bytes}",
            )
            return None
        storage.tmp_dir.mkdir(parents=True, exist_ok=True)
        writer = HashingWriter(storage.temp_path(".import"), info.file_size)
        try:
            extract(self.archive, info, writer)
        except MemberError as exc:
            self._rejected(planned, str(exc))
            return None
        return ReceivedFile(
            field="zip",
            filename=PurePosixPath(planned.entry).name[:255] or "unnamed",
            path=writer.path,
            size=writer.size,
            sha256=writer.sha256,
            too_large=False,
        )

    def _rejected(self, planned: PlannedImage, reason: str) -> None:
        self.reporter.counts.images_rejected += 1
        self.reporter.note(planned.entry, f"image rejected: {reason}")

    def _labels(self, planned: PlannedImage) -> list[Box] | None:
        """The image's boxes with project class ids; None when the zip says nothing."""
        boxes = planned.boxes
        if planned.label_file is not None:
            parsed = yolo.parse_labels(self.archive, planned.label_file, self.plan.classes)
            self.reporter.skip_labels(parsed.issues)
            boxes = parsed.boxes if parsed.usable else None
        if boxes is None:
            return None
        return [b.model_copy(update={"class_id": self.class_map[b.class_id]}) for b in boxes]

    def _store(
        self,
        db: Session,
        received: list[tuple[PlannedImage, ReceivedFile]],
        labels: dict[str, list[Box] | None],
    ) -> None:
        project = db.get(Project, self.ctx.project_id)
        if project is None:
            raise JobFailed("the project no longer exists")
        user = db.get(User, self.ctx.created_by) if self.ctx.created_by else None
        if user is None:
            raise JobFailed("the user who started the import no longer exists")
        by_split: dict[Split | None, list[tuple[PlannedImage, ReceivedFile]]] = defaultdict(list)
        for planned, file in received:
            by_split[planned.split].append((planned, file))
        outcomes: list[tuple[PlannedImage, UploadItem]] = []
        for split, group in by_split.items():
            result = store_files(
                db,
                self.ctx.storage,
                self.ctx.settings,
                project,
                user,
                [file for _, file in group],
                split,
            )
            outcomes.extend(zip((p for p, _ in group), result.items, strict=True))
        targets = self._count(outcomes, labels)
        if targets:
            self._write_boxes(db, user, targets)

    def _count(
        self,
        outcomes: list[tuple[PlannedImage, UploadItem]],
        labels: dict[str, list[Box] | None],
    ) -> dict[int, tuple[PlannedImage, list[Box]]]:
        """Tallies the stored images; returns the ones that came with labels, by id."""
        counts = self.reporter.counts
        targets: dict[int, tuple[PlannedImage, list[Box]]] = {}
        for planned, item in outcomes:
            if item.status == "rejected" or item.image_id is None:
                self._rejected(planned, item.reason or "not a valid image")
                continue
            if item.status == "created":
                counts.images_created += 1
            else:
                counts.images_duplicate += 1
            boxes = labels.get(planned.entry)
            if boxes is None:
                continue
            if item.image_id in targets:
                counts.images_kept_existing += 1
                first = targets[item.image_id][0].entry
                self.reporter.note(
                    planned.entry, f"same image as {first}; only that file's labels were used"
                )
                continue
            targets[item.image_id] = (planned, boxes)
        return targets

    def _write_boxes(
        self, db: Session, user: User, targets: dict[int, tuple[PlannedImage, list[Box]]]
    ) -> None:
        counts, settings = self.reporter.counts, self.ctx.settings
        has_boxes = sa.exists().where(Annotation.image_id == Image.id)
        rows = db.execute(
            sa.select(
                Image.id, Image.width, Image.height, Image.status, Image.revision, has_boxes
            ).where(Image.id.in_(targets))
        ).all()
        eligible: dict[int, tuple[int, list[Box]]] = {}
        for image_id, width, height, status, revision, boxed in rows:
            planned, boxes = targets[image_id]
            if planned.expected_size is not None and planned.expected_size != (width, height):
                expected = "x".join(map(str, planned.expected_size))
                self.reporter.skip_labels(
                    [
                        Issue(
                            file=planned.entry,
                            reason=f"the COCO file says {expected} but the image is "
                            f"{width}x{height}; its {len(boxes)} boxes were skipped",
                        )
                    ]
                )
                continue
            if boxed or status != ImageStatus.unlabeled:
                counts.images_kept_existing += 1
                self.reporter.note(
                    planned.entry, "already in the project with annotations: kept existing"
                )
                continue
            if len(boxes) > settings.max_boxes_per_image:
                counts.labels_skipped += len(boxes)
                self.reporter.note(
                    planned.entry,
                    f"{len(boxes)} boxes, over the limit of {settings.max_boxes_per_image} "
                    "per image; none were imported",
                )
                continue
            eligible[image_id] = (revision, boxes)
        if not eligible:
            return
        # Guarded like an annotation save: an image someone labelled meanwhile (and so
        # moved its revision past the one read above) is kept, and the revision bump
        # makes a stale save elsewhere answer 409.
        conn, now = db.connection(), utcnow()
        updated: set[int] = set()
        for image_id in sorted(eligible):
            revision, boxes = eligible[image_id]
            if replace_boxes(
                conn,
                image_id,
                boxes,
                expected_revision=revision,
                status=ImageStatus.reviewed,
                annotated_by=user.id,
                now=now,
            ):
                updated.add(image_id)
                counts.boxes_imported += len(boxes)
        counts.images_labelled += len(updated)
        for image_id in eligible.keys() - updated:
            counts.images_kept_existing += 1
            self.reporter.note(
                targets[image_id][0].entry, "labelled by someone meanwhile: kept existing"
            )


def _plan(archive: zipfile.ZipFile, settings: Settings) -> tuple[Plan, dict[str, zipfile.ZipInfo]]:
    members = dataset_members(archive)
    if detect(members) == "yolo":
        plan = yolo.plan(archive, members, max_class_file_bytes=settings.max_class_file_bytes)
    else:
        plan = coco.plan(archive, members, max_json_bytes=settings.max_coco_json_bytes)
    if not plan.images:
        raise JobFailed(
            "the zip contains no images (JPEG, PNG, WebP, BMP or TIFF files); nothing was imported"
        )
    return plan, members


def run(ctx: JobContext, zip_path: Path, filename: str) -> ImportReport:
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise JobFailed(f"the uploaded zip cannot be opened ({exc})") from None
    with archive:
        plan, members = _plan(archive, ctx.settings)
        reporter = Reporter()
        reporter.counts.labels_skipped += plan.labels_skipped
        for issue in plan.issues:
            reporter.add(issue)
        total = len(plan.images)
        class_map, added = map_classes(ctx, plan.classes)
        batch_import = BatchImport(ctx, archive, plan, class_map, reporter)
        done = 0
        for batch in _batches(plan, members):
            # Before each batch, never after the last: a cancel takes effect between
            # committed batches, and one that comes when all is written changes nothing.
            ctx.progress(done / total, f"{plan.format.upper()}: {done} of {total} images")
            batch_import.run(batch)
            done += len(batch)
    return ImportReport(
        format=plan.format,
        filename=filename,
        classes_added=added,
        counts=reporter.counts,
        issues=reporter.issues,
        issues_total=reporter.issues_total,
        issues_truncated=reporter.issues_total > len(reporter.issues),
    )
