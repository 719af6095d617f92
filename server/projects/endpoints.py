from __future__ import annotations

from fastapi import APIRouter, Request, status

from server.auth.dependencies import Client, CurrentPrincipal
from server.kit.db import DB
from server.kit.errors import Forbidden
from server.kit.pagination import Cursor, Limit
from server.kit.roles import Role
from server.kit.schemas import Page, PathId
from server.projects import service
from server.projects.auth import ProjectOwner, ProjectViewer
from server.projects.schemas import (
    MemberPut,
    MemberRead,
    ProjectCreate,
    ProjectDetail,
    ProjectRead,
    ProjectUpdate,
)

router = APIRouter(prefix="/api/projects", tags=["projects"])


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_project")
def create_project(
    body: ProjectCreate, principal: CurrentPrincipal, db: DB, client: Client
) -> ProjectRead:
    return service.create(db, principal.user, body, client.ip)


@router.get("", operation_id="list_projects")
def list_projects(
    principal: CurrentPrincipal, db: DB, limit: Limit = 100, cursor: Cursor = None
) -> Page[ProjectDetail]:
    """The caller's projects (every project for admins), each with its image counts."""
    items, next_cursor = service.list_visible(db, principal.user, limit, cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{project_id}", operation_id="get_project")
def get_project(access: ProjectViewer, db: DB) -> ProjectDetail:
    return service.detail(db, access)


@router.patch("/{project_id}", operation_id="update_project")
def update_project(
    body: ProjectUpdate, access: ProjectOwner, db: DB, client: Client
) -> ProjectRead:
    return service.update(db, access, body, client.ip)


@router.delete(
    "/{project_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_project"
)
def delete_project(access: ProjectOwner, db: DB, client: Client, request: Request) -> None:
    service.delete(db, request.app.state.storage, access, client.ip)


@router.get("/{project_id}/members", operation_id="list_members")
def list_members(access: ProjectViewer, db: DB) -> list[MemberRead]:
    return service.list_members(db, access.project.id)


@router.put("/{project_id}/members/{user_id}", operation_id="put_member")
def put_member(
    user_id: PathId, body: MemberPut, access: ProjectOwner, db: DB, client: Client
) -> MemberRead:
    return service.put_member(db, access, user_id, body.role, client.ip)


@router.delete(
    "/{project_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="remove_member",
)
def remove_member(user_id: PathId, access: ProjectViewer, db: DB, client: Client) -> None:
    # Owners remove anyone; any member may leave.
    if access.role is not Role.owner and user_id != access.user.id:
        raise Forbidden("only owners can remove other members")
    service.remove_member(db, access, user_id, client.ip)
