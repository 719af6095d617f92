"""``annotations.boxes.replace_boxes``, the one write of an image's boxes: the guards
that tell its three callers apart (the editor's save, an auto-label batch, an import)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.annotations.boxes import NewBox, replace_boxes
from server.kit.db import utcnow
from server.models.annotation import Annotation, BoxStatus
from server.models.image import Image, ImageStatus
from tests.factories import ApiClient

BOX = {"class_id": 0, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}


def _predicted(confidence: float) -> NewBox:
    return NewBox(0, 0.1, 0.1, 0.2, 0.2, "manual", confidence, BoxStatus.predicted)


def _image(db: Session, image_id: int) -> Image:
    image = db.get(Image, image_id, populate_existing=True)
    assert image is not None
    return image


def _boxes(db: Session, image_id: int) -> list[tuple[float | None, BoxStatus]]:
    rows = db.execute(
        sa.select(Annotation.confidence, Annotation.status)
        .where(Annotation.image_id == image_id)
        .order_by(Annotation.position)
    )
    return [(confidence, status) for confidence, status in rows]


def test_a_stale_revision_writes_nothing(alice: ApiClient, db: Session) -> None:
    image_id = int(alice.image(alice.project(classes=["cat"])["id"])["image_id"])
    assert alice.put(
        f"/api/images/{image_id}/annotations", json={"base_revision": 0, "boxes": [BOX]}
    ).is_success
    written = replace_boxes(
        db.connection(),
        image_id,
        [_predicted(0.5)],
        expected_revision=0,
        status=ImageStatus.predicted,
        annotated_by=None,
        now=utcnow(),
    )
    assert not written
    assert _image(db, image_id).revision == 1
    assert _boxes(db, image_id) == [(None, BoxStatus.accepted)]


def test_keep_reviewed_refuses_a_reviewed_image_at_its_revision(
    alice: ApiClient, db: Session
) -> None:
    image_id = int(alice.image(alice.project(classes=["cat"])["id"])["image_id"])
    assert alice.put(
        f"/api/images/{image_id}/annotations", json={"base_revision": 0, "boxes": [BOX]}
    ).is_success
    assert _image(db, image_id).status is ImageStatus.reviewed

    def write(keep_reviewed: bool) -> bool:
        return replace_boxes(
            db.connection(),
            image_id,
            [_predicted(0.5)],
            expected_revision=1,
            status=ImageStatus.predicted,
            annotated_by=None,
            now=utcnow(),
            keep_reviewed=keep_reviewed,
        )

    assert not write(keep_reviewed=True)
    assert _boxes(db, image_id) == [(None, BoxStatus.accepted)]
    # Without the guard (as for an editor's save) the revision alone decides.
    assert write(keep_reviewed=False)
    assert _boxes(db, image_id) == [(0.5, BoxStatus.predicted)]


def test_a_write_sets_revision_status_confidence_and_keeps_or_sets_the_annotator(
    alice: ApiClient, db: Session
) -> None:
    image_id = int(alice.image(alice.project(classes=["cat"])["id"])["image_id"])
    assert alice.put(
        f"/api/images/{image_id}/annotations",
        json={"base_revision": 0, "boxes": [BOX | {"status": "predicted", "confidence": 0.9}]},
    ).is_success
    # A model's boxes: the annotator who saved last stays.
    boxes = [_predicted(0.7), _predicted(0.3)]
    assert replace_boxes(
        db.connection(),
        image_id,
        boxes,
        expected_revision=1,
        status=ImageStatus.predicted,
        annotated_by=None,
        now=utcnow(),
        keep_reviewed=True,
    )
    image = _image(db, image_id)
    assert (image.revision, image.status) == (2, ImageStatus.predicted)
    assert image.annotated_by == alice.user_id
    assert image.min_confidence == 0.3
    assert _boxes(db, image_id) == [(0.7, BoxStatus.predicted), (0.3, BoxStatus.predicted)]
    # An empty list clears the boxes; a person's write names them.
    assert replace_boxes(
        db.connection(),
        image_id,
        [],
        expected_revision=2,
        status=ImageStatus.reviewed,
        annotated_by=alice.user_id,
        now=utcnow(),
    )
    image = _image(db, image_id)
    assert (image.revision, image.status, image.min_confidence) == (3, ImageStatus.reviewed, None)
    assert _boxes(db, image_id) == []
