"""A "shapes" dataset: squares, circles and triangles on noise, with exact boxes."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

CLASSES = ["square", "circle", "triangle"]


@dataclass(frozen=True)
class ShapeBox:
    class_id: int
    x: float
    y: float
    w: float
    h: float


def render(seed: int, size: int = 160, max_shapes: int = 3) -> tuple[bytes, list[ShapeBox]]:
    """One PNG and its boxes (top-left x, y and w, h, normalised)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic pixels, not secrets
    noise = bytes(rng.randrange(90, 166) for _ in range(size * size * 3))
    img = Image.frombytes("RGB", (size, size), noise)
    draw = ImageDraw.Draw(img)
    boxes: list[ShapeBox] = []
    for _ in range(rng.randint(1, max_shapes)):
        side = rng.randint(size // 6, size // 3)
        x0 = rng.randint(0, size - side - 1)
        y0 = rng.randint(0, size - side - 1)
        x1, y1 = x0 + side, y0 + side
        class_id = rng.randrange(len(CLASSES))
        # Saturated, class-coded colours (red squares, green circles, blue triangles)
        # so a nano model learns the task in a few CPU minutes.
        color = tuple(
            rng.randint(200, 255) if i == class_id else rng.randint(0, 60) for i in range(3)
        )
        if class_id == 0:
            draw.rectangle((x0, y0, x1, y1), fill=color)
        elif class_id == 1:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        else:
            draw.polygon(((x0 + side / 2, y0), (x1, y1), (x0, y1)), fill=color)
        boxes.append(ShapeBox(class_id, x0 / size, y0 / size, (side + 1) / size, (side + 1) / size))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue(), boxes
