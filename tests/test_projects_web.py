"""What the web app needs from projects: a colour per class, counts in the list."""

from __future__ import annotations

from typing import Any

from server.projects.schemas import PALETTE
from tests.factories import ApiClient, png_bytes


def _create(client: ApiClient, **body: Any) -> Any:
    return client.post("/api/projects", json={"name": "Colours", **body})


def test_project_keeps_one_colour_per_class_and_fills_the_rest_from_the_palette(
    alice: ApiClient,
) -> None:
    response = _create(alice, classes=["cat", "dog", "bird"], class_colors=["#FF0000", "#00ff00"])
    assert response.status_code == 201, response.text
    project = response.json()
    assert project["class_colors"] == ["#ff0000", "#00ff00", PALETTE[2]]
    assert (
        alice.get(f"/api/projects/{project['id']}").json()["class_colors"]
        == project["class_colors"]
    )


def test_classes_appended_without_colours_get_palette_colours(alice: ApiClient) -> None:
    project = _create(alice, classes=["cat"], class_colors=["#123456"]).json()
    updated = alice.patch(f"/api/projects/{project['id']}", json={"classes": ["cat", "dog"]})
    assert updated.json()["class_colors"] == ["#123456", PALETTE[1]]
    recoloured = alice.patch(
        f"/api/projects/{project['id']}", json={"class_colors": ["#abcdef", "#fedcba"]}
    )
    assert recoloured.json()["class_colors"] == ["#abcdef", "#fedcba"]


def test_bad_colours_are_refused_with_422(alice: ApiClient) -> None:
    assert _create(alice, classes=["cat"], class_colors=["red"]).status_code == 422
    assert _create(alice, classes=["cat"], class_colors=["#fff"]).status_code == 422
    assert _create(alice, classes=["cat"], class_colors=["#000000", "#ffffff"]).status_code == 422
    project = _create(alice, classes=["cat"]).json()
    too_many = alice.patch(
        f"/api/projects/{project['id']}", json={"class_colors": ["#000000", "#ffffff"]}
    )
    assert too_many.status_code == 422
    assert "class_colors" in too_many.json()["detail"]


def test_project_list_carries_image_counts_by_status(alice: ApiClient, bob: ApiClient) -> None:
    busy = alice.project("Busy")
    alice.project("Empty")
    bob_project = bob.project("Bob's")
    for seed in range(3):
        alice.image(busy["id"], seed=seed)
    bob.image(bob_project["id"], seed=9)
    items = {p["name"]: p for p in alice.get("/api/projects").json()["items"]}
    assert items["Busy"]["images"] == {"total": 3, "unlabeled": 3, "predicted": 0, "reviewed": 0}
    assert items["Empty"]["images"]["total"] == 0
    assert "Bob's" not in items


def test_project_counts_images_by_status_within_each_split(alice: ApiClient) -> None:
    project = alice.project("Splits")
    pid = project["id"]
    assert alice.upload(pid, ("a.png", png_bytes(seed=1)), split="train").status_code == 201
    assert alice.upload(pid, ("b.png", png_bytes(seed=2)), split="train").status_code == 201
    assert alice.upload(pid, ("c.png", png_bytes(seed=3)), split="val").status_code == 201
    loose = alice.upload(pid, ("d.png", png_bytes(seed=4))).json()["items"][0]
    review = alice.post(f"/api/images/{loose['image_id']}/review", json={"action": "accept_all"})
    assert review.status_code == 200, review.text

    detail = alice.get(f"/api/projects/{pid}").json()
    by_split = detail["images_by_split"]
    assert by_split["train"] == {"total": 2, "unlabeled": 2, "predicted": 0, "reviewed": 0}
    assert by_split["val"]["total"] == 1
    assert by_split["test"]["total"] == 0
    assert by_split["none"] == {"total": 1, "unlabeled": 0, "predicted": 0, "reviewed": 1}
    assert detail["images"] == {"total": 4, "unlabeled": 3, "predicted": 0, "reviewed": 1}
    listed = {p["id"]: p for p in alice.get("/api/projects").json()["items"]}
    assert listed[pid]["images_by_split"] == by_split


def test_every_bad_input_the_web_app_can_send_gets_a_4xx_with_a_detail(
    alice: ApiClient, bob: ApiClient
) -> None:
    """The settings, members and upload screens show the API's `detail` for these."""
    pid = alice.project("Bad input")["id"]
    me = alice.user_id
    answers = {
        "blank name": alice.patch(f"/api/projects/{pid}", json={"name": "   "}),
        "long name": alice.patch(f"/api/projects/{pid}", json={"name": "n" * 201}),
        "long description": alice.patch(f"/api/projects/{pid}", json={"description": "d" * 10_001}),
        "same class twice": alice.patch(f"/api/projects/{pid}", json={"classes": ["a", "A"]}),
        "unknown user": alice.put(f"/api/projects/{pid}/members/999999", json={"role": "viewer"}),
        "demote the last owner": alice.put(
            f"/api/projects/{pid}/members/{me}", json={"role": "viewer"}
        ),
        "remove the last owner": alice.delete(f"/api/projects/{pid}/members/{me}"),
        "long user search": alice.get("/api/users", params={"q": "q" * 101}),
        "only a text file": alice.upload(pid, ("notes.txt", b"not an image")),
        "an empty file": alice.upload(pid, ("empty.png", b"")),
        "a zip that is not one": alice.post(
            f"/api/projects/{pid}/imports",
            files=[("file", ("data.zip", b"not a zip", "application/zip"))],
        ),
        "a stranger's project": bob.get(f"/api/projects/{pid}/members"),
    }
    expected = {
        "blank name": 422,
        "long name": 422,
        "long description": 422,
        "same class twice": 422,
        "unknown user": 404,
        "demote the last owner": 409,
        "remove the last owner": 409,
        "long user search": 422,
        "only a text file": 415,
        "an empty file": 422,
        "a zip that is not one": 422,
        "a stranger's project": 404,
    }
    for case, response in answers.items():
        assert response.status_code == expected[case], (case, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, str), case
        assert detail, case
    # An all-rejected upload still says why per file (the upload list shows it).
    items = answers["only a text file"].json()["items"]
    assert items[0]["status"] == "rejected"
    assert items[0]["reason"]
