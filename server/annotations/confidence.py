"""The stored ``images.min_confidence`` that orders the review queue."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.models.annotation import Annotation, BoxStatus
from server.models.image import Image

# The lowest confidence among an image's predicted boxes (a box without a confidence
# counts as 0); NULL when the image has no predicted box.
_LOWEST = (
    sa.select(sa.func.min(sa.func.coalesce(Annotation.confidence, 0.0)))
    .where(Annotation.image_id == Image.id, Annotation.status == BoxStatus.predicted)
    .correlate(Image)
    .scalar_subquery()
)


class _ScoredBox(Protocol):
    @property
    def confidence(self) -> float | None: ...

    @property
    def status(self) -> BoxStatus: ...


def lowest_predicted_confidence(boxes: Iterable[_ScoredBox]) -> float | None:
    """What ``refresh_min_confidence`` stores for an image holding exactly these boxes;
    ``boxes.replace_boxes`` knows the boxes it writes, so it sets the value in its own
    UPDATE."""
    scores = [box.confidence or 0.0 for box in boxes if box.status is BoxStatus.predicted]
    return min(scores) if scores else None


def refresh_min_confidence(db: Session, image_ids: Iterable[int]) -> None:
    """Recomputes ``min_confidence`` of these images from the boxes they hold: the
    value every write of boxes (``boxes.replace_boxes``) must leave, which is how the
    tests check it does."""
    ids = sorted(set(image_ids))
    for start in range(0, len(ids), 500):
        db.execute(
            sa.update(Image)
            .where(Image.id.in_(ids[start : start + 500]))
            .values(min_confidence=_LOWEST)
            .execution_options(synchronize_session=False)
        )
