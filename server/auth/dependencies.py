"""Resolves who is calling, once per request, into one ``Principal``.

Order: an ``Authorization: Bearer`` header (personal API token, or an IdP JWT when
enabled) wins; otherwise the session cookie. Cookie-authenticated writes must carry
the session's CSRF token in ``X-CSRF-Token``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request

from server.auth import service
from server.kit.db import DB
from server.kit.errors import Forbidden, Unauthorized
from server.kit.secrets import API_TOKEN_PREFIX, same
from server.models.auth import LoginSession, User
from server.settings import Settings

SESSION_COOKIE = "oculab_session"
CSRF_COOKIE = "oculab_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    user: User
    via: Literal["session", "token", "jwt"]
    login_session: LoginSession | None = None


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def client_info(request: Request) -> service.ClientInfo:
    return service.ClientInfo(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


Client = Annotated[service.ClientInfo, Depends(client_info)]


def resolve_principal(request: Request, db: DB, settings: Settings, csrf_sent: str) -> Principal:
    """Who is calling; ``csrf_sent`` is the CSRF token the request carries, if any."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != "bearer" or not credentials:
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        if credentials.startswith(API_TOKEN_PREFIX):
            return Principal(user=service.authenticate_token(db, credentials), via="token")
        oidc = request.app.state.oidc
        if oidc is not None and settings.oidc_jwt_audience and credentials.count(".") == 2:
            claims = oidc.validate_bearer_jwt(credentials)
            # Authenticate only: an access token is no statement about groups or roles.
            return Principal(user=service.find_oidc_user(db, claims), via="jwt")
        raise Unauthorized("invalid bearer token")

    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthorized("not authenticated")
    session, user = service.resolve_session(db, settings, cookie)
    if request.method not in SAFE_METHODS and not (
        csrf_sent and same(csrf_sent, session.csrf_token)
    ):
        raise Forbidden("missing or invalid CSRF token (send the X-CSRF-Token header)")
    return Principal(user=user, via="session", login_session=session)


def get_principal(request: Request, db: DB, settings: SettingsDep) -> Principal:
    return resolve_principal(request, db, settings, request.headers.get(CSRF_HEADER, ""))


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.user.is_admin:
        raise Forbidden("administrators only")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_admin)]
