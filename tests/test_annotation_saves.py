"""The editor's hot path: a save answers with what it wrote, sets what its boxes decide
in one UPDATE, and still goes through every check of the usual dependencies."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.annotations.confidence import lowest_predicted_confidence, refresh_min_confidence
from server.annotations.schemas import Box
from server.models.annotation import Annotation, BoxStatus
from server.models.image import Image
from tests.factories import ApiClient, Factory

BOX = {"class_id": 0, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}


@pytest.fixture
def image_id(alice: ApiClient) -> int:
    project = alice.project(classes=["cat", "dog"])
    return int(alice.image(project["id"])["image_id"])


def _url(image_id: int) -> str:
    return f"/api/images/{image_id}/annotations"


def test_a_save_answers_exactly_what_a_read_gives_back(
    alice: ApiClient, image_id: int, factory: Factory
) -> None:
    project_id = alice.get(f"/api/images/{image_id}").json()["project_id"]
    source = f"model:{factory.model(project_id)}"
    boxes = [
        BOX,
        # Past the right edge by float rounding: clamped, and answered clamped.
        {"class_id": 1, "x": 0.7, "y": 0.0, "w": 0.3000004, "h": 1},
        {**BOX, "source": source, "confidence": 0.4, "status": "predicted"},
        {**BOX, "x": 0.5, "source": source, "confidence": 0.9, "status": "rejected"},
    ]
    saved = alice.put(_url(image_id), json={"base_revision": 0, "boxes": boxes})
    assert saved.status_code == 200, saved.text
    assert saved.json() == alice.get(_url(image_id)).json()
    body = saved.json()
    assert body["revision"] == 1
    assert body["status"] == "predicted"
    assert body["annotated_by"] == alice.user_id
    assert body["boxes"][1]["w"] == pytest.approx(0.3, abs=1e-12)
    assert [b["status"] for b in body["boxes"]] == ["accepted", "accepted", "predicted", "rejected"]


def test_the_stored_min_confidence_is_what_a_recomputation_from_the_boxes_gives(
    alice: ApiClient, image_id: int, factory: Factory
) -> None:
    rng = random.Random(13)
    statuses = ["predicted", "accepted", "rejected"]
    for revision in range(12):
        boxes = [
            {
                **BOX,
                "confidence": rng.choice([None, round(rng.random(), 6)]),
                "status": rng.choice(statuses),
            }
            for _ in range(rng.randrange(0, 5))
        ]
        response = alice.put(_url(image_id), json={"base_revision": revision, "boxes": boxes})
        assert response.status_code == 200, response.text
        with factory.sessionmaker() as db:
            stored = db.scalar(sa.select(Image.min_confidence).where(Image.id == image_id))
            refresh_min_confidence(db, [image_id])
            recomputed = db.scalar(sa.select(Image.min_confidence).where(Image.id == image_id))
            db.rollback()
        assert stored == recomputed, boxes
        predicted = [b for b in boxes if b["status"] == "predicted"]
        expected = min((b["confidence"] or 0.0) for b in predicted) if predicted else None
        assert stored == expected


def test_lowest_predicted_confidence_counts_only_predicted_boxes() -> None:
    def box(confidence: float | None, status: BoxStatus) -> Box:
        return Box.model_validate({**BOX, "confidence": confidence, "status": status})

    assert lowest_predicted_confidence([]) is None
    assert lowest_predicted_confidence([box(0.1, BoxStatus.accepted)]) is None
    assert lowest_predicted_confidence([box(0.7, BoxStatus.predicted)]) == 0.7
    mixed = [box(0.05, BoxStatus.rejected), box(0.6, BoxStatus.predicted)]
    assert lowest_predicted_confidence(mixed) == 0.6
    assert lowest_predicted_confidence([*mixed, box(None, BoxStatus.predicted)]) == 0.0


def test_a_save_of_more_boxes_than_one_insert_takes_keeps_them_all_in_order(
    alice: ApiClient, image_id: int, factory: Factory
) -> None:
    boxes = [{**BOX, "x": i / 2000, "w": 0.01, "class_id": i % 2} for i in range(1203)]
    saved = alice.put(_url(image_id), json={"base_revision": 0, "boxes": boxes})
    assert saved.status_code == 200, saved.text
    read = alice.get(_url(image_id)).json()["boxes"]
    assert [(b["x"], b["class_id"]) for b in read] == [(b["x"], b["class_id"]) for b in boxes]
    assert factory.count(Annotation) == 1203
    with factory.sessionmaker() as db:
        positions = db.scalars(
            sa.select(Annotation.position)
            .where(Annotation.image_id == image_id)
            .order_by(Annotation.id)
        ).all()
    assert positions == list(range(1203))
    # Saving fewer replaces them all.
    again = alice.put(_url(image_id), json={"base_revision": 1, "boxes": [BOX]})
    assert again.status_code == 200
    assert factory.count(Annotation) == 1


def test_a_save_without_credentials_is_401_and_writes_nothing(
    client: TestClient, image_id: int, factory: Factory
) -> None:
    response = client.put(_url(image_id), json={"base_revision": 0, "boxes": [BOX]})
    assert response.status_code == 401
    assert client.get(_url(image_id)).status_code == 401
    assert factory.count(Annotation) == 0


def test_a_save_on_another_projects_image_is_404_and_writes_nothing(
    alice: ApiClient, bob: ApiClient, image_id: int, factory: Factory
) -> None:
    response = bob.put(_url(image_id), json={"base_revision": 0, "boxes": [BOX]})
    assert response.status_code == 404
    assert response.json() == {"detail": "image not found"}
    assert bob.get(_url(image_id)).status_code == 404
    assert alice.get(_url(image_id)).json()["revision"] == 0
    assert factory.count(Annotation) == 0


def test_a_cookie_session_save_needs_the_csrf_token(factory: Factory) -> None:
    factory.user("carol", password="correct horse battery")
    carol = factory.session_client("carol", "correct horse battery")
    project = carol.project()
    image_id = int(carol.image(project["id"])["image_id"])
    csrf = carol.http.headers.pop("X-CSRF-Token")
    refused = carol.put(_url(image_id), json={"base_revision": 0, "boxes": [BOX]})
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert carol.get(_url(image_id)).json()["revision"] == 0  # reads need no token
    carol.http.headers["X-CSRF-Token"] = csrf
    assert carol.put(_url(image_id), json={"base_revision": 0, "boxes": [BOX]}).status_code == 200


def _statements(app: FastAPI, call: Callable[[], object]) -> list[str]:
    """The first word of each statement ``call`` sends, transaction control left out."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    sa.event.listen(app.state.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        sa.event.remove(app.state.engine, "before_cursor_execute", record)
    return [word for word in sent if word not in ("BEGIN", "COMMIT", "ROLLBACK")]


def test_a_read_and_a_save_cost_a_fixed_handful_of_statements(
    app: FastAPI, alice: ApiClient, image_id: int
) -> None:
    alice.put(_url(image_id), json={"base_revision": 0, "boxes": [BOX]})  # token touched
    # The caller, the image gate (image, project and membership at once), the boxes.
    read = _statements(app, lambda: alice.get(_url(image_id)))
    assert read == ["SELECT", "SELECT", "SELECT"]
    # The caller, the gate, the compare-and-swap (status and min_confidence included),
    # the old boxes' delete and one insert of all the new ones: nothing read back.
    body = {"base_revision": 1, "boxes": [BOX] * 40}
    save = _statements(app, lambda: alice.put(_url(image_id), json=body))
    assert save == ["SELECT", "SELECT", "UPDATE", "DELETE", "INSERT"]
