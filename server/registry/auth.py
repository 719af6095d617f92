"""Model-scoped dependencies: a model follows its project's roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy.orm import Session

from server.kit.errors import NotFound
from server.kit.roles import Role
from server.models.auth import User
from server.models.registered_model import RegisteredModel
from server.projects.auth import ProjectAccess, authorize_project, gate

_NOT_FOUND = "model not found"


@dataclass(frozen=True)
class ModelAccess:
    model: RegisteredModel
    access: ProjectAccess


def authorize_model(db: Session, user: User, model_id: int, needed: Role) -> ModelAccess:
    model = db.get(RegisteredModel, model_id)
    if model is None:
        raise NotFound(_NOT_FOUND)
    access = authorize_project(db, user, model.project_id, needed, not_found=_NOT_FOUND)
    return ModelAccess(model=model, access=access)


def _model(needed: Role) -> Any:
    return gate("model_id", lambda db, who, id_: authorize_model(db, who, id_, needed))


ModelViewer = Annotated[ModelAccess, Depends(_model(Role.viewer))]
ModelOwner = Annotated[ModelAccess, Depends(_model(Role.owner))]
