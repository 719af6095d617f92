from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import pytest
import sqlalchemy as sa
import time_machine
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.models.auth import ApiToken
from tests.factories import ApiClient, Factory

PASSWORD = "correct horse battery"


@pytest.fixture
def carol(factory: Factory) -> ApiClient:
    factory.user("carol", password=PASSWORD)
    return factory.session_client("carol", PASSWORD)


def test_token_is_shown_once_and_stored_only_as_a_hash(
    carol: ApiClient, factory: Factory, app: FastAPI
) -> None:
    response = carol.post("/api/tokens", json={"name": "ci", "expires_in_days": 30})
    assert response.status_code == 201
    secret = response.json()["token"]
    assert secret.startswith("ocl_")
    listed = carol.get("/api/tokens").json()
    assert [t["name"] for t in listed] == ["ci"]
    assert all("token" not in t for t in listed)
    with factory.sessionmaker() as db:
        stored = db.scalar(sa.select(ApiToken).where(ApiToken.name == "ci"))
        assert stored is not None
        assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in (stored.token_hash, stored.prefix)
    script = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    me = script.get("/api/me").json()
    assert me["username"] == "carol"
    assert me["auth_method"] == "token"
    # Bearer requests need no CSRF token.
    assert script.post("/api/projects", json={"name": "from CI"}).status_code == 201


def test_revoked_token_is_401(carol: ApiClient, app: FastAPI) -> None:
    created = carol.post("/api/tokens", json={"name": "ci"}).json()
    script = TestClient(app, headers={"Authorization": f"Bearer {created['token']}"})
    assert script.get("/api/me").status_code == 200
    assert carol.delete(f"/api/tokens/{created['id']}").status_code == 204
    response = script.get("/api/me")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_expired_token_is_401(carol: ApiClient, app: FastAPI) -> None:
    created = carol.post("/api/tokens", json={"name": "short", "expires_in_days": 1}).json()
    script = TestClient(app, headers={"Authorization": f"Bearer {created['token']}"})
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=1, minutes=1)):
        response = script.get("/api/me")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_forged_token_is_401(app: FastAPI, carol: ApiClient) -> None:
    real = carol.post("/api/tokens", json={"name": "ci"}).json()["token"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    response = TestClient(app, headers={"Authorization": f"Bearer {forged}"}).get("/api/me")
    assert response.status_code == 401


def test_cannot_revoke_someone_elses_token(carol: ApiClient, bob: ApiClient) -> None:
    created = carol.post("/api/tokens", json={"name": "mine"}).json()
    assert bob.delete(f"/api/tokens/{created['id']}").status_code == 404
    assert carol.get("/api/tokens").json()[0]["revoked_at"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x", "expires_in_days": 0},
        {"name": "x", "expires_in_days": 3651},
        {"name": "x", "expires_in_days": "soon"},
        {"name": "x", "scope": "admin"},
        {},
    ],
)
def test_bad_token_requests_are_422(
    carol: ApiClient, factory: Factory, body: dict[str, object]
) -> None:
    assert carol.post("/api/tokens", json=body).status_code == 422
    assert factory.count(ApiToken) == 0


def test_token_creation_is_rate_limited(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(token_rate_limit_per_minute=2)
    f = factory_for(app)
    f.user("carol", password=PASSWORD)
    carol = f.session_client("carol", PASSWORD)
    codes = [carol.post("/api/tokens", json={"name": f"t{i}"}).status_code for i in range(3)]
    assert codes == [201, 201, 429]
