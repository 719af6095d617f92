"""The YOLO layout: ``images/...`` with ``labels/...`` beside it (optionally split into
train/val/test folders, either ``images/train`` or ``train/images``), or label files
next to their images (CVAT's "YOLO 1.1"); classes from ``data.yaml`` or a class list."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import Node

from server.annotations.schemas import Box
from server.datasets.boxes import BadBox, from_yolo_line
from server.datasets.layout import Plan, PlannedImage, is_image_name, split_of
from server.datasets.schemas import Issue
from server.datasets.zipread import MemberError, read_small
from server.jobs.context import JobFailed
from server.projects.schemas import MAX_CLASS_NAME_LENGTH, MAX_CLASSES

_YAML_NAMES = ("data.yaml", "dataset.yaml")
_LIST_NAMES = ("classes.txt", "obj.names")
MAX_LABEL_FILE_BYTES = 16 * 1024 * 1024
# A data.yaml is a few keys and a list of names; nothing real nests deeper than this.
_MAX_YAML_DEPTH = 16


class _DatasetYamlLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses aliases and deep nesting while composing, before any
    Python object exists.

    An alias makes a node reachable many times over: a 444-byte chain of them ("billion
    laughs") expands to a gigabyte once the result is walked or turned into text, and
    the walk holds the GIL, which in standalone mode stalls the API in the same process.
    Refused here, the cost of a parse is linear in the (capped) size of the file.
    """

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            raise ComposerError(
                None,
                None,
                "uses a YAML alias (*name); aliases are not allowed in a dataset file",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        if self._depth >= _MAX_YAML_DEPTH:
            raise ComposerError(
                None,
                None,
                f"nests deeper than {_MAX_YAML_DEPTH} levels",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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


def _class_name(member: str, index: int, value: object) -> str:
    """A class name as the project will store it. YAML reads ``names: [0, 1]`` as
    numbers, which are fine as names; booleans (``yes``/``no``), nulls and containers
    are not names, and turning them into text would hide the mistake."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        hint = "" if isinstance(value, list | dict) else " (quote it)"
        raise JobFailed(
            f"{member}: the name of class {index} must be text, not {type(value).__name__}{hint}"
        )
    name = str(value)
    if len(name) > MAX_CLASS_NAME_LENGTH:
        raise JobFailed(
            f"{member}: the name of class {index} is {len(name)} characters, over the limit "
            f"of {MAX_CLASS_NAME_LENGTH}"
        )
    return name


def _check_count(member: str, count: int) -> None:
    if count > MAX_CLASSES:
        raise JobFailed(f"{member} names {count} classes, over the limit of {MAX_CLASSES}")


def _class_index(member: str, key: object) -> int:
    if isinstance(key, str) and key.isascii() and key.isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int):
        raise JobFailed(f"{member}: class index {str(key)[:50]!r} is not an integer")
    if key < 0:
        raise JobFailed(f"{member}: class index {key} is negative")
    return key


def _names_from_yaml(member: str, data: bytes) -> dict[int, str]:
    try:
        doc: Any = yaml.load(data, Loader=_DatasetYamlLoader)  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, RecursionError) as exc:
        raise JobFailed(f"{member} is not valid YAML: {str(exc)[:500]}") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, list):
        _check_count(member, len(names))
        return {index: _class_name(member, index, name) for index, name in enumerate(names)}
    if isinstance(names, dict):
        _check_count(member, len(names))
        classes: dict[int, str] = {}
        for key, name in names.items():
            index = _class_index(member, key)
            classes[index] = _class_name(member, index, name)
        return classes
    raise JobFailed(f"{member} has no 'names' list or {{index: name}} mapping of the classes")


def _names_from_list(member: str, data: bytes) -> dict[int, str]:
    # Counted on the bytes first: splitting a file of a million short lines would
    # build a million strings only to refuse them.
    _check_count(member, data.rstrip().count(b"\n") + 1)
    lines = data.decode("utf-8-sig", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    _check_count(member, len(lines))
    return {index: _class_name(member, index, line.strip()) for index, line in enumerate(lines)}


def _classes(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], max_bytes: int
) -> dict[int, str]:
    member = _shallowest(members, _YAML_NAMES) or _shallowest(members, _LIST_NAMES)
    if member is None:
        return {}
    try:
        data = read_small(archive, members[member], max_bytes)
    except MemberError as exc:
        raise JobFailed(f"{member} {exc}") from None
    if member.lower().endswith(".yaml"):
        return _names_from_yaml(member, data)
    return _names_from_list(member, data)


def plan(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], *, max_class_file_bytes: int
) -> Plan:
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
    classes = _classes(archive, members, max_class_file_bytes)
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
