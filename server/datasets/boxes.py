"""Turns one YOLO label line or one COCO bbox into a validated box, or says why not.

Boxes come back as annotation ``Box`` objects whose ``class_id`` is still the
dataset's own class id; the importer maps it onto the project's classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from server.annotations.schemas import Box
from server.models.annotation import BoxStatus

# Normalised coordinates that miss [0, 1] by float noise are clamped, not refused.
YOLO_TOLERANCE = 1e-6
# COCO tools commonly round boxes outwards to whole pixels; allow one pixel of overshoot.
COCO_TOLERANCE_PX = 1.0


class BadBox(ValueError):
    """A label that cannot become a box; the message is the reason shown to the user."""


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadBox(f"{what} {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise BadBox(f"{what} {text[:40]!r} is not a finite number")
    return value


def _class_id(value: float, classes: Mapping[int, str]) -> int:
    if not value.is_integer():
        raise BadBox(f"class id {value} is not an integer")
    class_id = int(value)
    if class_id not in classes:
        known = f"0..{max(classes)}" if classes else "none"
        raise BadBox(f"class id {class_id} is not one of the dataset's classes ({known})")
    return class_id


def _box(class_id: int, x: float, y: float, w: float, h: float, tol_x: float, tol_y: float) -> Box:
    if w <= 0 or h <= 0:
        raise BadBox("box has zero or negative width or height")
    if x < -tol_x or y < -tol_y or x + w > 1 + tol_x or y + h > 1 + tol_y:
        raise BadBox(
            f"box (x={x:.6g}, y={y:.6g}, w={w:.6g}, h={h:.6g}) lies outside the image "
            "(coordinates must be within [0, 1])"
        )
    left, top = max(x, 0.0), max(y, 0.0)
    right, bottom = min(x + w, 1.0), min(y + h, 1.0)
    # Shrinking by the clamp must not change a box that was inside in the first place.
    w = w if left == x and right == x + w else right - left
    h = h if top == y and bottom == y + h else bottom - top
    try:
        return Box(
            class_id=class_id,
            x=left,
            y=top,
            w=w,
            h=h,
            source="manual",
            status=BoxStatus.accepted,
        )
    except ValidationError as exc:
        reason = "; ".join(err["msg"] for err in exc.errors())
        raise BadBox(f"invalid box: {reason}") from None


def to_yolo_line(class_id: int, x: float, y: float, w: float, h: float) -> str:
    """``class cx cy w h`` from a top-left box, with enough digits that reading the line
    back gives the same box (to 1e-12)."""
    return f"{class_id} {x + w / 2:.12g} {y + h / 2:.12g} {w:.12g} {h:.12g}\n"


def from_yolo_line(line: str, classes: Mapping[int, str]) -> Box:
    """``class cx cy w h``, centre format, normalised."""
    fields = line.split()
    if len(fields) != 5:
        raise BadBox(f"expected 5 fields (class cx cy w h), got {len(fields)}")
    class_id = _class_id(_number(fields[0], "class id"), classes)
    cx, cy, w, h = (_number(text, "coordinate") for text in fields[1:])
    return _box(class_id, cx - w / 2, cy - h / 2, w, h, YOLO_TOLERANCE, YOLO_TOLERANCE)


def _pixel(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadBox(f"bbox value {str(value)[:40]!r} is not a number")
    if not math.isfinite(value):
        raise BadBox("bbox holds a non-finite number")
    return float(value)


def from_coco(
    bbox: Any, category_id: Any, classes: Mapping[int, str], width: int, height: int
) -> Box:
    """``bbox`` is ``[x, y, w, h]`` in pixels of an image ``width`` x ``height``."""
    if isinstance(category_id, bool) or not isinstance(category_id, int):
        raise BadBox(f"category_id {str(category_id)[:40]!r} is not an integer")
    if category_id not in classes:
        raise BadBox(f"category_id {category_id} is not one of the file's categories")
    if not isinstance(bbox, Sequence) or isinstance(bbox, str) or len(bbox) != 4:
        raise BadBox("bbox must be a list of 4 numbers [x, y, width, height]")
    x, y, w, h = (_pixel(v) for v in bbox)
    return _box(
        category_id,
        x / width,
        y / height,
        w / width,
        h / height,
        max(COCO_TOLERANCE_PX / width, YOLO_TOLERANCE),
        max(COCO_TOLERANCE_PX / height, YOLO_TOLERANCE),
    )
