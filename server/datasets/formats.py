"""Writers for the two export layouts. Each gets images one at a time, in id order,
and writes straight into the zip; nothing grows with the dataset except the zip's own
central directory (and COCO's JSON, which is spooled through temp files)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

import yaml

from server.datasets.boxes import to_yolo_line
from server.images.models import ImageStatus
from server.kit.storage import Storage

_CHUNK = 1024 * 1024
# Enough digits that a re-import reproduces every coordinate within 1e-9.


class ExportImage(NamedTuple):
    id: int
    sha256: str
    name: str  # unique inside the zip
    format: str
    width: int
    height: int
    status: ImageStatus
    split: str  # train | val | test


class ExportBox(NamedTuple):
    class_id: int
    x: float
    y: float
    w: float
    h: float
    confidence: float | None = None  # the model's; None for a box a person drew


class ZipWriter:
    """Adds entries with one timestamp and sane permissions."""

    def __init__(self, archive: zipfile.ZipFile, date_time: tuple[int, int, int, int, int, int]):
        self.archive = archive
        self.date_time = date_time

    def _info(self, name: str, method: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self.date_time)
        info.compress_type = method
        info.external_attr = 0o644 << 16
        return info

    def copy_file(self, name: str, source: IO[bytes], size: int) -> None:
        """Stored, not deflated: images are compressed already."""
        info = self._info(name, zipfile.ZIP_STORED)
        info.file_size = size  # lets zipfile pick ZIP64 headers up front for huge files
        with self.archive.open(info, "w") as target:
            shutil.copyfileobj(source, target, _CHUNK)

    def copy_stream(self, name: str, parts: list[IO[bytes] | bytes]) -> None:
        info = self._info(name, zipfile.ZIP_DEFLATED)
        with self.archive.open(info, "w", force_zip64=True) as target:
            for part in parts:
                if isinstance(part, bytes):
                    target.write(part)
                else:
                    part.seek(0)
                    shutil.copyfileobj(part, target, _CHUNK)

    def text(self, name: str, data: str) -> None:
        self.archive.writestr(self._info(name, zipfile.ZIP_DEFLATED), data.encode("utf-8"))


class FormatWriter(Protocol):
    def add(self, image: ExportImage, boxes: list[ExportBox]) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


def _image_path(image: ExportImage) -> str:
    return f"images/{image.split}/{image.name}"


class YoloWriter:
    """``data.yaml``, ``images/<split>/<name>``, ``labels/<split>/<stem>.txt`` (class cx
    cy w h, normalised centre format). Unlabelled images get no label file, so a
    re-import keeps them unlabelled; an empty file marks a reviewed negative."""

    def __init__(self, out: ZipWriter, storage: Storage, classes: list[str]) -> None:
        self.out = out
        self.storage = storage
        self.classes = classes
        self.splits: set[str] = set()

    def add(self, image: ExportImage, boxes: list[ExportBox]) -> None:
        self.splits.add(image.split)
        if image.status is ImageStatus.unlabeled:
            return
        lines = "".join(to_yolo_line(b.class_id, b.x, b.y, b.w, b.h) for b in boxes)
        stem = os.path.splitext(image.name)[0]
        self.out.text(f"labels/{image.split}/{stem}.txt", lines)

    def finish(self) -> None:
        # Ultralytics refuses a dataset without a val set; fall back to train.
        val = "images/val" if "val" in self.splits else "images/train"
        data: dict[str, Any] = {"path": ".", "train": "images/train", "val": val}
        if "test" in self.splits:
            data["test"] = "images/test"
        data["nc"] = len(self.classes)
        data["names"] = list(self.classes)
        self.out.text("data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    def close(self) -> None:
        pass


class _Spool:
    """A JSON array written element by element to a temp file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] = open(path, "w+b")  # noqa: SIM115 - closed in close()
        self.count = 0

    def append(self, item: dict[str, Any]) -> None:
        if self.count:
            self.file.write(b",")
        self.file.write(json.dumps(item, separators=(",", ":")).encode())
        self.count += 1

    def close(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


class CocoWriter:
    """``annotations/instances_<split>.json`` + ``images/<split>/<name>``; bbox in pixels
    from the stored width and height, category ids = class index + 1. Unlabelled images
    are exported as files but left out of the JSON, so a re-import keeps them
    unlabelled."""

    def __init__(self, out: ZipWriter, storage: Storage, classes: list[str]) -> None:
        self.out = out
        self.storage = storage
        self.classes = classes
        self.spools: dict[str, tuple[_Spool, _Spool]] = {}
        self.annotation_id = 0

    def _spools(self, split: str) -> tuple[_Spool, _Spool]:
        if split not in self.spools:
            self.spools[split] = (
                _Spool(self.storage.temp_path(".images.json")),
                _Spool(self.storage.temp_path(".annotations.json")),
            )
        return self.spools[split]

    def add(self, image: ExportImage, boxes: list[ExportBox]) -> None:
        if image.status is ImageStatus.unlabeled:
            return
        images, spooled_boxes = self._spools(image.split)
        width, height = image.width, image.height
        images.append({"id": image.id, "file_name": image.name, "width": width, "height": height})
        for box in boxes:
            self.annotation_id += 1
            w, h = box.w * width, box.h * height
            spooled_boxes.append(
                {
                    "id": self.annotation_id,
                    "image_id": image.id,
                    "category_id": box.class_id + 1,
                    "bbox": [box.x * width, box.y * height, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )

    def finish(self) -> None:
        if not self.spools:
            self._spools("train")  # a valid (empty) COCO file rather than none at all
        categories = [
            {"id": index + 1, "name": name, "supercategory": ""}
            for index, name in enumerate(self.classes)
        ]
        for split, (images, boxes) in sorted(self.spools.items()):
            head = {"info": {"description": "Exported by Oculab"}, "licenses": []}
            opening = json.dumps(head)[:-1] + ', "categories": ' + json.dumps(categories)
            images.file.flush()
            boxes.file.flush()
            self.out.copy_stream(
                f"annotations/instances_{split}.json",
                [
                    (opening + ', "images": [').encode(),
                    images.file,
                    b'], "annotations": [',
                    boxes.file,
                    b"]}",
                ],
            )

    def close(self) -> None:
        for images, boxes in self.spools.values():
            images.close()
            boxes.close()
