"""The COCO layout: one or more JSON files with ``images``, ``annotations`` and
``categories`` (``bbox`` = ``[x, y, w, h]`` in pixels), image files anywhere in the zip.

Every JSON file is parsed and checked before the import writes anything, so a broken
file fails the job with nothing half-imported.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any

from server.annotations.schemas import Box
from server.datasets.boxes import BadBox, from_coco
from server.datasets.layout import Plan, PlannedImage, is_image_name, split_of
from server.datasets.schemas import Issue
from server.datasets.zipread import MemberError, read_small
from server.jobs.context import JobFailed
from server.models.image import Split
from server.projects.schemas import MAX_CLASS_NAME_LENGTH, MAX_CLASSES

_SPLIT_IN_NAME = re.compile(r"(?:^|[^a-z])(train|val|valid|validation|test)(?:[^a-z]|$)")
_SPLITS = {"train": Split.train, "test": Split.test}


def _load(archive: zipfile.ZipFile, name: str, max_bytes: int) -> dict[str, Any]:
    try:
        data = read_small(archive, archive.getinfo(name), max_bytes)
    except MemberError as exc:
        raise JobFailed(f"{name} {exc}") from None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise JobFailed(f"{name} is not valid JSON: {exc}; nothing was imported") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise JobFailed(
            f"{name} is not a COCO file: it needs 'images', 'annotations' and 'categories' "
            "lists; nothing was imported"
        )
    return doc


def _categories(docs: list[tuple[str, dict[str, Any]]]) -> dict[int, str]:
    classes: dict[int, str] = {}
    for name, doc in docs:
        for index, category in enumerate(doc["categories"]):
            cid = category.get("id") if isinstance(category, dict) else None
            label = category.get("name") if isinstance(category, dict) else None
            if isinstance(cid, bool) or not isinstance(cid, int) or not isinstance(label, str):
                raise JobFailed(
                    f"{name}: categories[{index}] needs an integer 'id' and a 'name'; "
                    "nothing was imported"
                )
            if len(label) > MAX_CLASS_NAME_LENGTH:
                raise JobFailed(
                    f"{name}: categories[{index}] has a name of {len(label)} characters, over "
                    f"the limit of {MAX_CLASS_NAME_LENGTH}; nothing was imported"
                )
            if classes.get(cid, label) != label:
                raise JobFailed(
                    f"{name}: category id {cid} is both {classes[cid]!r} and {label!r}; "
                    "nothing was imported"
                )
            classes[cid] = label
            if len(classes) > MAX_CLASSES:
                raise JobFailed(
                    f"the COCO files name more than {MAX_CLASSES} categories; nothing was imported"
                )
    return dict(sorted(classes.items()))


def _split_of_json(name: str) -> Split | None:
    found = _SPLIT_IN_NAME.search(PurePosixPath(name).stem.lower())
    if found is not None:
        return _SPLITS.get(found.group(1), Split.val)
    return split_of(name)


class _Finder:
    """Finds the member a ``file_name`` means: its path (from the zip root or the JSON's
    folder), else the one image with that path ending or base name."""

    def __init__(self, images: list[str]) -> None:
        self.by_path = {m.lower(): m for m in images}
        self.by_base: dict[str, list[str]] = defaultdict(list)
        for member in images:
            self.by_base[PurePosixPath(member).name.lower()].append(member)

    def find(self, file_name: str, json_dir: str) -> tuple[str | None, str]:
        key = file_name.replace("\\", "/").lower()
        while key.startswith(("./", "/")):
            key = key[1:] if key.startswith("/") else key[2:]
        for candidate in (key, f"{json_dir}/{key}" if json_dir else key):
            if candidate in self.by_path:
                return self.by_path[candidate], ""
        same_name = self.by_base.get(PurePosixPath(key).name, [])
        ending = [m for m in same_name if m.lower().endswith("/" + key)]
        for matches in (ending, same_name):
            if len(matches) == 1:
                return matches[0], ""
            if len(matches) > 1:
                return None, f"{len(matches)} images in the zip match {file_name!r}"
        return None, f"image {file_name!r} is not in the zip"


def _image_fields(image: Any) -> tuple[int, str, int, int] | str:
    """(id, file_name, width, height) of a COCO image entry, or why it is unusable."""
    if not isinstance(image, dict):
        return "is not an object"
    values = image.get("id"), image.get("file_name"), image.get("width"), image.get("height")
    image_id, file_name, width, height = values
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        return "has no integer 'id'"
    if not isinstance(file_name, str) or not file_name.strip():
        return "has no 'file_name'"
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return "needs positive integer 'width' and 'height'"
    assert isinstance(width, int)
    assert isinstance(height, int)
    return image_id, file_name, width, height


class _Planner:
    def __init__(self, members: dict[str, zipfile.ZipInfo], classes: dict[int, str]) -> None:
        images = [m for m in members if is_image_name(m)]
        self.finder = _Finder(images)
        self.classes = classes
        self.planned: dict[str, PlannedImage] = {}
        self.plan = Plan(format="coco", classes=classes, images=[])
        self.unreferenced = images

    def skip(self, file: str, reason: str, labels: int = 1) -> None:
        self.plan.issues.append(Issue(file=file, reason=reason))
        self.plan.labels_skipped += labels

    def add_document(self, name: str, doc: dict[str, Any]) -> None:
        by_image: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for index, annotation in enumerate(doc["annotations"]):
            image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
            if isinstance(image_id, bool) or not isinstance(image_id, int):
                self.skip(name, f"annotations[{index}] has no integer 'image_id'")
                continue
            by_image[image_id].append((index, annotation))
        parent = str(PurePosixPath(name).parent)
        json_dir = "" if parent == "." else parent.lower()
        split = _split_of_json(name)
        for index, image in enumerate(doc["images"]):
            fields = _image_fields(image)
            if isinstance(fields, str):
                raw_id = image.get("id") if isinstance(image, dict) else None
                lost = by_image.pop(raw_id, []) if isinstance(raw_id, int) else []
                self.skip(name, f"images[{index}] {fields}", labels=len(lost))
                continue
            image_id, file_name, width, height = fields
            annotations = by_image.pop(image_id, [])
            member, why = self.finder.find(file_name, json_dir)
            if member is None:
                self.skip(name, f"images[{index}]: {why}", labels=len(annotations))
                continue
            if member in self.planned:
                self.skip(
                    name,
                    f"images[{index}]: {member} is listed more than once; only its first "
                    "entry was used",
                    labels=len(annotations),
                )
                continue
            boxes = self._boxes(name, member, annotations, width, height)
            self.planned[member] = PlannedImage(
                entry=member,
                split=split or split_of(member),
                boxes=boxes,
                expected_size=(width, height),
            )
        for image_id, orphans in by_image.items():
            for index, _ in orphans:
                self.skip(name, f"annotations[{index}]: image_id {image_id} is not in 'images'")

    def _boxes(
        self, name: str, member: str, annotations: list[tuple[int, Any]], width: int, height: int
    ) -> list[Box] | None:
        boxes: list[Box] = []
        for index, annotation in annotations:
            try:
                boxes.append(
                    from_coco(
                        annotation.get("bbox"),
                        annotation.get("category_id"),
                        self.classes,
                        width,
                        height,
                    )
                )
            except BadBox as exc:
                self.skip(name, f"annotations[{index}] ({member}): {exc}")
        # Listed with no annotations: a negative image. Listed, but every annotation
        # failed: nothing is known, so the image stays unlabelled.
        return boxes if boxes or not annotations else None

    def finish(self) -> Plan:
        for member in self.unreferenced:
            if member not in self.planned:
                self.planned[member] = PlannedImage(entry=member, split=split_of(member))
        self.plan.images = [self.planned[m] for m in sorted(self.planned)]
        return self.plan


def plan(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], *, max_json_bytes: int
) -> Plan:
    """``max_json_bytes`` caps all JSON files together, checked on the sizes the zip
    declares before any is parsed (and again while each is read): ``json.loads`` holds
    every document at once, at several times its size in objects, and in standalone
    mode it runs in the API's process."""
    names = [name for name in sorted(members) if name.lower().endswith(".json")]
    declared = sum(members[name].file_size for name in names)
    if declared > max_json_bytes:
        raise JobFailed(
            f"the zip's JSON files hold {declared} bytes, over the limit of {max_json_bytes} "
            "(OCULAB_MAX_COCO_JSON_BYTES); nothing was imported"
        )
    docs = [(name, _load(archive, name, max_json_bytes)) for name in names]
    planner = _Planner(members, _categories(docs))
    for name, doc in docs:
        planner.add_document(name, doc)
    return planner.finish()
