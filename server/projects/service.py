from __future__ import annotations

from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.blobs import service as blobs
from server.kit.errors import Conflict, NotFound, Unprocessable
from server.kit.pagination import decode_cursor, page
from server.kit.roles import Role
from server.kit.schemas import from_row
from server.kit.storage import Storage
from server.models.annotation import Annotation
from server.models.auth import User
from server.models.image import Image, ImageStatus, Split
from server.models.project import Membership, Project
from server.projects.auth import ProjectAccess, member_project_ids
from server.projects.schemas import (
    ImageCounts,
    MemberRead,
    ProjectCreate,
    ProjectDetail,
    ProjectRead,
    ProjectUpdate,
    SplitCounts,
    class_colors,
)

P = TypeVar("P", bound=ProjectRead)


def read(project: Project, role: Role) -> ProjectRead:
    return _read(ProjectRead, project, role=role)


def _read(schema: type[P], project: Project, **extra: object) -> P:
    # Classes without a colour of their own get the palette's.
    colors = class_colors(project.classes, project.class_colors or [])
    return from_row(schema, project, class_colors=colors, **extra)


def create(db: Session, user: User, body: ProjectCreate, ip: str | None) -> ProjectRead:
    project = Project(
        name=body.name.strip(),
        description=body.description,
        classes=body.classes,
        class_colors=body.class_colors,
        created_by=user.id,
    )
    db.add(project)
    db.flush()
    db.add(Membership(project_id=project.id, user_id=user.id, role=Role.owner))
    audit.record(
        db,
        "project.create",
        actor=user,
        target_type="project",
        target_id=project.id,
        project_id=project.id,
        ip=ip,
        name=project.name,
    )
    db.flush()
    return read(project, Role.owner)


def list_visible(
    db: Session, user: User, limit: int, cursor: str | None
) -> tuple[list[ProjectDetail], str | None]:
    after = decode_cursor(cursor)
    stmt = (
        sa.select(Project, Membership.role)
        .outerjoin(
            Membership,
            sa.and_(Membership.project_id == Project.id, Membership.user_id == user.id),
        )
        .where(Project.id.in_(member_project_ids(user)))
        .order_by(Project.id)
        .limit(limit + 1)
    )
    if after is not None:
        stmt = stmt.where(Project.id > after)
    rows = db.execute(stmt).all()
    counts = _image_counts(db, [row[0].id for row in rows[:limit]])
    return page(
        rows,
        limit,
        lambda row: _read(
            ProjectDetail,
            row[0],
            role=Role.owner if user.is_admin else row[1],
            **counts.get(row[0].id, {}),
        ),
    )


def _image_counts(db: Session, project_ids: list[int]) -> dict[int, dict[str, object]]:
    """Images per status of each project, overall (``images``) and per split
    (``images_by_split``), in one grouped query."""
    counts: dict[int, tuple[ImageCounts, SplitCounts]] = {}
    if project_ids:
        for project_id, status, split, n in db.execute(
            sa.select(Image.project_id, Image.status, Image.split, sa.func.count())
            .where(Image.project_id.in_(project_ids))
            .group_by(Image.project_id, Image.status, Image.split)
        ).all():
            total, by_split = counts.setdefault(project_id, (ImageCounts(), SplitCounts()))
            key = ImageStatus(status).value
            for item in (total, getattr(by_split, Split(split).value if split else "none")):
                setattr(item, key, getattr(item, key) + n)
                item.total += n
    return {
        project_id: {"images": total, "images_by_split": by_split}
        for project_id, (total, by_split) in counts.items()
    }


def detail(db: Session, access: ProjectAccess) -> ProjectDetail:
    counts = _image_counts(db, [access.project.id]).get(access.project.id, {})
    return _read(ProjectDetail, access.project, role=access.role, **counts)


def update(db: Session, access: ProjectAccess, body: ProjectUpdate, ip: str | None) -> ProjectRead:
    project = access.project
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "classes" in changes:
        _check_classes_still_cover_boxes(db, project.id, len(changes["classes"]))
    if "name" in changes:
        changes["name"] = changes["name"].strip()
    if len(changes.get("class_colors", ())) > len(changes.get("classes", project.classes)):
        raise Unprocessable("class_colors has more entries than classes")
    for field, value in changes.items():
        setattr(project, field, value)
    db.flush()
    if changes:
        audit.record(
            db,
            "project.update",
            actor=access.user,
            target_type="project",
            target_id=project.id,
            project_id=project.id,
            ip=ip,
            fields=sorted(changes),
        )
    return read(project, access.role)


def _check_classes_still_cover_boxes(db: Session, project_id: int, n_classes: int) -> None:
    highest = db.scalar(
        sa.select(sa.func.max(Annotation.class_id))
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.project_id == project_id)
    )
    if highest is not None and highest >= n_classes:
        raise Conflict(
            f"class id {highest} is used by existing boxes; rename or append classes "
            "instead of removing them"
        )


def delete(db: Session, storage: Storage, access: ProjectAccess, ip: str | None) -> None:
    project = access.project
    shas = list(db.scalars(sa.select(Image.sha256).where(Image.project_id == project.id)))
    db.execute(
        sa.delete(Annotation).where(
            Annotation.image_id.in_(sa.select(Image.id).where(Image.project_id == project.id))
        )
    )
    db.execute(sa.delete(Image).where(Image.project_id == project.id))
    db.execute(sa.delete(Membership).where(Membership.project_id == project.id))
    db.delete(project)
    audit.record(
        db,
        "project.delete",
        actor=access.user,
        target_type="project",
        target_id=project.id,
        project_id=project.id,
        ip=ip,
        name=project.name,
        images=len(shas),
    )
    db.flush()
    blobs.schedule_gc(db, storage, shas)


# --- members -----------------------------------------------------------------------


def list_members(db: Session, project_id: int) -> list[MemberRead]:
    rows = db.execute(
        sa.select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.project_id == project_id)
        .order_by(User.username, User.id)
    ).all()
    return [_member(m, u) for m, u in rows]


def _member(membership: Membership, user: User) -> MemberRead:
    return from_row(
        MemberRead, user, user_id=user.id, role=membership.role, source=membership.source
    )


def _owner_count(db: Session, project_id: int) -> int:
    return (
        db.scalar(
            sa.select(sa.func.count())
            .select_from(Membership)
            .where(Membership.project_id == project_id, Membership.role == Role.owner)
        )
        or 0
    )


def put_member(
    db: Session, access: ProjectAccess, user_id: int, role: Role, ip: str | None
) -> MemberRead:
    project_id = access.project.id
    user = db.get(User, user_id)
    if user is None or not user.is_active:
        raise NotFound("user not found")
    membership = db.get(Membership, (project_id, user_id))
    previous = membership.role if membership else None
    if membership is None:
        membership = Membership(project_id=project_id, user_id=user_id, role=role, source="manual")
        db.add(membership)
    else:
        if previous is Role.owner and role is not Role.owner and _owner_count(db, project_id) <= 1:
            raise Conflict("a project needs at least one owner")
        membership.role = role
        membership.source = "manual"
    db.flush()
    if previous != role:
        audit.record(
            db,
            "membership.set",
            actor=access.user,
            target_type="user",
            target_id=user_id,
            project_id=project_id,
            ip=ip,
            role=role.value,
            previous=previous.value if previous else None,
        )
    return _member(membership, user)


def remove_member(db: Session, access: ProjectAccess, user_id: int, ip: str | None) -> None:
    project_id = access.project.id
    membership = db.get(Membership, (project_id, user_id))
    if membership is None:
        raise NotFound("member not found")
    if membership.role is Role.owner and _owner_count(db, project_id) <= 1:
        raise Conflict("a project needs at least one owner")
    db.delete(membership)
    audit.record(
        db,
        "membership.remove",
        actor=access.user,
        target_type="user",
        target_id=user_id,
        project_id=project_id,
        ip=ip,
        role=membership.role.value,
    )
    db.flush()
