from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.auth.models import User
from tests.factories import ApiClient, Factory


def test_admin_creates_a_local_account_that_can_log_in(admin: ApiClient, app: FastAPI) -> None:
    response = admin.post(
        "/api/admin/users", json={"username": "dave", "password": "s3cret-pass", "is_admin": False}
    )
    assert response.status_code == 201
    assert response.json()["is_local"] is True
    login = TestClient(app).post(
        "/api/auth/local/login", json={"username": "dave", "password": "s3cret-pass"}
    )
    assert login.status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "dave", "password": "short"}, 422),
        ({"username": "bad name", "password": "long enough"}, 422),
        ({"username": "dave", "password": "long enough", "role": "god"}, 422),
        ({"username": "root", "password": "long enough"}, 409),
    ],
)
def test_bad_user_creation(admin: ApiClient, factory: Factory, body: dict, status: int) -> None:
    before = factory.count(User)
    assert admin.post("/api/admin/users", json=body).status_code == status
    assert factory.count(User) == before


def test_non_admins_get_403_everywhere(alice: ApiClient) -> None:
    for method, url in [
        ("get", "/api/admin/users"),
        ("get", "/api/admin/audit"),
        ("post", "/api/admin/users"),
        ("patch", "/api/admin/users/1"),
    ]:
        kwargs = {"json": {"username": "x", "password": "long enough"}} if method != "get" else {}
        assert getattr(alice, method)(url, **kwargs).status_code == 403, url


def test_last_admin_cannot_be_disabled_or_demoted(admin: ApiClient) -> None:
    me = admin.user_id
    assert admin.patch(f"/api/admin/users/{me}", json={"is_active": False}).status_code == 409
    assert admin.patch(f"/api/admin/users/{me}", json={"is_admin": False}).status_code == 409


def test_sso_users_have_no_local_password(admin: ApiClient, factory: Factory) -> None:
    sso = factory.user("erin", issuer="https://idp.example")
    response = admin.patch(f"/api/admin/users/{sso.id}", json={"password": "long enough"})
    assert response.status_code == 409


def test_users_list_paginates(admin: ApiClient, factory: Factory) -> None:
    for name in ("u1", "u2", "u3"):
        factory.user(name)
    page = admin.get("/api/admin/users", params={"limit": 2}).json()
    assert len(page["items"]) == 2
    rest = admin.get("/api/admin/users", params={"cursor": page["next_cursor"]}).json()
    assert [u["username"] for u in page["items"] + rest["items"]] == ["root", "u1", "u2", "u3"]


def test_audit_log_records_and_filters(admin: ApiClient, alice: ApiClient, bob: ApiClient) -> None:
    project = alice.project()
    alice.add_member(project["id"], bob, "viewer")
    image = alice.image(project["id"])
    alice.delete(f"/api/images/{image['image_id']}")
    events = admin.get("/api/admin/audit").json()["items"]
    actions = [e["action"] for e in events]
    # Newest first.
    assert actions.index("image.delete") < actions.index("membership.set")
    assert {"project.create", "membership.set", "image.delete", "token.create"} <= set(actions)
    only = admin.get("/api/admin/audit", params={"action": "membership.set"}).json()["items"]
    assert [e["details"]["role"] for e in only] == ["viewer"]
    assert only[0]["actor_name"] == "alice"
    scoped = admin.get("/api/admin/audit", params={"project_id": project["id"]}).json()["items"]
    assert all(e["project_id"] == project["id"] for e in scoped)
    assert admin.get("/api/admin/audit", params={"action": "DROP TABLE"}).status_code == 422


def test_user_directory_search(alice: ApiClient, factory: Factory) -> None:
    factory.user("bobby")
    found = alice.get("/api/users", params={"q": "BOB"}).json()
    assert [u["username"] for u in found] == ["bobby"]
    assert alice.get("/api/users", params={"q": "%"}).json() == []
    assert alice.get("/api/users", params={"q": "x" * 101}).status_code == 422
