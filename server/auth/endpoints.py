from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.audit import service as audit
from server.auth import service, unit
from server.auth.dependencies import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    Client,
    Principal,
    SettingsDep,
    resolve_principal,
)
from server.auth.oidc import OidcClient, safe_next
from server.auth.schemas import AuthConfig, LocalLogin, LogoutRedirect, Me
from server.kit.db import DB
from server.kit.errors import NotFound, OculabError
from server.kit.ratelimit import enforce
from server.kit.schemas import from_row
from server.models.auth import User
from server.settings import Settings

router = APIRouter(tags=["auth"])

_NEXT_KEY = "oculab_next"
# A plain HTML sign-out form cannot set headers; it sends the CSRF token as this field.
CSRF_FORM_FIELD = "csrf_token"
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


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
    return from_row(Me, user, auth_method=via, csrf_token=csrf)


@router.get("/api/auth/config", operation_id="auth_config")
def auth_config(request: Request, settings: SettingsDep) -> AuthConfig:
    oidc = request.app.state.oidc is not None
    return AuthConfig(
        oidc=oidc,
        local=settings.local_accounts,
        oidc_name=settings.oidc_name if oidc else None,
    )


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
        login = await oidc.complete_login(request)
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
            user = service.upsert_oidc_user(
                db, settings, login.claims, request.app.state.sync_memberships
            )
            return service.create_session(
                db, settings, user, method="oidc", client=client, id_token=login.id_token
            )

    new = await run_in_threadpool(finish)
    response = RedirectResponse(next_url, status_code=status.HTTP_303_SEE_OTHER)
    _set_session_cookies(response, request, settings, new)
    return response


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").partition(";")[0]
    return content_type.strip().lower() in _FORM_TYPES


async def _logout_csrf(request: Request) -> str:
    """The sign-out's CSRF token: the header (fetch callers) or a form field."""
    sent = request.headers.get(CSRF_HEADER)
    if sent:
        return sent
    if _is_form(request):
        form = await request.form(max_files=0, max_fields=20)
        value = form.get(CSRF_FORM_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def _logout_principal(
    request: Request, db: DB, settings: SettingsDep, csrf: Annotated[str, Depends(_logout_csrf)]
) -> Principal:
    return resolve_principal(request, db, settings, csrf)


def _post_logout_redirect_uri(request: Request, settings: Settings) -> str:
    if settings.oidc_post_logout_redirect_uri:
        return settings.oidc_post_logout_redirect_uri
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/"
    return str(request.base_url)


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="logout",
    responses={
        200: {
            "model": LogoutRedirect,
            "description": "SSO session: send the browser to `redirect` to end the "
            "identity provider's session too.",
        },
        303: {"description": "Form posts: redirect to the IdP's logout or to `/`."},
    },
)
def logout(
    request: Request,
    principal: Annotated[Principal, Depends(_logout_principal)],
    db: DB,
    client: Client,
    settings: SettingsDep,
) -> Response:
    """Ends the session; for SSO sessions also points the browser at the IdP's logout.

    Without that second step the next sign-in passes silently at the IdP, which is not
    what someone clicking "sign out" on a shared lab machine expects.
    """
    provider_logout: str | None = None
    session = principal.login_session
    if session is not None:
        id_token = session.id_token
        service.end_session(db, session, principal.user, client)
        oidc: OidcClient | None = request.app.state.oidc
        if oidc is not None and session.method == "oidc":
            provider_logout = oidc.end_session_url(
                id_token, _post_logout_redirect_uri(request, settings)
            )
    response: Response
    if _is_form(request):
        response = RedirectResponse(provider_logout or "/", status_code=status.HTTP_303_SEE_OTHER)
    elif provider_logout:
        # fetch() cannot follow a redirect to another origin; the SPA navigates itself.
        response = JSONResponse(LogoutRedirect(redirect=provider_logout).model_dump())
    else:
        response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


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
    username = body.username.lower()
    # Guessing is limited per (address, account) and, for spraying many accounts, per
    # address. The bound per account alone is much higher: at the tight one, anyone
    # could lock a user out by failing ten times from anywhere.
    enforce(limiter, f"login-ip:{client.ip}", settings.login_address_rate_limit_per_minute)
    enforce(limiter, f"login-ip-user:{client.ip}:{username}", settings.login_rate_limit_per_minute)
    enforce(limiter, f"login-user:{username}", settings.login_account_rate_limit_per_minute)
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


# In one worker-thread trip (server/auth/unit.py): every page asks for it as it opens.
@router.get("/api/me", operation_id="me", response_model=Me)
async def me(request: Request) -> Response:
    def answer(db: Session, principal: Principal) -> bytes:
        csrf = principal.login_session.csrf_token if principal.login_session else None
        return _me(principal.user, principal.via, csrf).model_dump_json().encode()

    return Response(await unit.in_one_trip(request, answer), media_type="application/json")


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
