"""Training runs before they start: what one would learn from, and submitting one."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.jobs import scheduler
from server.jobs import service as jobs
from server.jobs.kinds import JobKind
from server.kit.db import utcnow
from server.kit.errors import Unprocessable
from server.models.annotation import Annotation
from server.models.auth import User
from server.models.image import Image
from server.models.job import Job
from server.models.project import Project
from server.registry.service import ready_model
from server.settings import Settings
from server.training import snapshot
from server.training.schemas import (
    ARCHITECTURES,
    ClassCount,
    PoolChoice,
    TrainingData,
    TrainRequest,
    base_model_id,
)


def submit(
    db: Session,
    settings: Settings,
    kinds: dict[str, JobKind],
    project: Project,
    user: User,
    body: TrainRequest,
) -> Job:
    """Queues a training run; a base model must be the project's and ready (the job
    checks again when it starts)."""
    if not project.classes:
        raise Unprocessable("the project has no classes to train")
    base = str(body.base)  # one shape since validation: an architecture or "model:<id>"
    model_id = base_model_id(base)
    if model_id is not None:
        ready_model(db, project.id, model_id)
    return jobs.submit(
        db,
        settings,
        kinds,
        kind="training.train",
        user=user,
        project_id=project.id,
        params=body.model_dump(exclude={"pool"}),
        pool=body.pool,
    )


def training_data(
    db: Session,
    settings: Settings,
    project: Project,
    *,
    val_fraction: float,
    seed: int,
    only_reviewed: bool,
) -> TrainingData:
    # The job's own selection and split (snapshot.select), so the preview cannot drift
    # from what the run learns from; then one aggregate for the boxes it would write.
    selection = snapshot.select(
        db, project.id, val_fraction=val_fraction, seed=seed, only_reviewed=only_reviewed
    )
    per_class = {
        class_id: (boxes, images)
        for class_id, boxes, images in db.execute(
            sa.select(
                Annotation.class_id,
                sa.func.count(),
                sa.func.count(sa.distinct(Annotation.image_id)),
            )
            .join(Image, Image.id == Annotation.image_id)
            .where(snapshot.box_filter(project.id, only_reviewed))
            .group_by(Annotation.class_id)
        ).all()
    }
    classes = list(project.classes)
    counts = []
    for i, name in enumerate(classes):
        n_boxes, n_images = per_class.get(i, (0, 0))
        counts.append(ClassCount(class_id=i, name=name, boxes=n_boxes, images=n_images))
    boxes = sum(n for n, _ in per_class.values())
    problem = (
        "the project has no classes to train"
        if not classes
        else snapshot.problem(len(selection.images), only_reviewed)
    )
    workers = scheduler.live_workers(db, settings, utcnow())
    return TrainingData(
        only_reviewed=only_reviewed,
        val_fraction=val_fraction,
        seed=seed,
        images=len(selection.images),
        train_images=selection.train_images,
        val_images=selection.val_images,
        boxes=boxes,
        classes=counts,
        problem=problem,
        architectures=list(ARCHITECTURES),
        default_pool=settings.gpu_pool,
        pools=[
            PoolChoice(
                name=pool,
                gpu=settings.is_gpu_pool(pool),
                slots=scheduler.pool_capacity(workers, pool),
            )
            for pool in settings.pools
        ],
    )
