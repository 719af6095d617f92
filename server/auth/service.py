"""Users, sessions and local login. Services flush; the request boundary commits."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.auth.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password
from server.kit.db import utcnow
from server.kit.errors import Conflict, Forbidden, Unauthorized, Unprocessable
from server.kit.roles import Role
from server.kit.secrets import new_token, token_hash
from server.models.auth import LOCAL_ISSUER, ApiToken, LoginSession, User
from server.settings import Settings

log = logging.getLogger(__name__)

# last_seen_at is refreshed at most this often, so reads do not all turn into writes.
_TOUCH_INTERVAL = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class ClientInfo:
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class NewSession:
    token: str  # goes into the cookie, never stored
    session: LoginSession


# --- users -------------------------------------------------------------------------


# Project roles from IdP groups are the projects domain's (projects/idp.py); a login
# calls it through this one signature and auth imports nothing of projects.
MembershipSync = Callable[[Session, Settings, User], dict[str, Role]]


def get_local_user(db: Session, username: str) -> User | None:
    return db.scalar(sa.select(User).where(User.issuer == LOCAL_ISSUER, User.subject == username))


def create_local_user(
    db: Session,
    username: str,
    password: str,
    *,
    is_admin: bool,
    actor: User | None = None,
    client: ClientInfo | None = None,
) -> User:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if get_local_user(db, username) is not None:
        raise Conflict(f"a local account named {username!r} already exists")
    user = User(
        issuer=LOCAL_ISSUER,
        subject=username,
        username=username,
        password_hash=hash_password(password),
        is_admin=is_admin,
        is_active=True,
        groups=[],
    )
    db.add(user)
    db.flush()
    audit.record(
        db,
        "user.create",
        actor=actor,
        target_type="user",
        target_id=user.id,
        ip=client.ip if client else None,
        username=username,
        is_admin=is_admin,
    )
    return user


def set_password(db: Session, user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = hash_password(password)
    revoke_user_sessions(db, user)


def authenticate_local(db: Session, username: str, password: str, client: ClientInfo) -> User:
    user = get_local_user(db, username)
    # Argon2 runs whether or not the user exists (against a dummy hash when not), so
    # the response time does not tell which usernames are real.
    valid = verify_password(user.password_hash if user else None, password)
    if user is None or not valid:
        raise Unauthorized("invalid username or password")
    if not user.is_active:
        raise Forbidden("this account is disabled")
    return user


# --- sessions ----------------------------------------------------------------------


def create_session(
    db: Session,
    settings: Settings,
    user: User,
    *,
    method: str,
    client: ClientInfo,
    id_token: str | None = None,
) -> NewSession:
    token = new_token()
    now = utcnow()
    session = LoginSession(
        token_hash=token_hash(token),
        user_id=user.id,
        csrf_token=new_token(),
        method=method,
        created_at=now,
        last_seen_at=now,
        expires_at=now + dt.timedelta(hours=settings.session_max_age_hours),
        ip=client.ip,
        user_agent=(client.user_agent or "")[:500] or None,
        id_token=id_token,
    )
    db.add(session)
    user.last_login_at = now
    db.flush()
    audit.record(
        db,
        "auth.login",
        actor=user,
        target_type="session",
        target_id=session.id,
        ip=client.ip,
        method=method,
    )
    return NewSession(token=token, session=session)


# One lookup for both credentials a caller can present: the session cookie and a
# personal API token. Both store only the secret's hash, end by revocation or expiry,
# belong to a user who may have been disabled, and record their last use sparingly.
_Credential = TypeVar("_Credential", LoginSession, ApiToken)


def _find_credential(
    db: Session, table: type[_Credential], secret: str, what: str
) -> tuple[_Credential, User]:
    row = db.execute(
        sa.select(table, User)
        .join(User, User.id == table.user_id)
        .where(table.token_hash == token_hash(secret))
    ).first()
    if row is None:
        raise Unauthorized(what)
    credential, user = row
    return credential, user


def _admit(user: User, last_used: dt.datetime | None, now: dt.datetime) -> bool:
    """Refuses a disabled account; says whether the last use is due for a refresh."""
    if not user.is_active:
        raise Unauthorized("this account is disabled")
    return last_used is None or now - last_used > _TOUCH_INTERVAL


def resolve_session(db: Session, settings: Settings, token: str) -> tuple[LoginSession, User]:
    session, user = _find_credential(db, LoginSession, token, "session not found; log in again")
    now = utcnow()
    idle_limit = dt.timedelta(hours=settings.session_idle_timeout_hours)
    if session.revoked_at is not None:
        raise Unauthorized("session ended; log in again")
    if session.expires_at <= now or session.last_seen_at + idle_limit <= now:
        raise Unauthorized("session expired; log in again")
    if _admit(user, session.last_seen_at, now):
        session.last_seen_at = now
    return session, user


def authenticate_token(db: Session, secret: str) -> User:
    """The user behind a personal API token (``Authorization: Bearer oc_...``)."""
    token, user = _find_credential(db, ApiToken, secret, "invalid API token")
    now = utcnow()
    if token.revoked_at is not None:
        raise Unauthorized("API token has been revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthorized("API token has expired")
    if _admit(user, token.last_used_at, now):
        token.last_used_at = now
    return user


def end_session(db: Session, session: LoginSession, user: User, client: ClientInfo) -> None:
    session.revoked_at = utcnow()
    session.id_token = None  # only ever needed for this sign-out
    audit.record(
        db, "auth.logout", actor=user, target_type="session", target_id=session.id, ip=client.ip
    )


def revoke_user_sessions(db: Session, user: User) -> None:
    db.execute(
        sa.update(LoginSession)
        .where(LoginSession.user_id == user.id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


# --- OIDC users --------------------------------------------------------------------


def _claim_str(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value[:255] if isinstance(value, str) and value else None


def _groups(claims: dict[str, Any], claim: str) -> list[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [g for g in value if isinstance(g, str)][:500]
    return []


def find_oidc_user(db: Session, claims: dict[str, Any]) -> User:
    """The user a validated bearer access token speaks for; nothing about them changes.

    Access tokens carry no name, e-mail or groups (RFC 9068 does not require them), so
    they cannot be a source of truth for rights: only a browser login (ID token plus
    userinfo) updates those. An identity that never signed in has no account to act as.
    """
    issuer = claims.get("iss")
    subject = claims.get("sub")
    if not isinstance(issuer, str) or not isinstance(subject, str) or not subject:
        raise Unauthorized("invalid bearer token (iss and sub must be strings)")
    user = db.scalar(sa.select(User).where(User.issuer == issuer, User.subject == subject))
    if user is None:
        raise Unauthorized(
            "no Oculab account for this identity yet: sign in once in the browser with "
            "single sign-on before calling the API with identity-provider tokens"
        )
    if not user.is_active:
        raise Unauthorized("this account is disabled")
    return user


def upsert_oidc_user(
    db: Session, settings: Settings, claims: dict[str, Any], sync_memberships: MembershipSync
) -> User:
    """Find or create the user for a browser login's claims (ID token merged with
    userinfo), identified by (iss, sub), and bring their groups and roles up to date
    (``sync_memberships``: the projects domain's rule, handed in by the app)."""
    issuer = claims.get("iss")
    subject = claims.get("sub")
    if not isinstance(issuer, str) or not isinstance(subject, str) or not subject:
        raise Unauthorized("identity token lacks iss or sub")
    user = db.scalar(sa.select(User).where(User.issuer == issuer, User.subject == subject))
    groups = _groups(claims, settings.oidc_groups_claim)
    username = (
        _claim_str(claims, settings.oidc_username_claim)
        or _claim_str(claims, "preferred_username")
        or _claim_str(claims, "email")
        or subject[:255]
    )
    if user is None:
        user = User(
            issuer=issuer[:500],
            subject=subject[:255],
            username=username,
            is_active=True,
            is_admin=False,
            groups=[],
        )
        db.add(user)
    user.username = username
    user.email = _claim_str(claims, "email")
    user.display_name = _claim_str(claims, "name")
    user.groups = groups
    if settings.oidc_groups_claim not in claims and (
        settings.oidc_admin_groups or settings.oidc_project_roles
    ):
        log.warning(
            "OIDC login of %s: neither the ID token nor userinfo has a %r claim, so no "
            "group maps to admin or project roles; check the IdP's groups mapper",
            username,
            settings.oidc_groups_claim,
        )
    if settings.oidc_admin_groups:
        # The IdP decides who is an admin once admin groups are configured.
        user.is_admin = bool(set(groups) & set(settings.oidc_admin_groups))
    db.flush()
    if not user.is_active:
        raise Forbidden("this account is disabled")
    roles = sync_memberships(db, settings, user)
    log.info(
        "OIDC login of %s (sub=%s): groups %s -> admin=%s, project roles %s",
        username,
        subject,
        groups,
        user.is_admin,
        {name: role.value for name, role in roles.items()},
    )
    return user
