"""Seeds the demo project on the first standalone start, through the normal services."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.annotations import service as annotation_service
from server.annotations.schemas import AnnotationsPut, Box
from server.auth.dependencies import Principal
from server.auth.models import User
from server.demo import shapes
from server.images import service as images
from server.images.models import Image
from server.images.upload import ReceivedFile
from server.kit.storage import HashingWriter, Storage
from server.projects import service as projects
from server.projects.models import Project
from server.projects.schemas import ProjectCreate
from server.settings import Settings

DEMO_NAME = "Demo: shapes"


def seed_demo_project(
    db: Session, storage: Storage, settings: Settings, owner: User, n_images: int = 24
) -> Project:
    created = projects.create(
        db,
        Principal(user=owner, via="session"),
        ProjectCreate(
            name=DEMO_NAME,
            description="Synthetic squares, circles and triangles with reviewed boxes.",
            classes=shapes.CLASSES,
        ),
        ip=None,
    )
    project = db.get(Project, created.id)
    assert project is not None
    received: list[ReceivedFile] = []
    truth: dict[str, list[shapes.ShapeBox]] = {}
    for seed in range(n_images):
        data, boxes = shapes.render(seed)
        writer = HashingWriter(storage.temp_path(".upload"), settings.max_upload_bytes)
        writer.write(data)
        writer.close()
        received.append(
            ReceivedFile(
                "files",
                f"shape_{seed:04d}.png",
                writer.path,
                writer.size,
                writer.sha256,
                writer.too_large,
            )
        )
        truth[writer.sha256] = boxes
    images.ingest(db, storage, settings, project, owner, received, split=None)
    for image in db.scalars(sa.select(Image).where(Image.project_id == project.id)):
        body = AnnotationsPut(
            base_revision=image.revision,
            boxes=[
                Box(class_id=b.class_id, x=b.x, y=b.y, w=b.w, h=b.h) for b in truth[image.sha256]
            ],
        )
        annotation_service.save(db, settings, project, image, owner, body)
    return project
