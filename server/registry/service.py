from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.images.upload import ReceivedFile
from server.jobs import scheduler
from server.jobs import service as jobs
from server.jobs.context import JobFailed
from server.jobs.kinds import JobKind
from server.kit.db import utcnow
from server.kit.errors import Conflict, PayloadTooLarge, Unprocessable
from server.kit.pagination import decode_cursor, page
from server.kit.storage import Storage
from server.models.auth import User
from server.models.job import INTERACTIVE_PRIORITY, Job, JobState
from server.models.project import Project
from server.models.registered_model import ModelState, RegisteredModel
from server.projects.auth import ProjectAccess, member_project_ids
from server.registry.scan import check_weights
from server.registry.schemas import ModelRead
from server.settings import Settings


class ModelUnusable(Unprocessable):
    """A model named in a request body or a job's parameters that cannot run: not one
    of the project's, or not ready. A 422 at an endpoint; a job fails with its text
    (``ready_model_for_job``)."""


def check_ready(model: RegisteredModel) -> None:
    if model.state is not ModelState.ready:
        raise ModelUnusable(f"model {model.id} is not ready ({model.state.value})")


def ready_model(db: Session, project_id: int | None, model_id: int) -> RegisteredModel:
    """The project's model ``model_id``, ready to run; ``ModelUnusable`` otherwise (a
    missing model reads as a foreign one: the caller learns nothing of other projects)."""
    model = db.get(RegisteredModel, model_id)
    if model is None or model.project_id != project_id:
        raise ModelUnusable(f"model {model_id} is not a model of this project")
    check_ready(model)
    return model


def ready_model_for_job(db: Session, project_id: int | None, model_id: int) -> RegisteredModel:
    """``ready_model`` inside a job: the model may have been deleted or failed since the
    job was submitted, and then the job fails with the same text an endpoint gives."""
    try:
        return ready_model(db, project_id, model_id)
    except ModelUnusable as exc:
        raise JobFailed(exc.detail) from None


def read(db: Session, model: RegisteredModel) -> ModelRead:
    promoted = db.scalar(sa.select(Project.default_model_id).where(Project.id == model.project_id))
    return _as_read(model, promoted == model.id)


def _as_read(model: RegisteredModel, promoted: bool) -> ModelRead:
    return ModelRead.model_validate(model).model_copy(update={"promoted": promoted})


def upload(
    db: Session,
    settings: Settings,
    storage: Storage,
    kinds: dict[str, JobKind],
    access: ProjectAccess,
    received: ReceivedFile,
    name: str,
    ip: str | None,
) -> tuple[RegisteredModel, Job]:
    """Scans and stores weights, then lets a CPU worker inspect them."""
    try:
        if received.too_large:
            raise PayloadTooLarge(f"weights larger than {settings.max_model_bytes} bytes")
        if received.size == 0:
            raise Unprocessable("the weights file is empty")
        check_weights(received.path)
        storage.commit_file(received.path, storage.blob_path(received.sha256))
    finally:
        received.path.unlink(missing_ok=True)
    model = RegisteredModel(
        project_id=access.project.id,
        name=name,
        state=ModelState.pending,
        source="upload",
        filename=received.filename,
        sha256=received.sha256,
        size_bytes=received.size,
        class_names=[],
        hyperparams={},
        metrics={},
        created_by=access.user.id,
    )
    db.add(model)
    db.flush()
    job = jobs.submit(
        db,
        settings,
        kinds,
        kind="models.inspect",
        user=access.user,
        project_id=access.project.id,
        params={"model_id": model.id},
    )
    audit.record(
        db,
        "model.upload",
        actor=access.user,
        target_type="model",
        target_id=model.id,
        project_id=access.project.id,
        ip=ip,
        name=name,
        sha256=received.sha256,
    )
    return model, job


def list_models(
    db: Session, user: User, project_id: int | None, limit: int, cursor: str | None
) -> tuple[list[ModelRead], str | None]:
    before = decode_cursor(cursor)
    # Whether each is its project's promoted model, in the same query (not one per row).
    promoted = (
        sa.select(Project.default_model_id)
        .where(Project.id == RegisteredModel.project_id)
        .scalar_subquery()
        == RegisteredModel.id
    )
    stmt = (
        sa.select(RegisteredModel, sa.func.coalesce(promoted, False))
        .where(RegisteredModel.project_id.in_(member_project_ids(user)))
        .order_by(RegisteredModel.id.desc())
        .limit(limit + 1)
    )
    if project_id is not None:
        stmt = stmt.where(RegisteredModel.project_id == project_id)
    if before is not None:
        stmt = stmt.where(RegisteredModel.id < before)
    return page(
        list(db.execute(stmt).all()),
        limit,
        lambda row: _as_read(row[0], bool(row[1])),
    )


def promote(db: Session, model: RegisteredModel, access: ProjectAccess, ip: str | None) -> None:
    if model.state is not ModelState.ready:
        raise Conflict(f"only ready models can be promoted (this one is {model.state.value})")
    previous = access.project.default_model_id
    access.project.default_model_id = model.id
    audit.record(
        db,
        "model.promote",
        actor=access.user,
        target_type="model",
        target_id=model.id,
        project_id=model.project_id,
        ip=ip,
        previous=previous,
    )
    db.flush()


@dataclass(frozen=True)
class ClassMap:
    """A model's classes as a project sees them: the model's class index -> the project's
    class id, matched by name ignoring case (None for a class the project does not
    have: its boxes are dropped and reported), and the model's name for an index."""

    names: list[str]
    ids: dict[int, int | None]

    @classmethod
    def between(cls, model_classes: list[str], project_classes: list[str]) -> ClassMap:
        by_name = {name.strip().casefold(): index for index, name in enumerate(project_classes)}
        ids = {i: by_name.get(name.strip().casefold()) for i, name in enumerate(model_classes)}
        return cls(list(model_classes), ids)

    def project_id(self, index: int) -> int | None:
        return self.ids.get(index)

    def name(self, index: int) -> str:
        """The model's name; the index itself for one the model does not name."""
        return self.names[index] if 0 <= index < len(self.names) else str(index)


def predict_dir(storage: Storage) -> Path:
    return storage.root / "predict"


def stage_predict_files(storage: Storage, files: list[ReceivedFile]) -> list[dict[str, Any]]:
    """Moves validated uploads where the predict job (any worker) can read them."""
    target = predict_dir(storage) / uuid.uuid4().hex
    target.mkdir(parents=True, exist_ok=True)
    staged = []
    for index, received in enumerate(files):
        path = target / f"{index}"
        shutil.move(received.path, path)
        staged.append({"path": str(path.relative_to(storage.root)), "filename": received.filename})
    return staged


def discard_predict_files(storage: Storage, staged: list[dict[str, Any]]) -> None:
    if staged:
        shutil.rmtree((storage.root / staged[0]["path"]).parent, ignore_errors=True)


def weights_file(storage: Storage, sha256: str) -> Path:
    """The blob under a ``.pt`` name: ultralytics picks a loader by file extension."""
    path = storage.root / "weights" / f"{sha256}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = storage.temp_path(".pt")
        blob = storage.blob_file(sha256)
        try:
            os.link(blob, tmp)
        except OSError:
            shutil.copyfile(blob, tmp)
        os.replace(tmp, path)
    return path


def predict_pool(db: Session, settings: Settings) -> str | None:
    """The CPU pool while longer jobs hold every live slot of the GPU pool (a training on
    a one-GPU server would otherwise hold predictions off for hours); None (the kind's
    GPU pool) when a slot is free, is held by another prediction that ends in a moment,
    or no GPU worker is running at all (then nothing is busy, something is down)."""
    gpu = settings.gpu_pool
    if not settings.predict_cpu_fallback or not settings.is_gpu_pool(gpu):
        return None
    slots = scheduler.pool_capacity(scheduler.live_workers(db, settings, utcnow()), gpu)
    if slots == 0:
        return None
    held = db.scalar(
        sa.select(sa.func.count())
        .select_from(Job)
        .where(
            Job.pool == gpu,
            Job.priority < INTERACTIVE_PRIORITY,
            sa.or_(
                Job.state == JobState.running,
                sa.and_(Job.state == JobState.queued, Job.admitted_at.is_not(None)),
            ),
        )
    )
    return settings.cpu_pool if (held or 0) >= slots else None
