from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.models.annotation import Annotation
from tests.factories import ApiClient, Factory

BOX = {"class_id": 0, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}


@pytest.fixture
def image_id(alice: ApiClient) -> int:
    project = alice.project(classes=["cat", "dog"])
    return int(alice.image(project["id"])["image_id"])


def test_new_image_has_no_boxes_at_revision_zero(alice: ApiClient, image_id: int) -> None:
    body = alice.get(f"/api/images/{image_id}/annotations").json()
    assert body["revision"] == 0
    assert body["boxes"] == []
    assert body["status"] == "unlabeled"


def test_save_replaces_boxes_and_bumps_revision(alice: ApiClient, image_id: int) -> None:
    url = f"/api/images/{image_id}/annotations"
    first = alice.put(url, json={"base_revision": 0, "boxes": [BOX, {**BOX, "class_id": 1}]})
    assert first.status_code == 200, first.text
    assert first.json()["revision"] == 1
    assert first.json()["status"] == "reviewed"
    second = alice.put(url, json={"base_revision": 1, "boxes": [{**BOX, "x": 0.5}]})
    assert second.json()["revision"] == 2
    boxes = alice.get(url).json()["boxes"]
    assert boxes == [
        {
            "class_id": 0,
            "x": 0.5,
            "y": 0.2,
            "w": 0.3,
            "h": 0.4,
            "source": "manual",
            "confidence": None,
            "status": "accepted",
        }
    ]


def test_second_save_with_stale_revision_gets_409(
    alice: ApiClient, bob: ApiClient, image_id: int, factory: Factory
) -> None:
    project_id = alice.get(f"/api/images/{image_id}").json()["project_id"]
    alice.add_member(project_id, bob, "annotator")
    url = f"/api/images/{image_id}/annotations"
    assert alice.put(url, json={"base_revision": 0, "boxes": [BOX]}).status_code == 200
    stale = bob.put(url, json={"base_revision": 0, "boxes": [{**BOX, "class_id": 1}] * 3})
    assert stale.status_code == 409
    assert stale.json()["current_revision"] == 1
    body = alice.get(url).json()
    assert body["revision"] == 1
    assert [b["class_id"] for b in body["boxes"]] == [0]
    assert factory.count(Annotation) == 1


def test_concurrent_saves_from_one_revision_never_lose_an_update(
    alice: ApiClient, image_id: int, factory: Factory
) -> None:
    url = f"/api/images/{image_id}/annotations"
    results: list[int] = []
    barrier = threading.Barrier(6)

    def save(n: int) -> None:
        barrier.wait()
        response = alice.put(
            url, json={"base_revision": 0, "boxes": [{**BOX, "x": n / 10}] * (n + 1)}
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 409, 409, 409, 409, 409]
    body = alice.get(url).json()
    assert body["revision"] == 1
    # The winner's boxes, all of them, and nobody else's.
    assert len({b["x"] for b in body["boxes"]}) == 1
    assert factory.count(Annotation) == len(body["boxes"])


@pytest.mark.parametrize(
    ("box", "fragment"),
    [
        ({**BOX, "class_id": 2}, "out of range"),
        ({**BOX, "class_id": -1}, "class_id"),
        ({**BOX, "x": 1.2}, "x"),
        ({**BOX, "x": -0.1}, "x"),
        ({**BOX, "x": 0.8, "w": 0.3}, "outside the image"),
        ({**BOX, "y": 0.7, "h": 0.4}, "outside the image"),
        ({**BOX, "w": 0}, "w"),
        ({**BOX, "h": -0.2}, "h"),
        ({**BOX, "source": "robot"}, "source"),
        ({**BOX, "source": "model:abc"}, "source"),
        ({**BOX, "confidence": 1.5}, "confidence"),
        ({**BOX, "status": "maybe"}, "status"),
        ({**BOX, "colour": "red"}, "colour"),
        ({"x": 0.1, "y": 0.1, "w": 0.1, "h": 0.1}, "class_id"),
        ({**BOX, "x": "0.1abc"}, "x"),
    ],
)
def test_invalid_boxes_are_422_and_change_nothing(
    alice: ApiClient, image_id: int, factory: Factory, box: dict[str, object], fragment: str
) -> None:
    url = f"/api/images/{image_id}/annotations"
    assert alice.put(url, json={"base_revision": 0, "boxes": [BOX]}).status_code == 200
    response = alice.put(url, json={"base_revision": 1, "boxes": [BOX, box]})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    body = alice.get(url).json()
    assert body["revision"] == 1
    assert len(body["boxes"]) == 1


def test_nan_and_infinity_are_refused(alice: ApiClient, image_id: int) -> None:
    url = f"/api/images/{image_id}/annotations"
    for raw in (b"NaN", b"Infinity"):
        content = (
            b'{"base_revision": 0, "boxes": [{"class_id": 0, "x": '
            + raw
            + b', "y": 0.1, "w": 0.1, "h": 0.1}]}'
        )
        response = alice.put(url, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, raw


@pytest.mark.parametrize(
    "body",
    [
        {"boxes": []},
        {"base_revision": -1, "boxes": []},
        {"base_revision": 0},
        {"base_revision": 0, "boxes": {}},
        {"base_revision": 0, "boxes": [], "force": True},
    ],
)
def test_bad_annotation_envelopes_are_422(
    alice: ApiClient, image_id: int, body: dict[str, object]
) -> None:
    response = alice.put(f"/api/images/{image_id}/annotations", json=body)
    assert response.status_code == 422


def test_too_many_boxes_is_422(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(max_boxes_per_image=3)
    f = factory_for(app)
    alice = f.client(f.user("alice"))
    project = alice.project()
    image = alice.image(project["id"])
    response = alice.put(
        f"/api/images/{image['image_id']}/annotations",
        json={"base_revision": 0, "boxes": [BOX] * 4},
    )
    assert response.status_code == 422
    assert "at most 3" in response.json()["detail"]


def test_viewer_cannot_save_annotations(alice: ApiClient, bob: ApiClient, image_id: int) -> None:
    project_id = alice.get(f"/api/images/{image_id}").json()["project_id"]
    alice.add_member(project_id, bob, "viewer")
    assert bob.get(f"/api/images/{image_id}/annotations").status_code == 200
    response = bob.put(
        f"/api/images/{image_id}/annotations", json={"base_revision": 0, "boxes": [BOX]}
    )
    assert response.status_code == 403
    assert (
        bob.post(f"/api/images/{image_id}/review", json={"action": "accept_all"}).status_code == 403
    )
    assert alice.get(f"/api/images/{image_id}/annotations").json()["revision"] == 0


@pytest.fixture
def model_source(alice: ApiClient, factory: Factory, image_id: int) -> str:
    """``model:<id>`` of a model in the image's project (a box may only name those)."""
    project_id = alice.get(f"/api/images/{image_id}").json()["project_id"]
    return f"model:{factory.model(project_id)}"


def test_predicted_boxes_keep_the_image_predicted_until_reviewed(
    alice: ApiClient, image_id: int, model_source: str
) -> None:
    url = f"/api/images/{image_id}/annotations"
    predicted = {**BOX, "source": model_source, "confidence": 0.83, "status": "predicted"}
    saved = alice.put(url, json={"base_revision": 0, "boxes": [predicted, predicted, BOX]})
    assert saved.json()["status"] == "predicted"
    reviewed = alice.post(f"/api/images/{image_id}/review", json={"action": "reject_all"})
    assert reviewed.status_code == 200
    body = reviewed.json()
    assert body["status"] == "reviewed"
    assert body["revision"] == 2
    assert [b["status"] for b in body["boxes"]] == ["rejected", "rejected", "accepted"]
    assert [b["source"] for b in body["boxes"]] == [model_source, model_source, "manual"]


def test_accept_all_accepts_every_prediction(
    alice: ApiClient, image_id: int, model_source: str
) -> None:
    url = f"/api/images/{image_id}/annotations"
    predicted = {**BOX, "source": model_source, "confidence": 0.5, "status": "predicted"}
    alice.put(url, json={"base_revision": 0, "boxes": [predicted]})
    body = alice.post(f"/api/images/{image_id}/review", json={"action": "accept_all"}).json()
    assert [b["status"] for b in body["boxes"]] == ["accepted"]
    listed = alice.get(
        f"/api/projects/{alice.get(f'/api/images/{image_id}').json()['project_id']}/images",
        params={"status": "reviewed"},
    ).json()["items"]
    assert [i["id"] for i in listed] == [image_id]


@pytest.mark.parametrize("body", [{"action": "approve"}, {}, {"action": "accept_all", "x": 1}])
def test_bad_review_action_is_422(alice: ApiClient, image_id: int, body: dict[str, object]) -> None:
    response = alice.post(f"/api/images/{image_id}/review", json=body)
    assert response.status_code == 422
    assert alice.get(f"/api/images/{image_id}/annotations").json()["revision"] == 0


def test_editor_start_is_the_four_answers_in_one(alice: ApiClient) -> None:
    project = alice.project(classes=["cat", "dog"])
    first, second = (int(alice.image(project["id"], seed=s)["image_id"]) for s in (1, 2))
    saved = alice.put(
        f"/api/images/{second}/annotations",
        json={"base_revision": 0, "boxes": [BOX, {**BOX, "class_id": 1, "x": 0.5}]},
    )
    assert saved.status_code == 200, saved.text
    response = alice.get(f"/api/images/{second}/editor")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == alice.get(f"/api/images/{second}").json()
    assert body["project"] == alice.get(f"/api/projects/{project['id']}").json()
    assert body["annotations"] == alice.get(f"/api/images/{second}/annotations").json()
    assert body["neighbors"] == alice.get(f"/api/images/{second}/neighbors").json()
    assert body["neighbors"]["previous"] == first
    assert [box["class_id"] for box in body["annotations"]["boxes"]] == [0, 1]
    assert body["project"]["role"] == "owner"


def test_editor_start_gives_a_viewer_the_viewer_role(
    alice: ApiClient, bob: ApiClient, image_id: int
) -> None:
    project_id = alice.get(f"/api/images/{image_id}").json()["project_id"]
    alice.add_member(project_id, bob, "viewer")
    body = bob.get(f"/api/images/{image_id}/editor").json()
    assert body["project"]["role"] == "viewer"
    assert body["annotations"]["boxes"] == []


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", str(2**63)])
def test_editor_start_with_a_bad_image_id_is_422(alice: ApiClient, bad: str) -> None:
    assert alice.get(f"/api/images/{bad}/editor").status_code == 422


def test_editor_start_of_a_missing_or_foreign_image_is_404(
    alice: ApiClient, bob: ApiClient, image_id: int
) -> None:
    assert alice.get("/api/images/987654/editor").status_code == 404
    response = bob.get(f"/api/images/{image_id}/editor")
    assert response.status_code == 404
    assert response.json() == {"detail": "image not found"}


def test_editor_start_needs_a_session(client: TestClient, image_id: int) -> None:
    assert client.get(f"/api/images/{image_id}/editor").status_code == 401
