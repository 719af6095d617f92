"""Model-scoped dependencies: a model follows its project's roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends

from server.auth.dependencies import CurrentPrincipal
from server.kit.db import DB
from server.kit.errors import NotFound
from server.kit.roles import Role
from server.kit.schemas import PathId
from server.models.registered_model import RegisteredModel
from server.projects.auth import ProjectAccess, authorize_project

_NOT_FOUND = "model not found"


@dataclass(frozen=True)
class ModelAccess:
    model: RegisteredModel
    access: ProjectAccess


def _gate(needed: Role) -> Any:
    def dependency(model_id: PathId, principal: CurrentPrincipal, db: DB) -> ModelAccess:
        model = db.get(RegisteredModel, model_id)
        if model is None:
            raise NotFound(_NOT_FOUND)
        access = authorize_project(db, principal, model.project_id, needed, not_found=_NOT_FOUND)
        return ModelAccess(model=model, access=access)

    return dependency


ModelViewer = Annotated[ModelAccess, Depends(_gate(Role.viewer))]
ModelOwner = Annotated[ModelAccess, Depends(_gate(Role.owner))]
