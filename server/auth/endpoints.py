from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.audit import service as audit
from server.auth import service
from server.auth.dependencies import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Client,
    CurrentPrincipal,
    SettingsDep,
)
from server.auth.models import User
from server.auth.oidc import OidcClient, safe_next
from server.auth.schemas import AuthConfig, LocalLogin, Me
from server.kit.db import DB
from server.kit.errors import NotFound, OculabError
from server.kit.ratelimit import enforce
from server.settings import Settings

router = APIRouter(tags=["auth"])

_NEXT_KEY = "oculab_next"


def _oidc(request: Request) -> OidcClient:
    oidc: OidcClient | None = request.app.state.oidc
    if oidc is None:
        raise NotFound("single sign-on is not configured")
    return oidc


def _secure(request: Request, settings: Settings) -> bool:
    if settings.public_url:
        return settings.public_url.startswith("https://")
    return request.url.scheme == "https"


def _set_session_cookies(
    response: Response, request: Request, settings: Settings, new: service.NewSession
) -> None:
    max_age = int(settings.session_max_age_hours * 3600)
    secure = _secure(request, settings)
    response.set_cookie(
        SESSION_COOKIE,
        new.token,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )
    # Readable by the SPA, which echoes it in X-CSRF-Token.
    response.set_cookie(
        CSRF_COOKIE,
        new.session.csrf_token,
        max_age=max_age,
        httponly=False,
        samesite="lax",
        secure=secure,
        path="/",
    )


def _me(user: User, via: str, csrf: str | None) -> Me:
    return Me(
        id=user.id,
        username=user.username,
        email=user.email,
        display_name=user.display_name,
        is_admin=user.is_admin,
        is_local=user.is_local,
        auth_method=via,
        csrf_token=csrf,
    )


@router.get("/api/auth/config", operation_id="auth_config")
def auth_config(request: Request, settings: SettingsDep) -> AuthConfig:
    return AuthConfig(oidc=request.app.state.oidc is not None, local=settings.local_accounts)


@router.get("/auth/login", operation_id="oidc_login", include_in_schema=True)
async def oidc_login(request: Request, settings: SettingsDep, next: str | None = None) -> Response:
    oidc = _oidc(request)
    request.session[_NEXT_KEY] = safe_next(next)
    if settings.public_url:
        redirect_uri = settings.public_url.rstrip("/") + "/auth/callback"
    else:
        redirect_uri = str(request.url_for("oidc_callback"))
    return await oidc.login_redirect(request, redirect_uri)


@router.get("/auth/callback", name="oidc_callback", operation_id="oidc_callback")
async def oidc_callback(request: Request, settings: SettingsDep, client: Client) -> Response:
    oidc = _oidc(request)
    enforce(
        request.app.state.rate_limiter,
        f"login-ip:{client.ip}",
        settings.login_rate_limit_per_minute,
    )
    try:
        claims = await oidc.complete_login(request)
    except OculabError as exc:
        detail = exc.detail

        def record() -> None:
            with request.app.state.sessionmaker() as db, db.begin():
                _record_failure(db, "oidc", client, detail)

        await run_in_threadpool(record)
        raise
    next_url = safe_next(request.session.pop(_NEXT_KEY, None))

    def finish() -> service.NewSession:
        with request.app.state.sessionmaker() as db, db.begin():
            user = service.upsert_oidc_user(db, settings, claims)
            return service.create_session(db, settings, user, method="oidc", client=client)

    new = await run_in_threadpool(finish)
    response = RedirectResponse(next_url, status_code=status.HTTP_303_SEE_OTHER)
    _set_session_cookies(response, request, settings, new)
    return response


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, operation_id="logout")
def logout(principal: CurrentPrincipal, db: DB, client: Client, response: Response) -> None:
    if principal.session is not None:
        service.end_session(db, principal.session, principal.user, client)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


@router.post("/api/auth/local/login", operation_id="local_login")
def local_login(
    body: LocalLogin,
    request: Request,
    response: Response,
    settings: SettingsDep,
    db: DB,
    client: Client,
) -> Me:
    if not settings.local_accounts:
        raise NotFound("local accounts are disabled; use single sign-on")
    limiter = request.app.state.rate_limiter
    enforce(limiter, f"login-ip:{client.ip}", settings.login_rate_limit_per_minute)
    enforce(limiter, f"login-user:{body.username.lower()}", settings.login_rate_limit_per_minute)
    try:
        user = service.authenticate_local(db, body.username, body.password, client)
    except OculabError as exc:
        # The failure itself is worth keeping even though the request fails.
        db.rollback()
        _record_failure(db, "local", client, exc.detail, username=body.username)
        db.commit()
        raise
    new = service.create_session(db, settings, user, method="local", client=client)
    _set_session_cookies(response, request, settings, new)
    return _me(user, "session", new.session.csrf_token)


@router.get("/api/me", operation_id="me")
def me(principal: CurrentPrincipal) -> Me:
    csrf = principal.session.csrf_token if principal.session else None
    return _me(principal.user, principal.via, csrf)


def _record_failure(
    db: Session,
    method: str,
    client: service.ClientInfo,
    reason: str,
    username: str | None = None,
) -> None:
    audit.record(
        db,
        "auth.login_failed",
        actor=None,
        actor_name=username,
        ip=client.ip,
        method=method,
        reason=reason,
    )
