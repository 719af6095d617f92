"""Writers for the two export layouts. Each gets images one at a time, in id order,
and writes straight into the zip; nothing grows with the dataset except the zip's own
central directory (and COCO's JSON, which is spooled through temp files)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import yaml

from server.datasets.boxes import to_yolo_line
from server.datasets.zipwrite import Rewindable, ZipSink
from server.kit.storage import Storage
from server.models.image import ImageStatus


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
    """The export's entries: images stored (they are compressed already), text deflated."""

    def __init__(self, sink: ZipSink) -> None:
        self.sink = sink

    def copy_file(self, name: str, fd: int, size: int) -> None:
        self.sink.add_file(name, fd, size)

    def copy_stream(self, name: str, parts: list[Rewindable | bytes]) -> None:
        self.sink.add_stream(name, parts)

    def text(self, name: str, data: str) -> None:
        self.sink.add_bytes(name, data.encode("utf-8"), deflate=True)


class FormatWriter(Protocol):
    def add(self, image: ExportImage, boxes: list[ExportBox]) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


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
        self.file: io.BufferedRandom = open(path, "w+b")  # noqa: SIM115 - closed in close()
        self.count = 0

    def append(self, item: str) -> None:
        """One element, as JSON text."""
        self.file.write((f",{item}" if self.count else item).encode())
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
        # The text json.dumps would write (compact), built directly: a third of the
        # time, for the export's most numerous records. Floats print as repr, exactly
        # as json writes a finite float; stored boxes are finite.
        images.append(
            f'{{"id":{image.id},"file_name":{json.dumps(image.name)},'
            f'"width":{width},"height":{height}}}'
        )
        for box in boxes:
            self.annotation_id += 1
            x, y = float(box.x * width), float(box.y * height)
            w, h = float(box.w * width), float(box.h * height)
            spooled_boxes.append(
                f'{{"id":{self.annotation_id},"image_id":{image.id},'
                f'"category_id":{box.class_id + 1},"bbox":[{x!r},{y!r},{w!r},{h!r}],'
                f'"area":{w * h!r},"iscrowd":0}}'
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
