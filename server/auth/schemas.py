from __future__ import annotations

from typing import Annotated

from pydantic import Field

from server.kit.schemas import ReadSchema, Schema


class LocalLogin(Schema):
    username: Annotated[str, Field(min_length=1, max_length=255)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class Me(ReadSchema):
    id: int
    username: str
    email: str | None
    display_name: str | None
    is_admin: bool
    is_local: bool
    auth_method: str
    csrf_token: str | None = Field(
        default=None,
        description="Send as X-CSRF-Token on writes authenticated by the session cookie.",
    )


class AuthConfig(ReadSchema):
    oidc: bool
    local: bool
    oidc_name: str | None = Field(
        default=None,
        description="The identity provider's name for 'Sign in with <name>' (null without SSO).",
    )


class LogoutRedirect(ReadSchema):
    redirect: str = Field(
        description="The identity provider's end-session URL; navigate the browser there."
    )
