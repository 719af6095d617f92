from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import time_machine
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.models.audit import AuditEvent
from server.models.auth import LoginSession
from server.models.project import Project
from tests.factories import ApiClient, Factory

PASSWORD = "correct horse battery"


@pytest.fixture
def carol(factory: Factory) -> ApiClient:
    factory.user("carol", password=PASSWORD)
    return factory.session_client("carol", PASSWORD)


def _actions(factory: Factory) -> list[str]:
    with factory.sessionmaker() as db:
        return list(db.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


def test_login_sets_httponly_lax_cookie_and_me_works(app: FastAPI, factory: Factory) -> None:
    factory.user("carol", password=PASSWORD)
    http = TestClient(app)
    response = http.post("/api/auth/local/login", json={"username": "carol", "password": PASSWORD})
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("oculab_session="))
    assert "HttpOnly" in session_cookie
    assert "SameSite=lax" in session_cookie
    assert "Secure" not in session_cookie  # plain http in tests
    me = http.get("/api/me").json()
    assert me["username"] == "carol"
    assert me["auth_method"] == "session"
    assert me["csrf_token"] == response.json()["csrf_token"]
    assert "auth.login" in _actions(factory)


def test_cookie_is_secure_behind_https_public_url(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(public_url="https://oculab.example.org")
    factory_for(app).user("carol", password=PASSWORD)
    response = TestClient(app).post(
        "/api/auth/local/login", json={"username": "carol", "password": PASSWORD}
    )
    assert all("Secure" in c for c in response.headers.get_list("set-cookie"))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "carol", "password": "wrong password"}, 401),
        ({"username": "nobody", "password": PASSWORD}, 401),
        ({"username": "carol"}, 422),
        ({"username": "", "password": "x"}, 422),
        ({"username": "carol", "password": PASSWORD, "remember": True}, 422),
    ],
)
def test_failed_logins(
    app: FastAPI, factory: Factory, body: dict[str, object], status: int
) -> None:
    factory.user("carol", password=PASSWORD)
    response = TestClient(app).post("/api/auth/local/login", json=body)
    assert response.status_code == status
    assert "oculab_session" not in response.headers.get("set-cookie", "")
    assert factory.count(LoginSession) == 0
    if status == 401:
        assert response.json()["detail"] == "invalid username or password"
        assert "auth.login_failed" in _actions(factory)


def test_login_is_rate_limited(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(login_rate_limit_per_minute=3)
    factory_for(app).user("carol", password=PASSWORD)
    http = TestClient(app)
    # The limiter counts in fixed one-minute windows: start at a window's first second so
    # the count cannot reset half-way through the test.
    with time_machine.travel(dt.datetime(2031, 1, 6, 12, 0, 0, tzinfo=dt.UTC)):
        codes = [
            http.post(
                "/api/auth/local/login", json={"username": "carol", "password": "nope nope"}
            ).status_code
            for _ in range(4)
        ]
        blocked = http.post(
            "/api/auth/local/login", json={"username": "carol", "password": PASSWORD}
        )
    assert codes == [401, 401, 401, 429]
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1


def test_disabled_local_accounts_answer_404(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(local_accounts=False)
    factory_for(app).user("carol", password=PASSWORD)
    response = TestClient(app).post(
        "/api/auth/local/login", json={"username": "carol", "password": PASSWORD}
    )
    assert response.status_code == 404
    assert TestClient(app).get("/api/auth/config").json() == {
        "oidc": False,
        "local": False,
        "oidc_name": None,
    }


def test_cookie_write_without_csrf_token_is_403(carol: ApiClient, factory: Factory) -> None:
    token = carol.http.headers.pop("X-CSRF-Token")
    response = carol.post("/api/projects", json={"name": "P"})
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    wrong = carol.post("/api/projects", json={"name": "P"}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    assert factory.count(Project) == 0
    # Reads need no token; writes with it succeed.
    assert carol.get("/api/projects").status_code == 200
    ok = carol.post("/api/projects", json={"name": "P"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201


def test_logout_ends_the_session_server_side(carol: ApiClient, factory: Factory) -> None:
    cookie = carol.http.cookies.get("oculab_session")
    assert cookie is not None
    assert carol.post("/auth/logout").status_code == 204
    # Replaying the old cookie after logout does not work.
    replay = TestClient(carol.http.app, cookies={"oculab_session": cookie})
    assert replay.get("/api/me").status_code == 401
    assert "auth.logout" in _actions(factory)


def test_logout_by_plain_form_needs_the_csrf_field_and_redirects_to_root(
    carol: ApiClient,
) -> None:
    form = TestClient(carol.http.app, cookies=dict(carol.http.cookies))
    token = carol.http.headers["X-CSRF-Token"]
    # Malformed or oversized forms are refused like a missing token, never a 500.
    bad = form.post(
        "/auth/logout",
        content=b"--x\r\nbroken",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        follow_redirects=False,
    )
    assert 400 <= bad.status_code < 500
    with_file = form.post(
        "/auth/logout",
        data={"csrf_token": token},
        files={"f": ("a.txt", b"x")},
        follow_redirects=False,
    )
    assert 400 <= with_file.status_code < 500
    assert form.post("/auth/logout", data={"csrf_token": "nope"}).status_code == 403
    assert carol.get("/api/me").status_code == 200
    response = form.post("/auth/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert carol.get("/api/me").status_code == 401


def test_disabling_a_user_ends_their_sessions(carol: ApiClient, admin: ApiClient) -> None:
    assert carol.get("/api/me").status_code == 200
    response = admin.patch(f"/api/admin/users/{carol.user_id}", json={"is_active": False})
    assert response.status_code == 200
    assert carol.get("/api/me").status_code == 401


def test_sessions_expire_when_idle_and_at_max_age(carol: ApiClient) -> None:
    now = dt.datetime.now(dt.UTC)
    with time_machine.travel(now + dt.timedelta(hours=23), tick=True):
        assert carol.get("/api/me").status_code == 200
    with time_machine.travel(now + dt.timedelta(hours=23 + 25), tick=True):
        response = carol.get("/api/me")
        assert response.status_code == 401
        assert "expired" in response.json()["detail"]


def test_forged_session_cookie_is_401(app: FastAPI) -> None:
    http = TestClient(app, cookies={"oculab_session": "forged"})
    assert http.get("/api/me").status_code == 401
    assert TestClient(app).get("/api/me").status_code == 401


@pytest.mark.parametrize(
    "header", ["Basic abc", "Bearer", "Bearer ocl_forged", "Token x", "Bearer a.b.c"]
)
def test_bad_authorization_headers_are_401(app: FastAPI, header: str) -> None:
    response = TestClient(app).get("/api/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_create_admin_style_password_reset_ends_sessions(
    carol: ApiClient, admin: ApiClient
) -> None:
    response = admin.patch(
        f"/api/admin/users/{carol.user_id}", json={"password": "a brand new password"}
    )
    assert response.status_code == 200
    assert carol.get("/api/me").status_code == 401
