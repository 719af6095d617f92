"""What an import will do, decided from the zip's names (and COCO's JSON) before any
image is written: which members are images, which split each belongs to, where its
labels are, and what the dataset calls its classes."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from server.annotations.schemas import Box
from server.datasets.schemas import Issue
from server.datasets.zipread import is_junk
from server.images.processing import DATASET_SUFFIXES
from server.models.image import Split

# Folder names that mean a split; Roboflow and CVAT spell validation "valid".
SPLIT_NAMES = {
    "train": Split.train,
    "training": Split.train,
    "val": Split.val,
    "valid": Split.val,
    "validation": Split.val,
    "test": Split.test,
    "testing": Split.test,
}


@dataclass
class PlannedImage:
    entry: str  # the zip member holding the image
    split: Split | None
    # YOLO: the member with this image's labels, parsed when its batch runs (keeps
    # memory flat on big datasets); None when the image has no label file.
    label_file: str | None = None
    # COCO: boxes parsed up front (the JSON is validated before anything is written);
    # None when no JSON lists the image. Class ids are still the dataset's.
    boxes: list[Box] | None = None
    # COCO: the width and height the JSON gives, checked against the decoded image.
    expected_size: tuple[int, int] | None = None


@dataclass
class Plan:
    format: Literal["yolo", "coco"]
    classes: dict[int, str]  # the dataset's class id -> name
    images: list[PlannedImage]
    issues: list[Issue] = field(default_factory=list)
    labels_skipped: int = 0


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in DATASET_SUFFIXES


def split_of(path: str) -> Split | None:
    """The split named by the nearest folder above ``path``, if any."""
    for part in reversed(PurePosixPath(path).parts[:-1]):
        split = SPLIT_NAMES.get(part.lower())
        if split is not None:
            return split
    return None


def dataset_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Regular files by name, without directories and desktop clutter. Names were
    checked for traversal when the zip was accepted."""
    return {
        info.filename: info
        for info in archive.infolist()
        if not info.is_dir() and not is_junk(info.filename)
    }


def detect(members: dict[str, zipfile.ZipInfo]) -> Literal["yolo", "coco"]:
    """YOLO when anything looks like YOLO labels or class lists; else COCO when there is
    JSON; else YOLO, which imports plain images as unlabelled."""
    for name in members:
        path = PurePosixPath(name.lower())
        if path.suffix == ".txt" and "labels" in path.parts[:-1]:
            return "yolo"
        if path.name in ("data.yaml", "dataset.yaml", "classes.txt", "obj.names"):
            return "yolo"
    if any(name.lower().endswith(".json") for name in members):
        return "coco"
    return "yolo"
