from __future__ import annotations

import pytest

from server.models.audit import AuditEvent
from server.models.project import Membership, Project
from server.settings import Settings
from tests.factories import ApiClient, Factory


def test_creator_becomes_owner_and_sees_the_project(alice: ApiClient) -> None:
    project = alice.project("Cats", ["cat", "dog"])
    assert project["role"] == "owner"
    assert project["classes"] == ["cat", "dog"]
    detail = alice.get(f"/api/projects/{project['id']}").json()
    assert detail["images"] == {"total": 0, "unlabeled": 0, "predicted": 0, "reviewed": 0}
    listed = alice.get("/api/projects").json()
    assert [p["id"] for p in listed["items"]] == [project["id"]]


def test_list_is_scoped_by_membership(alice: ApiClient, bob: ApiClient, admin: ApiClient) -> None:
    mine = alice.project("Alice's")
    bob.project("Bob's")
    assert [p["name"] for p in alice.get("/api/projects").json()["items"]] == ["Alice's"]
    # Admins see every project.
    assert len(admin.get("/api/projects").json()["items"]) == 2
    alice.add_member(mine["id"], bob, "viewer")
    names = sorted(p["name"] for p in bob.get("/api/projects").json()["items"])
    assert names == ["Alice's", "Bob's"]


def test_project_list_paginates_with_keyset_cursor(alice: ApiClient) -> None:
    ids = [alice.project(f"P{i}")["id"] for i in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = alice.get("/api/projects", params=params).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_another_users_project_answers_404_not_403(alice: ApiClient, bob: ApiClient) -> None:
    project = alice.project()
    for method, url, body in [
        ("get", f"/api/projects/{project['id']}", None),
        ("patch", f"/api/projects/{project['id']}", {"name": "x"}),
        ("delete", f"/api/projects/{project['id']}", None),
        ("get", f"/api/projects/{project['id']}/members", None),
        ("get", f"/api/projects/{project['id']}/images", None),
    ]:
        kwargs = {"json": body} if body is not None else {}
        response = getattr(bob, method)(url, **kwargs)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json() == {"detail": "project not found"}


def test_viewer_cannot_write_but_can_read(alice: ApiClient, bob: ApiClient) -> None:
    project = alice.project()
    alice.add_member(project["id"], bob, "viewer")
    assert bob.get(f"/api/projects/{project['id']}").status_code == 200
    response = bob.patch(f"/api/projects/{project['id']}", json={"name": "mine now"})
    assert response.status_code == 403
    assert "owner" in response.json()["detail"]
    assert bob.delete(f"/api/projects/{project['id']}").status_code == 403
    assert alice.get(f"/api/projects/{project['id']}").json()["name"] == "Cats"


def test_owner_updates_name_description_and_classes(alice: ApiClient) -> None:
    project = alice.project()
    response = alice.patch(
        f"/api/projects/{project['id']}",
        json={"name": "Pets", "description": "d", "classes": ["cat", "dog", "bird"]},
    )
    assert response.status_code == 200
    assert response.json()["classes"] == ["cat", "dog", "bird"]
    assert response.json()["name"] == "Pets"


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "ok", "classes": ["cat", "Cat"]},
        {"name": "ok", "classes": ["cat", ""]},
        {"name": "ok", "classes": "cat,dog"},
        {"name": "ok", "classes": ["c" * 101]},
        {"name": "ok", "unknown": 1},
        {"name": "nul\x00byte"},
        {"name": "ok", "classes": [f"c{i}" for i in range(1001)]},
        {},
    ],
)
def test_bad_project_bodies_are_422_and_create_nothing(
    alice: ApiClient, factory: Factory, body: dict[str, object]
) -> None:
    response = alice.post("/api/projects", json=body)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], str)
    assert factory.count(Project) == 0
    assert factory.count(Membership) == 0


def test_malformed_json_is_422(alice: ApiClient) -> None:
    response = alice.post(
        "/api/projects", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_removing_a_class_that_boxes_use_is_409(alice: ApiClient) -> None:
    project = alice.project(classes=["cat", "dog"])
    image = alice.image(project["id"])
    saved = alice.put(
        f"/api/images/{image['image_id']}/annotations",
        json={
            "base_revision": 0,
            "boxes": [{"class_id": 1, "x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2}],
        },
    )
    assert saved.status_code == 200
    response = alice.patch(f"/api/projects/{project['id']}", json={"classes": ["cat"]})
    assert response.status_code == 409
    assert alice.get(f"/api/projects/{project['id']}").json()["classes"] == ["cat", "dog"]
    # Renaming keeps ids stable and is fine.
    ok = alice.patch(f"/api/projects/{project['id']}", json={"classes": ["kitty", "doggo"]})
    assert ok.status_code == 200


def test_members_roles_and_the_last_owner(
    alice: ApiClient, bob: ApiClient, factory: Factory
) -> None:
    project = alice.project()
    pid = project["id"]
    alice.add_member(pid, bob, "annotator")
    members = {m["username"]: m["role"] for m in alice.get(f"/api/projects/{pid}/members").json()}
    assert members == {"alice": "owner", "bob": "annotator"}
    # The only owner can neither leave nor be demoted.
    assert alice.delete(f"/api/projects/{pid}/members/{alice.user_id}").status_code == 409
    demote = alice.put(f"/api/projects/{pid}/members/{alice.user_id}", json={"role": "viewer"})
    assert demote.status_code == 409
    # An annotator cannot manage members, but may leave.
    carol = factory.client(factory.user("carol"))
    assert (
        bob.put(f"/api/projects/{pid}/members/{carol.user_id}", json={"role": "viewer"}).status_code
        == 403
    )
    assert bob.delete(f"/api/projects/{pid}/members/{alice.user_id}").status_code == 403
    assert bob.delete(f"/api/projects/{pid}/members/{bob.user_id}").status_code == 204
    assert bob.get(f"/api/projects/{pid}").status_code == 404
    actions = [a for (a,) in factory_audit_actions(factory)]
    assert "membership.set" in actions
    assert "membership.remove" in actions


def factory_audit_actions(factory: Factory) -> list[tuple[str]]:
    import sqlalchemy as sa

    with factory.sessionmaker() as db:
        return [(a,) for a in db.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id))]


@pytest.mark.parametrize(
    ("user_id", "body", "status"),
    [
        (999999, {"role": "viewer"}, 404),
        (0, {"role": "viewer"}, 422),
        (2**63, {"role": "viewer"}, 422),
        ("abc", {"role": "viewer"}, 422),
        (None, {"role": "admin"}, 422),
        (None, {"role": "viewer", "extra": True}, 422),
        (None, {}, 422),
    ],
)
def test_bad_member_requests(
    alice: ApiClient,
    bob: ApiClient,
    user_id: object,
    body: dict[str, object],
    status: int,
    factory: Factory,
) -> None:
    project = alice.project()
    target = bob.user_id if user_id is None else user_id
    response = alice.put(f"/api/projects/{project['id']}/members/{target}", json=body)
    assert response.status_code == status, response.text
    assert factory.count(Membership) == 1


def test_delete_project_removes_everything_and_is_audited(
    alice: ApiClient, factory: Factory, settings: Settings
) -> None:
    project = alice.project()
    image = alice.image(project["id"])
    blob = settings.data_dir / "blobs" / image["sha256"][:2] / image["sha256"]
    assert blob.exists()
    assert alice.delete(f"/api/projects/{project['id']}").status_code == 204
    assert alice.get(f"/api/projects/{project['id']}").status_code == 404
    assert factory.count(Project) == 0
    assert not blob.exists()
    assert ("project.delete",) in factory_audit_actions(factory)


def test_huge_or_bad_ids_are_422_not_500(alice: ApiClient) -> None:
    for bad in ("99999999999999999999", "-1", "0", "1.5", "%00"):
        response = alice.get(f"/api/projects/{bad}")
        assert response.status_code == 422, (bad, response.text)


def test_bad_cursor_is_400(alice: ApiClient) -> None:
    for cursor in ("garbage!", "aWQ6LTE", "eHg6MQ", "a" * 101):
        response = alice.get("/api/projects", params={"cursor": cursor})
        assert response.status_code in (400, 422), (cursor, response.text)
