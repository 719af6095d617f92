"""The YOLO layout: ``images/...`` with ``labels/...`` beside it (optionally split into
train/val/test folders, either ``images/train`` or ``train/images``), or label files
next to their images (CVAT's "YOLO 1.1"); classes from ``data.yaml`` or a class list."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from server.annotations.schemas import Box
from server.datasets.boxes import BadBox, from_yolo_line
from server.datasets.layout import Plan, PlannedImage, is_image_name, split_of
from server.datasets.schemas import Issue
from server.datasets.zipread import MemberError, read_small
from server.jobs.runtime import JobFailed

_YAML_NAMES = ("data.yaml", "dataset.yaml")
_LIST_NAMES = ("classes.txt", "obj.names")
_MAX_CLASS_FILE_BYTES = 4 * 1024 * 1024
MAX_LABEL_FILE_BYTES = 16 * 1024 * 1024


def _label_candidates(image: str) -> list[str]:
    """Where the image's label file may be: ``images`` swapped for ``labels`` (the last
    such folder), else beside the image."""
    path = PurePosixPath(image)
    parts = list(path.parts)
    candidates = []
    for index in range(len(parts) - 2, -1, -1):
        if parts[index].lower() == "images":
            parts[index] = "labels"
            candidates.append(str(PurePosixPath(*parts).with_suffix(".txt")))
            break
    candidates.append(str(path.with_suffix(".txt")))
    return candidates


def _shallowest(members: dict[str, zipfile.ZipInfo], names: tuple[str, ...]) -> str | None:
    found = [m for m in members if PurePosixPath(m).name.lower() in names]
    return min(found, key=lambda m: (m.count("/"), m), default=None)


def _names_from_yaml(member: str, data: bytes) -> dict[int, str]:
    try:
        doc: Any = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise JobFailed(f"{member} is not valid YAML: {exc}") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, list):
        return {index: str(name) for index, name in enumerate(names)}
    if isinstance(names, dict):
        classes: dict[int, str] = {}
        for key, name in names.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                raise JobFailed(f"{member}: class index {key!r} is not an integer") from None
            if index < 0:
                raise JobFailed(f"{member}: class index {index} is negative")
            classes[index] = str(name)
        return classes
    raise JobFailed(f"{member} has no 'names' list or {{index: name}} mapping of the classes")


def _names_from_list(member: str, data: bytes) -> dict[int, str]:
    lines = data.decode("utf-8-sig", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return {index: line.strip() for index, line in enumerate(lines)}


def _classes(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> dict[int, str]:
    member = _shallowest(members, _YAML_NAMES) or _shallowest(members, _LIST_NAMES)
    if member is None:
        return {}
    try:
        data = read_small(archive, members[member], _MAX_CLASS_FILE_BYTES)
    except MemberError as exc:
        raise JobFailed(f"{member} {exc}") from None
    if member.lower().endswith(".yaml"):
        return _names_from_yaml(member, data)
    return _names_from_list(member, data)


def plan(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> Plan:
    lowered = {name.lower(): name for name in members}
    images: list[PlannedImage] = []
    used_labels: set[str] = set()
    for name in sorted(members):
        if not is_image_name(name):
            continue
        label = next(
            (lowered[c.lower()] for c in _label_candidates(name) if c.lower() in lowered), None
        )
        if label is not None:
            used_labels.add(label)
        images.append(PlannedImage(entry=name, split=split_of(name), label_file=label))
    classes = _classes(archive, members)
    if used_labels and not classes:
        raise JobFailed(
            "the zip has YOLO label files but no data.yaml or classes.txt naming the classes"
        )
    result = Plan(format="yolo", classes=classes, images=images)
    for name in sorted(members):
        path = PurePosixPath(name.lower())
        if path.suffix == ".txt" and "labels" in path.parts[:-1] and name not in used_labels:
            result.issues.append(Issue(file=name, reason="label file without a matching image"))
    return result


@dataclass
class ParsedLabels:
    boxes: list[Box]
    issues: list[Issue]

    @property
    def usable(self) -> bool:
        """An empty file marks a negative image; a file whose every line failed (or that
        cannot be read) says nothing, so the image stays unlabelled."""
        return bool(self.boxes) or not self.issues


def parse_labels(archive: zipfile.ZipFile, member: str, classes: dict[int, str]) -> ParsedLabels:
    """Every well-formed line becomes a box; every other line is an issue."""
    try:
        data = read_small(archive, archive.getinfo(member), MAX_LABEL_FILE_BYTES)
    except MemberError as exc:
        return ParsedLabels([], [Issue(file=member, reason=f"label file {exc}")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return ParsedLabels([], [Issue(file=member, reason="label file is not UTF-8 text")])
    parsed = ParsedLabels([], [])
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.boxes.append(from_yolo_line(line, classes))
        except BadBox as exc:
            parsed.issues.append(Issue(file=member, line=number, reason=str(exc)))
    return parsed
