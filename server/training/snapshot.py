"""Dataset snapshots: a project's reviewed images and boxes frozen in YOLO layout.

A snapshot is named by a hash of what went into it (image ids and annotation
revisions, classes, split parameters), so the same data trains from the same folder
and a model's lineage names exactly what it learned from. Images are hard links to
the stored blobs (copies where the filesystem cannot link); labels are written fresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.datasets.boxes import to_yolo_line
from server.datasets.split import drawn_for_val
from server.images.processing import EXTENSIONS
from server.kit.storage import Storage
from server.models.annotation import Annotation, BoxStatus
from server.models.image import Image, ImageStatus, Split


class EmptyDataset(ValueError):
    pass


@dataclass(frozen=True)
class Snapshot:
    key: str
    root: Path
    data_yaml: Path
    classes: list[str]
    train_images: int
    val_images: int
    boxes: int


# The one rule for what a training run learns from, shared by the snapshot the job
# builds and the preview the Train dialog shows (server/training/service.py).
MIN_IMAGES = 2


def image_filter(project_id: int, only_reviewed: bool) -> sa.ColumnElement[bool]:
    """The project's images a snapshot takes: reviewed ones, or any with boxes."""
    status = (
        Image.status == ImageStatus.reviewed
        if only_reviewed
        else Image.status != ImageStatus.unlabeled
    )
    return sa.and_(Image.project_id == project_id, status)


def box_filter(project_id: int, only_reviewed: bool) -> sa.ColumnElement[bool]:
    """The boxes a snapshot writes (join Image on Annotation.image_id): accepted ones."""
    return sa.and_(image_filter(project_id, only_reviewed), Annotation.status == BoxStatus.accepted)


@dataclass(frozen=True)
class Selection:
    """The images a snapshot takes and the split each lands in."""

    images: list[sa.Row[int, str, str, int, Split | None]]
    split_of: dict[int, str]

    @property
    def val_images(self) -> int:
        return sum(1 for s in self.split_of.values() if s == "val")

    @property
    def train_images(self) -> int:
        return len(self.images) - self.val_images


def select(
    db: Session, project_id: int, *, val_fraction: float, seed: int, only_reviewed: bool
) -> Selection:
    images = list(
        db.execute(
            sa.select(Image.id, Image.sha256, Image.format, Image.revision, Image.split)
            .where(image_filter(project_id, only_reviewed))
            .order_by(Image.id)
        ).all()
    )
    split_of: dict[int, str] = {}
    for image in images:
        if val_fraction > 0:
            val = drawn_for_val(seed, image.sha256, val_fraction)
        else:
            val = image.split == Split.val
        split_of[image.id] = "val" if val else "train"
    return Selection(images, split_of)


def problem(n_images: int, only_reviewed: bool) -> str | None:
    """Why a selection of ``n_images`` cannot train, or None."""
    if n_images >= MIN_IMAGES:
        return None
    return (
        f"training needs at least {MIN_IMAGES} {'reviewed ' if only_reviewed else ''}images; "
        f"this project has {n_images}"
    )


def build(
    db: Session,
    storage: Storage,
    project_id: int,
    classes: list[str],
    *,
    val_fraction: float,
    seed: int,
    only_reviewed: bool = True,
) -> Snapshot:
    selection = select(
        db, project_id, val_fraction=val_fraction, seed=seed, only_reviewed=only_reviewed
    )
    images, split_of = selection.images, selection.split_of
    refused = problem(len(images), only_reviewed)
    if refused:
        raise EmptyDataset(refused)
    identity = json.dumps(
        {
            "classes": classes,
            "val_fraction": val_fraction,
            "seed": seed,
            "only_reviewed": only_reviewed,
            "images": [[i.id, i.revision] for i in images],
        },
        separators=(",", ":"),
    )
    key = hashlib.sha256(identity.encode()).hexdigest()
    root = storage.root / "snapshots" / key
    counts = {"train": selection.train_images, "val": selection.val_images}
    if (root / "data.yaml").exists():
        return Snapshot(
            key,
            root,
            root / "data.yaml",
            classes,
            counts["train"],
            counts["val"],
            _count_boxes(db, project_id, only_reviewed),
        )

    tmp = storage.tmp_dir / f"snapshot-{uuid.uuid4().hex}"
    for split in ("train", "val"):
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "labels" / split).mkdir(parents=True)
    try:
        for image in images:
            name = f"{image.id}{EXTENSIONS.get(image.format, ('.jpg',))[0]}"
            _link(storage.blob_file(image.sha256), tmp / "images" / split_of[image.id] / name)
        boxes = 0
        rows = db.execute(
            sa.select(
                Annotation.image_id,
                Annotation.class_id,
                Annotation.x,
                Annotation.y,
                Annotation.w,
                Annotation.h,
            )
            .join(Image, Image.id == Annotation.image_id)
            .where(box_filter(project_id, only_reviewed))
            .order_by(Annotation.image_id, Annotation.position)
        )
        lines: dict[int, list[str]] = {}
        for image_id, class_id, x, y, w, h in rows:
            lines.setdefault(image_id, []).append(to_yolo_line(class_id, x, y, w, h))
            boxes += 1
        for image in images:
            # An image with no boxes is a negative example: an empty label file.
            label = tmp / "labels" / split_of[image.id] / f"{image.id}.txt"
            label.write_text("".join(lines.get(image.id, [])))
        # Ultralytics needs a validation set; with none, it validates on the training set.
        val_dir = "images/val" if counts["val"] else "images/train"
        names = "\n".join(f"  {i}: {json.dumps(n)}" for i, n in enumerate(classes))
        (tmp / "data.yaml").write_text(
            f"path: {json.dumps(str(root))}\ntrain: images/train\nval: {val_dir}\nnames:\n{names}\n"
        )
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "data.yaml").exists():
                raise
            # Another attempt built the same snapshot first: same content, keep theirs.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Snapshot(key, root, root / "data.yaml", classes, counts["train"], counts["val"], boxes)


def _count_boxes(db: Session, project_id: int, only_reviewed: bool) -> int:
    return (
        db.scalar(
            sa.select(sa.func.count())
            .select_from(Annotation)
            .join(Image, Image.id == Annotation.image_id)
            .where(box_filter(project_id, only_reviewed))
        )
        or 0
    )


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
