"""SSO against a real OpenID provider process (``oidc-provider-mock``) on loopback."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
import sqlalchemy as sa
import time_machine
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.models.audit import AuditEvent
from server.models.auth import LoginSession, User
from server.models.project import Membership
from tests.factories import Factory
from tests.helpers import free_port, wait_until

CLIENT_ID = "oculab"


def _start_provider(token_max_age: int) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oidc_provider_mock",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--token-max-age",
            str(token_max_age),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def serving() -> bool:
            try:
                if httpx.get(f"{base}/.well-known/openid-configuration").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("the OIDC provider did not start")
            return False

        wait_until(serving, 120, "the OIDC provider did not start", 0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    yield from _start_provider(token_max_age=3600)


@pytest.fixture(scope="module")
def short_lived_provider() -> Iterator[str]:
    yield from _start_provider(token_max_age=2)


def _set_claims(provider: str, sub: str, **claims: Any) -> None:
    response = httpx.put(f"{provider}/users/{sub}", json={"email": f"{sub}@lab.example", **claims})
    assert response.status_code == 204


@pytest.fixture
def sso_app(make_app: Callable[..., FastAPI], provider: str) -> FastAPI:
    return make_app(
        oidc_issuer=provider,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret="client-secret",
        oidc_clock_skew_seconds=0,
        oidc_jwt_audience=CLIENT_ID,
        oidc_admin_groups=["oculab-admins"],
        oidc_project_roles={"vision": {"Shared": "annotator"}},
    )


def _start_login(client: TestClient, provider: str, next_url: str | None = None) -> str:
    params = {"next": next_url} if next_url is not None else {}
    response = client.get("/auth/login", params=params, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(provider)
    return location


def _authorize_at_idp(auth_url: str, sub: str) -> str:
    """What the user's browser does at the IdP: load the form, submit it."""
    form = httpx.get(auth_url)
    assert form.status_code == 200
    assert 'name="sub"' in form.text
    response = httpx.post(auth_url, data={"sub": sub})
    assert response.status_code == 302, response.text
    return str(response.headers["location"])


def _local(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.path}?{parsed.query}"


def _code_and_state(callback_url: str) -> tuple[str, str]:
    query = parse_qs(urlparse(callback_url).query)
    return query["code"][0], query["state"][0]


def test_full_code_flow_creates_a_session(
    sso_app: FastAPI, provider: str, factory: Factory
) -> None:
    _set_claims(provider, "alice-sub", preferred_username="alice", name="Alice Liddell")
    browser = TestClient(sso_app)
    auth_url = _start_login(browser, provider, next_url="/projects/7?tab=images")
    query = parse_qs(urlparse(auth_url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == [CLIENT_ID]
    assert query["state"]
    assert query["nonce"]
    assert query["code_challenge"]
    assert "openid" in query["scope"][0]
    callback = _authorize_at_idp(auth_url, "alice-sub")
    response = browser.get(_local(callback), follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/projects/7?tab=images"
    me = browser.get("/api/me").json()
    assert me["username"] == "alice"
    assert me["display_name"] == "Alice Liddell"
    assert me["email"] == "alice-sub@lab.example"
    assert me["is_local"] is False
    with factory.sessionmaker() as db:
        user = db.scalar(sa.select(User).where(User.subject == "alice-sub"))
        assert user is not None
        assert user.issuer == provider
        assert db.scalar(sa.select(sa.func.count()).select_from(LoginSession)) == 1
        actions = list(db.scalars(sa.select(AuditEvent.action)))
        assert "auth.login" in actions
    # Same (issuer, subject) next time: the same user, not a new one.
    again = TestClient(sso_app)
    again.get(_local(_authorize_at_idp(_start_login(again, provider), "alice-sub")))
    assert again.get("/api/me").json()["id"] == me["id"]
    assert factory.count(User) == 1


def test_callback_with_wrong_state_is_rejected(
    sso_app: FastAPI, provider: str, factory: Factory
) -> None:
    browser = TestClient(sso_app)
    callback = _authorize_at_idp(_start_login(browser, provider), "mallory")
    code, _ = _code_and_state(callback)
    response = browser.get("/auth/callback?" + urlencode({"code": code, "state": "forged"}))
    assert response.status_code == 400
    assert "state" in response.json()["detail"]
    assert factory.count(LoginSession) == 0
    # A callback in a browser that never started a login is rejected too.
    stranger = TestClient(sso_app)
    assert stranger.get(_local(callback)).status_code == 400
    assert factory.count(LoginSession) == 0
    with factory.sessionmaker() as db:
        assert "auth.login_failed" in list(db.scalars(sa.select(AuditEvent.action)))


def test_replayed_code_is_rejected(sso_app: FastAPI, provider: str, factory: Factory) -> None:
    browser = TestClient(sso_app)
    callback = _authorize_at_idp(_start_login(browser, provider), "alice-sub")
    assert browser.get(_local(callback), follow_redirects=False).status_code == 303
    old_code, _ = _code_and_state(callback)
    # A fresh login state, but the already-used code.
    attacker = TestClient(sso_app)
    auth_url = _start_login(attacker, provider)
    state = parse_qs(urlparse(auth_url).query)["state"][0]
    response = attacker.get("/auth/callback?" + urlencode({"code": old_code, "state": state}))
    assert response.status_code == 400
    assert "invalid_grant" in response.json()["detail"]
    assert factory.count(LoginSession) == 1


def test_code_injected_from_another_login_fails_the_nonce_check(
    sso_app: FastAPI, provider: str, factory: Factory
) -> None:
    victim = TestClient(sso_app)
    victim_state = parse_qs(urlparse(_start_login(victim, provider)).query)["state"][0]
    attacker = TestClient(sso_app)
    attacker_code, _ = _code_and_state(
        _authorize_at_idp(_start_login(attacker, provider), "mallory")
    )
    response = victim.get(
        "/auth/callback?" + urlencode({"code": attacker_code, "state": victim_state})
    )
    assert response.status_code == 400
    assert "nonce" in response.json()["detail"]
    assert factory.count(LoginSession) == 0


def test_expired_id_token_is_rejected(
    make_app: Callable[..., FastAPI], short_lived_provider: str, factory: Factory
) -> None:
    app = make_app(
        oidc_issuer=short_lived_provider,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret="client-secret",
        oidc_clock_skew_seconds=0,
    )
    browser = TestClient(app)
    callback = _authorize_at_idp(_start_login(browser, short_lived_provider), "alice-sub")
    # The token is minted during the callback with a 2 s lifetime; our clock runs ahead.
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), tick=True):
        response = browser.get(_local(callback))
    assert response.status_code == 400
    assert "expired" in response.json()["detail"]
    assert factory_count(app, LoginSession) == 0


def factory_count(app: FastAPI, model: type[Any]) -> int:
    return Factory(app).count(model)


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "http:/evil",
        "evil.example",
        "/ok\r\nSet-Cookie: x=1",
    ],
)
def test_open_redirects_in_next_land_on_root(
    sso_app: FastAPI, provider: str, next_url: str
) -> None:
    browser = TestClient(sso_app)
    callback = _authorize_at_idp(_start_login(browser, provider, next_url=next_url), "alice-sub")
    response = browser.get(_local(callback), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_idp_groups_map_to_admin_and_project_roles(
    sso_app: FastAPI, provider: str, factory: Factory
) -> None:
    owner = factory.client(factory.user("owner"))
    shared = owner.project("Shared")
    _set_claims(provider, "gus", preferred_username="gus", groups=["vision", "oculab-admins"])
    browser = TestClient(sso_app)
    browser.get(_local(_authorize_at_idp(_start_login(browser, provider), "gus")))
    me = browser.get("/api/me").json()
    assert me["is_admin"] is True
    members = {m["username"]: m for m in owner.get(f"/api/projects/{shared['id']}/members").json()}
    assert members["gus"]["role"] == "annotator"
    assert members["gus"]["source"] == "idp"
    # Leaving the groups at the IdP takes effect at the next login.
    _set_claims(provider, "gus", preferred_username="gus", groups=[])
    browser2 = TestClient(sso_app)
    browser2.get(_local(_authorize_at_idp(_start_login(browser2, provider), "gus")))
    assert browser2.get("/api/me").json()["is_admin"] is False
    assert factory.count(Membership, Membership.user_id == me["id"]) == 0


def _idp_tokens(provider: str, sub: str, client_id: str) -> dict[str, Any]:
    """Runs the code flow directly against the IdP, as another application would."""
    redirect_uri = "http://127.0.0.1/cb"
    auth_url = f"{provider}/oauth2/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile email",
            "state": "s",
            "nonce": "n",
        }
    )
    code, _ = _code_and_state(_authorize_at_idp(auth_url, sub))
    response = httpx.post(
        f"{provider}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": "x",
        },
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def test_id_token_is_refused_as_bearer_and_changes_nothing(
    sso_app: FastAPI, provider: str, factory: Factory
) -> None:
    # Bearer JWTs must be RFC 9068 access tokens; accepting ID tokens let any relying
    # party holding one call the API. Access tokens: tests/test_oidc_strict.py.
    _set_claims(provider, "gus", preferred_username="gus", groups=["oculab-admins"])
    browser = TestClient(sso_app)
    browser.get(_local(_authorize_at_idp(_start_login(browser, provider), "gus")))
    assert browser.get("/api/me").json()["is_admin"] is True
    _set_claims(provider, "gus", preferred_username="gus", groups=[])
    jwt = _idp_tokens(provider, "gus", CLIENT_ID)["id_token"]
    response = TestClient(sso_app).get("/api/me", headers={"Authorization": f"Bearer {jwt}"})
    assert response.status_code == 401
    assert "at+jwt" in response.json()["detail"]
    assert browser.get("/api/me").json()["is_admin"] is True


def test_sso_routes_are_404_when_not_configured(app: FastAPI) -> None:
    client = TestClient(app)
    assert client.get("/auth/login", follow_redirects=False).status_code == 404
    assert client.get("/auth/callback?code=x&state=y").status_code == 404


def test_unreachable_idp_is_502_not_500(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(
        oidc_issuer=f"http://127.0.0.1:{free_port()}",
        oidc_client_id=CLIENT_ID,
        oidc_timeout_seconds=2,
    )
    response = TestClient(app).get("/auth/login", follow_redirects=False)
    assert response.status_code == 502


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"oidc_issuer": "https://sso.lab.example/realms/vision"}, "sso.lab.example"),
        ({"oidc_issuer": "https://www.idp.example:8443/"}, "idp.example"),
        (
            {"oidc_discovery_url": "https://login.example.org/.well-known/openid-configuration"},
            "login.example.org",
        ),
        (
            {"oidc_issuer": "https://sso.lab.example/", "oidc_display_name": "  Lab Keycloak "},
            "Lab Keycloak",
        ),
    ],
)
def test_sign_in_button_names_the_idp_from_the_setting_or_the_issuer_host(
    make_app: Callable[..., FastAPI], settings: dict[str, str], name: str
) -> None:
    app = make_app(oidc_client_id=CLIENT_ID, **settings)
    config = TestClient(app).get("/api/auth/config").json()
    assert config["oidc"] is True
    assert config["oidc_name"] == name


def test_without_sso_the_config_names_no_idp(make_app: Callable[..., FastAPI]) -> None:
    config = TestClient(make_app(oidc_display_name="Lab Keycloak")).get("/api/auth/config")
    assert config.json()["oidc"] is False
    assert config.json()["oidc_name"] is None
