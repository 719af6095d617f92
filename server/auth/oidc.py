"""OpenID Connect: the browser login (authlib) and IdP-issued bearer JWTs (joserfc)."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx2
from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from authlib.integrations.starlette_client import OAuth
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse

from server.kit.errors import BadGateway, BadRequest, Unauthorized
from server.settings import Settings

log = logging.getLogger(__name__)

_PROVIDER = "oidc"
_SIGNING_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
# RFC 9068 §2.1; the media-type form is allowed too (RFC 7515 §4.1.9).
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# Keys the IdP withdrew stop being trusted after this long.
_JWKS_MAX_AGE_SECONDS = 3600.0
# Forced refetches on an unknown kid, at most this often: random kids sent by an
# attacker must not turn us into a load generator against the IdP.
_JWKS_REFETCH_INTERVAL_SECONDS = 60.0
# Claims about the token itself: these come from the validated ID token, never from
# userinfo (which is not signed and is not bound to this login).
_PROTOCOL_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "auth_time", "acr", "amr", "azp"}
    | {"at_hash", "c_hash", "s_hash", "sid", "jti"}
)


def tls_verify(settings: Settings) -> ssl.SSLContext | bool:
    """What the IdP's certificate is checked against: the system's CAs, plus
    OCULAB_CA_BUNDLE's (an internal CA) when set."""
    if settings.ca_bundle is None:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(settings.ca_bundle))
    return context


class IssuerMismatch(BadGateway):
    """The IdP's discovery document names another issuer than the one configured."""


@dataclass(frozen=True)
class LoginResult:
    claims: dict[str, Any]  # the ID token's claims, merged with userinfo's
    id_token: str  # raw, kept for RP-initiated logout (id_token_hint)


class OidcClient:
    """One per app: the authlib registry plus a JWKS cache for bearer tokens.

    Discovery is fetched here, once, and checked before authlib sees it, so the login
    and the bearer path trust the same, verified issuer.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        client_kwargs: dict[str, Any] = {
            "scope": settings.oidc_scopes,
            "code_challenge_method": "S256",
            "timeout": settings.oidc_timeout_seconds,
        }
        self._verify = tls_verify(settings)
        client_kwargs["verify"] = self._verify
        if not settings.oidc_client_secret:
            # A public client: PKCE alone protects the code exchange.
            client_kwargs["token_endpoint_auth_method"] = "none"  # noqa: S105
        self._oauth = OAuth()
        # No server_metadata_url: authlib would fetch and trust discovery unchecked.
        self._oauth.register(
            _PROVIDER,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret or None,
            client_kwargs=client_kwargs,
        )
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._jwks: KeySet | None = None
        self._jwks_fetched_at = 0.0
        self._jwks_forced_at = float("-inf")

    @property
    def _app(self) -> Any:
        return self._oauth.create_client(_PROVIDER)

    # --- discovery ----------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The discovery document, fetched once and checked (blocking)."""
        if self._metadata is None:
            try:
                response = httpx2.get(
                    self.settings.oidc_metadata_url,
                    timeout=self.settings.oidc_timeout_seconds,
                    verify=self._verify,
                )
                response.raise_for_status()
                document = response.json()
            except (httpx2.HTTPError, ValueError) as exc:
                log.warning("OIDC discovery failed: %s", exc)
                raise BadGateway("the identity provider cannot be reached") from exc
            if not isinstance(document, dict) or not isinstance(document.get("issuer"), str):
                raise BadGateway("the identity provider's discovery document has no issuer")
            self._check_issuer(document["issuer"])
            self._metadata = document
        return self._metadata

    def _check_issuer(self, advertised: str) -> None:
        # OpenID Connect Discovery §4.3: exactly equal, no normalisation (a trailing
        # slash or another host name is another issuer). With only a discovery URL
        # configured there is nothing to compare against; the document's issuer is used.
        expected = self.settings.oidc_issuer
        if expected and advertised != expected:
            log.error(
                "OIDC issuer mismatch: OCULAB_OIDC_ISSUER is %r but %s names %r",
                expected,
                self.settings.oidc_metadata_url,
                advertised,
            )
            raise IssuerMismatch(
                f"single sign-on is misconfigured: the identity provider's issuer is "
                f"{advertised!r}, but OCULAB_OIDC_ISSUER is {expected!r}; they must be "
                "identical (OpenID Connect Discovery §4.3)"
            )

    async def _client(self) -> Any:
        metadata = await run_in_threadpool(self.metadata)
        app = self._app
        if "_loaded_at" not in app.server_metadata:
            # authlib keeps fetched JWKS under "jwks" in this dict; seed it only once.
            app.server_metadata.update(metadata, _loaded_at=time.time())
        return app

    # --- browser login ------------------------------------------------------------

    async def login_redirect(self, request: Request, redirect_uri: str) -> RedirectResponse:
        app = await self._client()
        try:
            response: RedirectResponse = await app.authorize_redirect(request, redirect_uri)
        except (httpx2.HTTPError, OAuthError, ValueError) as exc:
            log.warning("OIDC login redirect failed: %s", exc)
            raise BadGateway("the identity provider cannot be reached") from exc
        return response

    async def complete_login(self, request: Request) -> LoginResult:
        """Exchange the code, validate the ID token and merge in userinfo's claims.

        authlib checks state (bound to this browser's session cookie), sends the PKCE
        verifier, and validates the ID token's signature, issuer, audience, expiry and
        nonce. The RFC 9207 ``iss`` parameter is checked here, before the code is used.
        """
        app = await self._client()
        issuer: str = app.server_metadata["issuer"]
        sent_iss = request.query_params.get("iss")
        advertised = app.server_metadata.get("authorization_response_iss_parameter_supported")
        # RFC 9207 §2.4: compare when present; require it when the IdP promises it.
        if (sent_iss is not None or advertised is True) and sent_iss != issuer:
            raise BadRequest(
                "login failed: the authorization response's iss parameter "
                f"({sent_iss and sent_iss[:200]!r}) is not this identity provider ({issuer!r})"
            )
        try:
            token = await app.authorize_access_token(
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
        id_claims = token.get("userinfo")
        if not id_claims or not isinstance(token.get("id_token"), str):
            # No nonce in the stored state means no ID-token validation happened.
            raise BadRequest("login failed: the identity provider returned no ID token")
        claims = dict(id_claims)
        from_userinfo: list[str] = []
        if app.server_metadata.get("userinfo_endpoint") and token.get("access_token"):
            # Many IdPs (oidc-provider by default, Keycloak and Authentik as configured)
            # put name, e-mail and groups only here; without it admins would be demoted.
            userinfo = await self._userinfo(app, token)
            if userinfo.get("sub") != claims.get("sub"):
                # OIDC Core §5.3.2: otherwise the response must not be used.
                raise BadRequest("login failed: userinfo describes another subject")
            for name, value in userinfo.items():
                if name not in _PROTOCOL_CLAIMS:
                    claims[name] = value
                    from_userinfo.append(name)
        log.info(
            "OIDC login sub=%s: claims %s from the ID token, %s from userinfo",
            claims.get("sub"),
            sorted(set(id_claims) - _PROTOCOL_CLAIMS - set(from_userinfo)),
            sorted(from_userinfo),
        )
        return LoginResult(claims=claims, id_token=token["id_token"])

    async def _userinfo(self, app: Any, token: dict[str, Any]) -> dict[str, Any]:
        try:
            userinfo = await app.userinfo(token=token)
        except httpx2.HTTPError as exc:
            log.warning("OIDC userinfo failed: %s", exc)
            raise BadGateway("the identity provider's userinfo endpoint failed") from exc
        except ValueError as exc:
            # A signed or encrypted userinfo response (application/jwt) is not requested.
            raise BadGateway("the identity provider's userinfo response is not JSON") from exc
        if not isinstance(userinfo, dict):
            raise BadGateway("the identity provider's userinfo response is not an object")
        return dict(userinfo)

    # --- logout -------------------------------------------------------------------

    def end_session_url(self, id_token: str | None, post_logout_redirect_uri: str) -> str | None:
        """The IdP's RP-initiated logout URL, or None when it offers none (blocking)."""
        if not self.settings.oidc_provider_logout:
            return None
        try:
            endpoint = self.metadata().get("end_session_endpoint")
        except BadGateway:
            # The local session is already over; an unreachable IdP must not undo that.
            log.warning("OIDC logout: discovery failed; the IdP session is left as it is")
            return None
        if not isinstance(endpoint, str) or not endpoint:
            return None
        params = {"client_id": self.settings.oidc_client_id}
        if post_logout_redirect_uri:
            params["post_logout_redirect_uri"] = post_logout_redirect_uri
        if id_token:
            params["id_token_hint"] = id_token
        separator = "&" if "?" in endpoint else "?"
        return endpoint + separator + urlencode(params)

    # --- bearer JWTs --------------------------------------------------------------

    def _load_jwks(self, *, force: bool) -> KeySet:
        with self._lock:
            now = time.monotonic()
            expired = now - self._jwks_fetched_at > _JWKS_MAX_AGE_SECONDS
            may_force = force and now - self._jwks_forced_at > _JWKS_REFETCH_INTERVAL_SECONDS
            if self._jwks is None or expired or may_force:
                uri = self.metadata().get("jwks_uri")
                try:
                    response = httpx2.get(
                        str(uri), timeout=self.settings.oidc_timeout_seconds, verify=self._verify
                    )
                    response.raise_for_status()
                    self._jwks = KeySet.import_key_set(response.json())
                except (httpx2.HTTPError, JoseError, ValueError, TypeError, KeyError) as exc:
                    log.warning("OIDC JWKS fetch from %s failed: %s", uri, exc)
                    raise BadGateway("the identity provider's signing keys cannot be read") from exc
                self._jwks_fetched_at = now
                if force:
                    self._jwks_forced_at = now
            return self._jwks

    def validate_bearer_jwt(self, raw: str) -> dict[str, Any]:
        """Validate an RFC 9068 access token; returns its claims (blocking).

        ID tokens are refused even though the same IdP signed them: they tell the
        client who logged in, they do not authorise calls to an API.
        """
        settings = self.settings
        issuer = self.metadata()["issuer"]
        try:
            try:
                token = jwt.decode(raw, self._load_jwks(force=False), algorithms=_SIGNING_ALGS)
            except InvalidKeyIdError:
                # A rotated signing key: look at the IdP's current key set once.
                token = jwt.decode(raw, self._load_jwks(force=True), algorithms=_SIGNING_ALGS)
        except (JoseError, ValueError) as exc:
            raise Unauthorized(f"invalid bearer token ({_jose_reason(exc)})") from exc
        typ = token.header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCESS_TOKEN_TYPES:
            raise Unauthorized(
                f"invalid bearer token (typ {typ!r} is not an access token; send an "
                "RFC 9068 access token (typ at+jwt), not an ID token)"
            )
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
