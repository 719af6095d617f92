from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from server.admin import service
from server.admin.schemas import AuditRead, UserAdminRead, UserCreate, UserUpdate
from server.auth import service as auth
from server.auth.dependencies import AdminPrincipal, Client, SettingsDep
from server.kit.db import DB, MAX_ID
from server.kit.errors import Conflict
from server.kit.pagination import Cursor, Limit
from server.kit.schemas import Page, PathId

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/users", operation_id="admin_list_users")
def list_users(
    principal: AdminPrincipal, db: DB, limit: Limit = 100, cursor: Cursor = None
) -> Page[UserAdminRead]:
    items, next_cursor = service.list_users(db, limit, cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.post("/users", status_code=status.HTTP_201_CREATED, operation_id="admin_create_user")
def create_user(
    body: UserCreate, principal: AdminPrincipal, db: DB, settings: SettingsDep, client: Client
) -> UserAdminRead:
    if not settings.local_accounts:
        raise Conflict("local accounts are disabled (OCULAB_LOCAL_ACCOUNTS=false)")
    user = auth.create_local_user(
        db,
        body.username,
        body.password,
        is_admin=body.is_admin,
        actor=principal.user,
        client=client,
    )
    return UserAdminRead.model_validate(user)


@router.patch("/users/{user_id}", operation_id="admin_update_user")
def update_user(
    user_id: PathId, body: UserUpdate, principal: AdminPrincipal, db: DB, client: Client
) -> UserAdminRead:
    return service.update_user(db, principal.user, user_id, body, client.ip)


@router.get("/audit", operation_id="admin_audit")
def audit_log(
    principal: AdminPrincipal,
    db: DB,
    limit: Limit = 100,
    cursor: Cursor = None,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Page[AuditRead]:
    items, next_cursor = service.list_audit(db, limit, cursor, action, project_id)
    return Page(items=items, next_cursor=next_cursor)
