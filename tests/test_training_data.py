"""What the Train dialog shows before a run (GET /api/projects/{id}/training-data) and
the training runs list (GET /api/jobs?kind=): the preview must match the dataset
snapshot the training job builds. No ML needed: snapshots are plain files."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from fastapi import FastAPI

from server.models.auth import User
from server.models.job import Job
from server.training import snapshot
from tests.factories import ApiClient, Factory, labeled_shapes_project, png_bytes


def shapes(f: Factory, owner: User, n_images: int = 12) -> int:
    with f.sessionmaker() as db, db.begin():
        user = db.get(User, owner.id)
        assert user is not None
        project = labeled_shapes_project(
            db, f.app.state.storage, f.app.state.settings, user, n_images=n_images
        )
        return project.id


def preview(client: ApiClient, project_id: int, **params: Any) -> dict[str, Any]:
    response = client.get(f"/api/projects/{project_id}/training-data", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def label_counts(snap: snapshot.Snapshot) -> tuple[Counter[int], Counter[int]]:
    """Boxes and images per class id in the snapshot's label files."""
    boxes: Counter[int] = Counter()
    images: Counter[int] = Counter()
    for label in snap.root.glob("labels/*/*.txt"):
        ids = [int(line.split()[0]) for line in label.read_text().splitlines() if line]
        boxes.update(ids)
        images.update(set(ids))
    return boxes, images


def test_preview_matches_the_snapshot_the_job_trains_on(app: FastAPI) -> None:
    f = Factory(app)
    owner_row = f.user("owner")
    owner = f.client(owner_row)
    project_id = shapes(f, owner_row, n_images=12)
    # Left out: unlabeled images, and a rejected box on a reviewed image.
    owner.upload(project_id, ("new1.png", png_bytes(901)), ("new2.png", png_bytes(902)))
    extra = owner.image(project_id, seed=903)
    saved = owner.put(
        f"/api/images/{extra['image_id']}/annotations",
        json={
            "base_revision": 0,
            "boxes": [
                {"class_id": 1, "x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2},
                {"class_id": 2, "x": 0.5, "y": 0.5, "w": 0.2, "h": 0.2, "status": "rejected"},
            ],
        },
    )
    assert saved.status_code == 200, saved.text

    body = preview(owner, project_id, val_fraction=0.25, seed=3)
    with f.sessionmaker() as db:
        snap = snapshot.build(
            db,
            app.state.storage,
            project_id,
            ["square", "circle", "triangle"],
            val_fraction=0.25,
            seed=3,
        )
    boxes, images = label_counts(snap)
    assert body["problem"] is None
    assert body["images"] == 13
    assert (body["train_images"], body["val_images"]) == (snap.train_images, snap.val_images)
    assert 0 < body["val_images"] < 13  # a real split, not everything on one side
    assert body["boxes"] == snap.boxes == sum(boxes.values())
    assert [c["name"] for c in body["classes"]] == ["square", "circle", "triangle"]
    assert {c["class_id"]: c["boxes"] for c in body["classes"]} == {i: boxes[i] for i in range(3)}
    assert {c["class_id"]: c["images"] for c in body["classes"]} == {i: images[i] for i in range(3)}
    # Another seed splits differently, like the job would.
    other = [preview(owner, project_id, val_fraction=0.25, seed=s)["val_images"] for s in range(6)]
    assert len(set(other)) > 1


def test_preview_without_a_val_fraction_keeps_the_images_own_split(app: FastAPI) -> None:
    f = Factory(app)
    owner = f.client(f.user("owner"))
    project = owner.project(classes=["cat"])
    for seed, split in ((1, "val"), (2, "train"), (3, "test")):
        item = owner.upload(project["id"], (f"{seed}.png", png_bytes(seed)), split=split)
        image_id = item.json()["items"][0]["image_id"]
        box = {"class_id": 0, "x": 0.1, "y": 0.1, "w": 0.5, "h": 0.5}
        response = owner.put(
            f"/api/images/{image_id}/annotations", json={"base_revision": 0, "boxes": [box]}
        )
        assert response.status_code == 200, response.text
    body = preview(owner, project["id"], val_fraction=0)
    assert (body["train_images"], body["val_images"], body["boxes"]) == (2, 1, 3)
    assert body["classes"] == [{"class_id": 0, "name": "cat", "boxes": 3, "images": 3}]


def test_preview_says_why_a_run_would_be_refused(app: FastAPI) -> None:
    f = Factory(app)
    owner = f.client(f.user("owner"))
    project = owner.project(classes=["cat", "dog"])
    owner.image(project["id"])  # unlabeled: not used
    body = preview(owner, project["id"])
    assert body["images"] == body["boxes"] == 0
    assert body["problem"] == "training needs at least 2 reviewed images; this project has 0"
    assert [c["boxes"] for c in body["classes"]] == [0, 0]
    # The defaults are the train request's, and the pools are the server's.
    assert (body["val_fraction"], body["seed"], body["only_reviewed"]) == (0.2, 0, True)
    assert body["architectures"][0] == "yolo11n.yaml"
    assert body["default_pool"] == "gpu"
    assert {p["name"]: p["gpu"] for p in body["pools"]} == {"gpu": True, "cpu": False}

    bare = owner.project(name="No classes", classes=[])
    assert preview(owner, bare["id"])["problem"] == "the project has no classes to train"


def test_every_member_may_preview_and_nobody_else(app: FastAPI) -> None:
    f = Factory(app)
    owner = f.client(f.user("owner"))
    viewer = f.client(f.user("viewer"))
    stranger = f.client(f.user("stranger"))
    project = owner.project()
    owner.add_member(project["id"], viewer, "viewer")
    url = f"/api/projects/{project['id']}/training-data"
    assert viewer.get(url).status_code == 200
    assert stranger.get(url).status_code == 404
    assert f.client(f.user("admin", is_admin=True)).get(url).status_code == 200
    anonymous = owner.http.get(url, headers={"Authorization": ""})
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {"val_fraction": -0.1},
        {"val_fraction": 0.95},
        {"val_fraction": "a fifth"},
        {"val_fraction": "nan"},
        {"val_fraction": "inf"},
        {"seed": -1},
        {"seed": 2**31},
        {"seed": "1.5"},
        {"seed": 10**30},
        {"only_reviewed": "perhaps"},
    ],
)
def test_nonsense_preview_parameters_are_422(app: FastAPI, params: dict[str, Any]) -> None:
    f = Factory(app)
    owner = f.client(f.user("owner"))
    project = owner.project()
    response = owner.get(f"/api/projects/{project['id']}/training-data", params=params)
    assert response.status_code == 422, (params, response.text)
    assert "detail" in response.json()


@pytest.mark.parametrize("project_id", ["0", "-1", "abc", str(2**63), "1.5"])
def test_preview_of_a_bad_project_id_is_a_clear_4xx(app: FastAPI, project_id: str) -> None:
    owner = Factory(app).client(Factory(app).user("owner"))
    response = owner.get(f"/api/projects/{project_id}/training-data")
    assert response.status_code in (404, 422), response.text


def test_a_missing_project_is_404(app: FastAPI) -> None:
    f = Factory(app)
    owner = f.client(f.user("owner"))
    assert owner.get("/api/projects/999999/training-data").status_code == 404


def test_jobs_list_filters_by_kind(app: FastAPI) -> None:
    f = Factory(app)
    owner = f.client(f.user("owner"))
    project = owner.project()
    trained = owner.post(f"/api/projects/{project['id']}/jobs/train", json={"epochs": 1})
    assert trained.status_code == 202, trained.text
    exported = owner.post(f"/api/projects/{project['id']}/exports", json={"format": "yolo"})
    assert exported.status_code == 202, exported.text
    listed = owner.get(
        "/api/jobs", params={"project_id": project["id"], "kind": "training.train"}
    ).json()
    assert [j["id"] for j in listed["items"]] == [trained.json()["id"]]
    everything = owner.get("/api/jobs", params={"project_id": project["id"]}).json()
    assert len(everything["items"]) == 2


@pytest.mark.parametrize("kind", ["training.nope", "", "x" * 65, "training.train\x00"])
def test_jobs_list_refuses_an_unknown_kind(app: FastAPI, kind: str) -> None:
    f = Factory(app)
    owner = f.client(f.user("owner"))
    response = owner.get("/api/jobs", params={"kind": kind})
    assert response.status_code == 422, (kind, response.text)
    assert f.count(Job) == 0
