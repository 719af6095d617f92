"""SSO against a strict, certified OpenID provider: panva's ``oidc-provider`` (Node.js).

The provider (tests/oidc/strict_provider.mjs) runs as a real process on loopback. It
requires PKCE, serves name, e-mail and groups from userinfo only, issues RFC 9068 JWT
access tokens for resource indicators, sends the RFC 9207 ``iss`` parameter, offers
RP-initiated logout and can rotate its signing key on request.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import httpx
import httpx2
import pytest
import sqlalchemy as sa
import time_machine
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.models.auth import LoginSession, User
from server.models.project import Membership
from tests.factories import Factory
from tests.helpers import free_port, one_at_a_time, wait_until

OIDC_DIR = Path(__file__).parent / "oidc"
CLIENT_ID = "oculab"
CLI_CLIENT_ID = "oculab-cli"
CLI_REDIRECT_URI = "http://127.0.0.1/cb"
API_AUDIENCE = "https://oculab.test/api"
# The TestClient's origin: what the provider has registered for the Oculab client.
APP_ORIGIN = "http://testserver"


@pytest.fixture(scope="session")
def strict_provider_script() -> Path:
    """The provider script, with its npm dependencies installed on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js is not installed (needed for the strict OIDC provider)")
    with one_at_a_time(OIDC_DIR):
        # npm writes this last: a folder without it is an install cut short.
        if not (OIDC_DIR / "node_modules" / ".package-lock.json").is_file():
            # A clean clone: install exactly what package-lock.json pins.
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(OIDC_DIR)],
                check=True,
                timeout=300,
                stdout=subprocess.DEVNULL,
            )
    return OIDC_DIR / "strict_provider.mjs"


@dataclass
class StrictProvider:
    issuer: str

    def set_user(self, sub: str, **claims: Any) -> None:
        response = httpx.put(f"{self.issuer}/test/users/{sub}", json=claims)
        assert response.status_code == 204, response.text

    def rotate_keys(self) -> str:
        response = httpx.post(f"{self.issuer}/test/rotate")
        assert response.status_code == 200, response.text
        return str(response.json()["kid"])

    @property
    def metadata(self) -> dict[str, Any]:
        document: dict[str, Any] = httpx.get(
            f"{self.issuer}/.well-known/openid-configuration"
        ).json()
        return document


def _node_report(proc: subprocess.Popen[bytes], report: Path) -> str:
    """Where a provider that does not answer is stuck: node writes a diagnostic report
    (its JavaScript stack, its CPU time) on SIGUSR2."""
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return "(no diagnostic report)"
    stack = data.get("javascriptStack", {})
    usage = data.get("resourceUsage", {})
    handles = sorted(h.get("type", "?") for h in data.get("libuv", []) if h.get("is_active"))
    return (
        f"JavaScript stack: {stack.get('message')}\n"
        + "\n".join(stack.get("stack", [])[:15])
        + f"\nCPU: user {usage.get('userCpuSeconds')} s, system {usage.get('kernelCpuSeconds')} s"
        + f"\nactive libuv handles: {handles}"
    )


def _start_provider(
    script: Path, config: Path, tmp: Path, attempt: int
) -> tuple[subprocess.Popen[bytes], str, Path, Path]:
    port = free_port()
    log_path = tmp / f"strict-provider-{attempt}.log"
    report = tmp / f"strict-provider-{attempt}-report.json"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                "node",
                "--report-on-signal",
                "--report-signal=SIGUSR2",
                f"--report-directory={tmp}",
                f"--report-filename={report.name}",
                str(script),
                str(port),
                str(config),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}", log_path, report


def _run_provider(script: Path, tmp: Path) -> Iterator[StrictProvider]:
    config = tmp / "strict-provider.json"
    config.write_text(
        json.dumps(
            {
                "redirect_uris": [f"{APP_ORIGIN}/auth/callback"],
                "post_logout_redirect_uris": [f"{APP_ORIGIN}/"],
                "cli_redirect_uri": CLI_REDIRECT_URI,
            }
        )
    )
    stuck: list[str] = []
    # Twice at most: in CI (both test passes at once on two cores) a provider has, now
    # and then, loaded oidc-provider and then not listened for minutes; where it was
    # stuck is kept for the failure message.
    for attempt in (1, 2):
        proc, issuer, log_path, report = _start_provider(script, config, tmp, attempt)

        def serving(
            proc: subprocess.Popen[bytes] = proc, issuer: str = issuer, log_path: Path = log_path
        ) -> bool:
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the strict OIDC provider did not start:\n{log_path.read_text()}"
                )
            return False

        try:
            # Generous: on a busy two-core runner node's import and RSA key generation
            # have taken over 30 s; a provider that cannot start fails fast (poll()).
            wait_until(serving, 90, "the strict OIDC provider did not answer")
        except AssertionError:
            stuck.append(f"attempt {attempt}: {log_path.read_text()}\n{_node_report(proc, report)}")
            proc.kill()
            proc.wait(timeout=10)
            continue
        try:
            yield StrictProvider(issuer)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return
    raise AssertionError("the strict OIDC provider did not start:\n" + "\n\n".join(stuck))


@pytest.fixture(scope="module")
def provider(
    strict_provider_script: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StrictProvider]:
    yield from _run_provider(strict_provider_script, tmp_path_factory.mktemp("idp"))


@pytest.fixture
def own_provider(strict_provider_script: Path, tmp_path: Path) -> Iterator[StrictProvider]:
    """A provider for one test, for tests that change its state (keys)."""
    yield from _run_provider(strict_provider_script, tmp_path)


@pytest.fixture
def make_sso_app(make_app: Callable[..., FastAPI]) -> Callable[..., FastAPI]:
    def build(provider: StrictProvider, **overrides: Any) -> FastAPI:
        values: dict[str, Any] = {
            "oidc_issuer": provider.issuer,
            "oidc_client_id": CLIENT_ID,
            "oidc_client_secret": "client-secret",
            "oidc_clock_skew_seconds": 0,
            "oidc_jwt_audience": API_AUDIENCE,
            "oidc_admin_groups": ["oculab-admins"],
            "oidc_project_roles": {"vision": {"Shared": "annotator"}},
        }
        values.update(overrides)
        return make_app(**values)

    return build


@pytest.fixture
def sso_app(make_sso_app: Callable[..., FastAPI], provider: StrictProvider) -> FastAPI:
    return make_sso_app(provider)


# --- what a browser and a script do at the provider ----------------------------------


def _local(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.path}?{parsed.query}"


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def _at_provider(idp: httpx.Client, issuer: str, url: str, sub: str) -> tuple[str, bool]:
    """Follows the provider's redirects, signing in as ``sub`` if it asks.

    Returns the URL that leaves the provider and whether a login prompt was shown.
    """
    prompted = False
    response = idp.get(url)
    for _ in range(10):
        assert response.status_code in (302, 303), response.text
        location = urljoin(issuer, response.headers["location"])
        if not location.startswith(issuer):
            return location, prompted
        if urlparse(location).path.startswith("/interaction/"):
            page = idp.get(location)
            assert 'data-prompt="login"' in page.text, page.text
            prompted = True
            response = idp.post(f"{location}/login", data={"login": sub})
        else:
            response = idp.get(location)
    raise AssertionError("the provider kept redirecting")


def _sso_login(
    browser: TestClient, idp: httpx.Client, provider: StrictProvider, sub: str
) -> tuple[httpx2.Response, bool]:
    """Oculab's /auth/login → the provider → Oculab's callback; returns the callback's
    response and whether the provider asked the user to sign in."""
    start = browser.get("/auth/login", follow_redirects=False)
    assert start.status_code == 302, start.text
    callback, prompted = _at_provider(idp, provider.issuer, start.headers["location"], sub)
    assert callback.startswith(f"{APP_ORIGIN}/auth/callback"), callback
    return browser.get(_local(callback), follow_redirects=False), prompted


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _cli_tokens(provider: StrictProvider, sub: str, resource: str = API_AUDIENCE) -> dict[str, Any]:
    """What a script does to call Oculab's API: the code flow for a resource."""
    verifier, challenge = _pkce()
    auth_url = f"{provider.issuer}/auth?" + urlencode(
        {
            "response_type": "code",
            "client_id": CLI_CLIENT_ID,
            "redirect_uri": CLI_REDIRECT_URI,
            "scope": "openid api",
            "resource": resource,
            "state": "s",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    with httpx.Client() as idp:
        callback, _ = _at_provider(idp, provider.issuer, auth_url, sub)
    response = httpx.post(
        f"{provider.issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": _query(callback)["code"],
            "redirect_uri": CLI_REDIRECT_URI,
            "client_id": CLI_CLIENT_ID,
            "code_verifier": verifier,
            "resource": resource,
        },
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _bearer(app: FastAPI, token: str, url: str = "/api/me") -> httpx2.Response:
    return TestClient(app).get(url, headers={"Authorization": f"Bearer {token}"})


def _gus(provider: StrictProvider) -> None:
    provider.set_user(
        "gus",
        preferred_username="gus",
        name="Gus Grissom",
        email="gus@lab.example",
        groups=["vision", "oculab-admins"],
    )


# --- claims and roles ----------------------------------------------------------------


def test_groups_name_and_email_only_in_userinfo_map_admin_and_project_roles(
    sso_app: FastAPI,
    provider: StrictProvider,
    factory: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = factory.client(factory.user("owner"))
    shared = owner.project("Shared")
    _gus(provider)
    browser = TestClient(sso_app)
    with httpx.Client() as idp, caplog.at_level(logging.INFO, logger="server.auth"):
        response, prompted = _sso_login(browser, idp, provider, "gus")
    assert response.status_code == 303, response.text
    assert prompted
    me = browser.get("/api/me").json()
    assert me["is_admin"] is True
    assert me["email"] == "gus@lab.example"
    assert me["display_name"] == "Gus Grissom"
    assert me["username"] == "gus"
    members = {m["username"]: m for m in owner.get(f"/api/projects/{shared['id']}/members").json()}
    assert members["gus"]["role"] == "annotator"
    assert members["gus"]["source"] == "idp"
    with factory.sessionmaker() as db:
        id_token = db.scalar(sa.select(LoginSession.id_token))
    # The point of this test: the ID token itself carries none of it.
    assert id_token is not None
    assert not {"groups", "email", "name"} & set(_jwt_part(id_token, 1))
    logged = caplog.text
    assert "'groups'" in logged  # which claims came from userinfo
    assert "admin=True" in logged
    assert "'Shared': 'annotator'" in logged


def test_bearer_access_token_leaves_admin_groups_and_idp_memberships_intact(
    sso_app: FastAPI, provider: StrictProvider, factory: Factory
) -> None:
    owner = factory.client(factory.user("owner"))
    shared = owner.project("Shared")
    _gus(provider)
    browser = TestClient(sso_app)
    with httpx.Client() as idp:
        assert _sso_login(browser, idp, provider, "gus")[0].status_code == 303
    access_token = _cli_tokens(provider, "gus")["access_token"]
    assert not {"groups", "email", "name"} & set(_jwt_part(access_token, 1))

    response = _bearer(sso_app, access_token)
    assert response.status_code == 200, response.text
    assert response.json()["auth_method"] == "jwt"
    assert response.json()["is_admin"] is True
    assert _bearer(sso_app, access_token, "/api/admin/queue").status_code == 200

    with factory.sessionmaker() as db:
        user = db.scalar(sa.select(User).where(User.subject == "gus"))
        assert user is not None
        assert user.is_admin is True
        assert user.groups == ["vision", "oculab-admins"]
        assert user.email == "gus@lab.example"
        role = db.scalar(
            sa.select(Membership.role).where(
                Membership.user_id == user.id, Membership.project_id == shared["id"]
            )
        )
        assert role is not None
        assert role.value == "annotator"
    # The browser session of the same user is untouched as well.
    assert browser.get("/api/me").json()["is_admin"] is True


def test_bearer_access_token_of_an_identity_that_never_signed_in_is_401(
    sso_app: FastAPI, provider: StrictProvider, factory: Factory
) -> None:
    provider.set_user("stranger", preferred_username="stranger", groups=["oculab-admins"])
    response = _bearer(sso_app, _cli_tokens(provider, "stranger")["access_token"])
    assert response.status_code == 401
    assert "sign in once" in response.json()["detail"]
    assert factory.count(User) == 0


# --- what is checked -----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["trailing slash", "other host"])
def test_issuer_that_differs_from_the_discovery_document_is_refused(
    make_sso_app: Callable[..., FastAPI],
    provider: StrictProvider,
    factory: Factory,
    variant: str,
) -> None:
    # Log in once with the correct configuration, so a bearer token has a user.
    provider.set_user("ivy", preferred_username="ivy")
    good = TestClient(make_sso_app(provider))
    with httpx.Client() as idp:
        assert _sso_login(good, idp, provider, "ivy")[0].status_code == 303
    access_token = _cli_tokens(provider, "ivy")["access_token"]

    discovery = f"{provider.issuer}/.well-known/openid-configuration"
    if variant == "trailing slash":
        app = make_sso_app(provider, oidc_issuer=provider.issuer + "/")
    else:
        app = make_sso_app(
            provider, oidc_issuer="http://idp.other.example", oidc_discovery_url=discovery
        )
    response = TestClient(app).get("/auth/login", follow_redirects=False)
    assert response.status_code == 502
    assert "issuer" in response.json()["detail"]
    assert provider.issuer in response.json()["detail"]
    bearer = _bearer(app, access_token)
    assert bearer.status_code == 502
    assert "issuer" in bearer.json()["detail"]
    assert factory.count(LoginSession) == 1


@pytest.mark.parametrize("iss", ["http://evil.example", None])
def test_callback_with_a_wrong_or_missing_iss_parameter_is_refused(
    sso_app: FastAPI, provider: StrictProvider, factory: Factory, iss: str | None
) -> None:
    assert provider.metadata["authorization_response_iss_parameter_supported"] is True
    provider.set_user("mallory", preferred_username="mallory")
    browser = TestClient(sso_app)
    start = browser.get("/auth/login", follow_redirects=False)
    with httpx.Client() as idp:
        callback, _ = _at_provider(idp, provider.issuer, start.headers["location"], "mallory")
    params = _query(callback)
    assert params["iss"] == provider.issuer
    if iss is None:
        del params["iss"]
    else:
        params["iss"] = iss
    response = browser.get("/auth/callback?" + urlencode(params), follow_redirects=False)
    assert response.status_code == 400
    assert "iss" in response.json()["detail"]
    assert factory.count(LoginSession) == 0
    assert factory.count(User) == 0


def test_id_token_is_refused_as_bearer_while_an_access_token_works(
    make_sso_app: Callable[..., FastAPI], provider: StrictProvider
) -> None:
    provider.set_user("ci-bot", preferred_username="ci-bot")
    browser = TestClient(make_sso_app(provider))
    with httpx.Client() as idp:
        assert _sso_login(browser, idp, provider, "ci-bot")[0].status_code == 303
    tokens = _cli_tokens(provider, "ci-bot")
    assert _jwt_part(tokens["access_token"], 0)["typ"] == "at+jwt"
    assert _bearer(make_sso_app(provider), tokens["access_token"]).status_code == 200
    # Even where the audience matches (an API configured with the client's id), the
    # ID token is no API credential.
    app = make_sso_app(provider, oidc_jwt_audience=CLI_CLIENT_ID)
    assert _jwt_part(tokens["id_token"], 1)["aud"] == CLI_CLIENT_ID
    response = _bearer(app, tokens["id_token"])
    assert response.status_code == 401
    assert "at+jwt" in response.json()["detail"]


def test_access_token_for_another_audience_is_refused(
    sso_app: FastAPI, provider: StrictProvider
) -> None:
    provider.set_user("ci-bot", preferred_username="ci-bot")
    browser = TestClient(sso_app)
    with httpx.Client() as idp:
        assert _sso_login(browser, idp, provider, "ci-bot")[0].status_code == 303
    other = _cli_tokens(provider, "ci-bot", resource="https://other.example/api")
    assert _jwt_part(other["access_token"], 1)["aud"] == "https://other.example/api"
    response = _bearer(sso_app, other["access_token"])
    assert response.status_code == 401
    assert "aud" in response.json()["detail"]


def test_tampered_and_expired_access_tokens_are_refused(
    sso_app: FastAPI, provider: StrictProvider
) -> None:
    provider.set_user("ci-bot", preferred_username="ci-bot")
    with httpx.Client() as idp:
        assert _sso_login(TestClient(sso_app), idp, provider, "ci-bot")[0].status_code == 303
    token = _cli_tokens(provider, "ci-bot")["access_token"]
    header, payload, signature = token.split(".")
    claims = _jwt_part(token, 1) | {"sub": "someone-else"}
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert _bearer(sso_app, f"{header}.{forged_payload}.{signature}").status_code == 401
    assert _bearer(sso_app, f"{header}.{payload}.{signature[:-6]}AAAAAA").status_code == 401
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2), tick=True):
        response = _bearer(sso_app, token)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_tokens_signed_with_a_rotated_key_are_accepted_after_a_jwks_refetch(
    make_sso_app: Callable[..., FastAPI], own_provider: StrictProvider
) -> None:
    provider = own_provider
    app = make_sso_app(provider)
    provider.set_user("ci-bot", preferred_username="ci-bot")
    with httpx.Client() as idp:
        assert _sso_login(TestClient(app), idp, provider, "ci-bot")[0].status_code == 303
    old = _cli_tokens(provider, "ci-bot")["access_token"]
    assert _bearer(app, old).status_code == 200  # the key set is now cached

    new_kid = provider.rotate_keys()
    new = _cli_tokens(provider, "ci-bot")["access_token"]
    assert _jwt_part(new, 0)["kid"] == new_kid
    response = _bearer(app, new)
    assert response.status_code == 200, response.text
    assert _bearer(app, old).status_code == 200  # still published, still good
    # The browser login's ID token is signed with the new key too.
    with httpx.Client() as idp:
        response, _ = _sso_login(TestClient(app), idp, provider, "ci-bot")
    assert response.status_code == 303, response.text


# --- logout --------------------------------------------------------------------------


def _confirm_logout_at_provider(idp: httpx.Client, provider: StrictProvider, url: str) -> str:
    """The provider's "do you want to sign out?" page, answered yes."""
    page = idp.get(url)
    assert page.status_code == 200, page.text
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
    assert action is not None
    assert xsrf is not None
    done = idp.post(
        urljoin(provider.issuer, action.group(1)), data={"xsrf": xsrf.group(1), "logout": "yes"}
    )
    assert done.status_code in (302, 303), done.text
    return str(done.headers["location"])


def test_logout_ends_the_provider_session_and_the_next_login_prompts_again(
    sso_app: FastAPI, provider: StrictProvider, factory: Factory
) -> None:
    provider.set_user("lou", preferred_username="lou")
    browser = TestClient(sso_app)
    with httpx.Client() as idp:
        response, prompted = _sso_login(browser, idp, provider, "lou")
        assert response.status_code == 303
        assert prompted is True
        # While the provider's session lives, a second sign-in passes silently.
        again = TestClient(sso_app)
        response, prompted = _sso_login(again, idp, provider, "lou")
        assert response.status_code == 303
        assert prompted is False
        with factory.sessionmaker() as db:
            stored = db.scalars(sa.select(LoginSession.id_token).order_by(LoginSession.id)).all()
        csrf = again.get("/api/me").json()["csrf_token"]

        response = again.post("/auth/logout", headers={"X-CSRF-Token": csrf})
        assert response.status_code == 200, response.text
        redirect = response.json()["redirect"]
        assert redirect.startswith(provider.metadata["end_session_endpoint"] + "?")
        params = _query(redirect)
        assert params["id_token_hint"] == stored[-1]
        assert params["post_logout_redirect_uri"] == f"{APP_ORIGIN}/"
        assert params["client_id"] == CLIENT_ID
        assert again.get("/api/me").status_code == 401
        with factory.sessionmaker() as db:
            ended = db.scalar(sa.select(LoginSession).order_by(LoginSession.id.desc()))
            assert ended is not None
            assert ended.revoked_at is not None
            assert ended.id_token is None

        assert _confirm_logout_at_provider(idp, provider, redirect) == f"{APP_ORIGIN}/"
        # The provider's session is gone: the next sign-in asks who you are.
        response, prompted = _sso_login(TestClient(sso_app), idp, provider, "lou")
        assert response.status_code == 303
        assert prompted is True


def test_logout_by_form_post_redirects_with_303(sso_app: FastAPI, provider: StrictProvider) -> None:
    provider.set_user("lou", preferred_username="lou")
    browser = TestClient(sso_app)
    with httpx.Client() as idp:
        assert _sso_login(browser, idp, provider, "lou")[0].status_code == 303
    csrf = browser.get("/api/me").json()["csrf_token"]
    # A form without the CSRF token is refused and the session lives on.
    refused = browser.post("/auth/logout", data={"x": "1"}, follow_redirects=False)
    assert refused.status_code == 403
    assert browser.get("/api/me").status_code == 200
    response = browser.post("/auth/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith(provider.metadata["end_session_endpoint"])
    assert browser.get("/api/me").status_code == 401


def test_logout_stays_local_when_provider_logout_is_off(
    make_sso_app: Callable[..., FastAPI], provider: StrictProvider
) -> None:
    app = make_sso_app(provider, oidc_provider_logout=False)
    provider.set_user("lou", preferred_username="lou")
    browser = TestClient(app)
    with httpx.Client() as idp:
        assert _sso_login(browser, idp, provider, "lou")[0].status_code == 303
    csrf = browser.get("/api/me").json()["csrf_token"]
    response = browser.post("/auth/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204
    assert browser.get("/api/me").status_code == 401
