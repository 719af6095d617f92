from __future__ import annotations

from fastapi import APIRouter, Request, status

from server.auth.dependencies import Client, CurrentPrincipal, SettingsDep
from server.kit.db import DB
from server.kit.ratelimit import enforce
from server.kit.schemas import PathId
from server.tokens import service
from server.tokens.schemas import TokenCreate, TokenCreated, TokenRead

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_token")
def create_token(
    body: TokenCreate,
    principal: CurrentPrincipal,
    db: DB,
    client: Client,
    settings: SettingsDep,
    request: Request,
) -> TokenCreated:
    enforce(
        request.app.state.rate_limiter,
        f"token:{principal.user.id}",
        settings.token_rate_limit_per_minute,
    )
    token, secret = service.create(db, principal.user, body.name, body.expires_in_days, client.ip)
    return TokenCreated.model_validate(
        {**TokenRead.model_validate(token).model_dump(), "token": secret}
    )


@router.get("", operation_id="list_tokens")
def list_tokens(principal: CurrentPrincipal, db: DB) -> list[TokenRead]:
    return [TokenRead.model_validate(t) for t in service.list_for(db, principal.user)]


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="revoke_token")
def revoke_token(token_id: PathId, principal: CurrentPrincipal, db: DB, client: Client) -> None:
    service.revoke(db, principal.user, token_id, client.ip)
