"""OpenID Connect: the browser login (authlib) and IdP-issued bearer JWTs (joserfc)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx2
from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from authlib.integrations.starlette_client import OAuth
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from starlette.requests import Request
from starlette.responses import RedirectResponse

from server.kit.errors import BadGateway, BadRequest, Unauthorized
from server.settings import Settings

log = logging.getLogger(__name__)

_PROVIDER = "oidc"
_SIGNING_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


class OidcClient:
    """One per app: the authlib registry plus a JWKS cache for bearer tokens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        client_kwargs: dict[str, Any] = {
            "scope": settings.oidc_scopes,
            "code_challenge_method": "S256",
            "timeout": settings.oidc_timeout_seconds,
        }
        if not settings.oidc_client_secret:
            # A public client: PKCE alone protects the code exchange.
            client_kwargs["token_endpoint_auth_method"] = "none"  # noqa: S105
        self._oauth = OAuth()
        self._oauth.register(
            _PROVIDER,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret or None,
            server_metadata_url=settings.oidc_metadata_url,
            client_kwargs=client_kwargs,
        )
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._jwks: KeySet | None = None
        self._jwks_fetched_at = 0.0

    @property
    def _app(self) -> Any:
        return self._oauth.create_client(_PROVIDER)

    # --- browser login ------------------------------------------------------------

    async def login_redirect(self, request: Request, redirect_uri: str) -> RedirectResponse:
        try:
            response: RedirectResponse = await self._app.authorize_redirect(request, redirect_uri)
        except (httpx2.HTTPError, OAuthError, ValueError) as exc:
            log.warning("OIDC discovery failed: %s", exc)
            raise BadGateway("the identity provider cannot be reached") from exc
        return response

    async def complete_login(self, request: Request) -> dict[str, Any]:
        """Exchange the code and return validated ID-token claims.

        authlib checks state (bound to this browser's session cookie), sends the PKCE
        verifier, and validates the ID token's signature, issuer, audience, expiry and
        nonce.
        """
        try:
            token = await self._app.authorize_access_token(
                request, leeway=self.settings.oidc_clock_skew_seconds
            )
        except MismatchingStateError as exc:
            raise BadRequest("login failed: state does not match this browser's login") from exc
        except OAuthError as exc:
            raise BadRequest(f"login failed: {exc.error}: {exc.description or ''}".strip()) from exc
        except JoseError as exc:
            raise BadRequest(f"login failed: invalid ID token ({_jose_reason(exc)})") from exc
        except httpx2.HTTPError as exc:
            raise BadGateway("the identity provider cannot be reached") from exc
        userinfo = token.get("userinfo")
        if not userinfo:
            # No nonce in the stored state means no ID-token validation happened.
            raise BadRequest("login failed: the identity provider returned no ID token")
        return dict(userinfo)

    # --- bearer JWTs --------------------------------------------------------------

    def _load_metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            response = httpx2.get(
                self.settings.oidc_metadata_url, timeout=self.settings.oidc_timeout_seconds
            )
            response.raise_for_status()
            self._metadata = response.json()
        return self._metadata

    def _load_jwks(self, *, force: bool) -> KeySet:
        with self._lock:
            # At most one forced refetch per minute: an attacker sending random kids
            # must not turn us into a load generator against the IdP.
            stale = time.monotonic() - self._jwks_fetched_at > 60
            if self._jwks is None or (force and stale):
                uri = self._load_metadata()["jwks_uri"]
                response = httpx2.get(uri, timeout=self.settings.oidc_timeout_seconds)
                response.raise_for_status()
                self._jwks = KeySet.import_key_set(response.json())
                self._jwks_fetched_at = time.monotonic()
            return self._jwks

    def validate_bearer_jwt(self, raw: str) -> dict[str, Any]:
        settings = self.settings
        try:
            issuer = self._load_metadata()["issuer"]
            try:
                token = jwt.decode(raw, self._load_jwks(force=False), algorithms=_SIGNING_ALGS)
            except InvalidKeyIdError:
                token = jwt.decode(raw, self._load_jwks(force=True), algorithms=_SIGNING_ALGS)
        except httpx2.HTTPError as exc:
            raise BadGateway("the identity provider cannot be reached") from exc
        except (JoseError, ValueError) as exc:
            raise Unauthorized(f"invalid bearer token ({_jose_reason(exc)})") from exc
        registry = JWTClaimsRegistry(
            leeway=settings.oidc_clock_skew_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": settings.oidc_jwt_audience},
            sub={"essential": True},
            exp={"essential": True},
        )
        try:
            registry.validate(token.claims)
        except JoseError as exc:
            raise Unauthorized(f"invalid bearer token ({_jose_reason(exc)})") from exc
        return dict(token.claims)


def _jose_reason(exc: Exception) -> str:
    if isinstance(exc, ExpiredTokenError):
        return "token has expired"
    description = getattr(exc, "description", None)
    return str(description or exc.__class__.__name__)


def safe_next(value: str | None) -> str:
    """Only same-origin absolute paths survive; everything else becomes ``/``."""
    if not value or len(value) > 2000:
        return "/"
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "/"
    return value
