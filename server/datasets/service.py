"""Starting imports and exports (the request side), and tidying import zips that no
job will ever read."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from server.audit import service as audit
from server.datasets.schemas import ExportRequest
from server.datasets.zipcheck import check_archive
from server.images.upload import ReceivedForm
from server.jobs import service as jobs
from server.jobs.kinds import JobKind
from server.jobs.schemas import JobRead
from server.kit.errors import PayloadTooLarge, Unprocessable
from server.kit.storage import Storage
from server.models.job import Job, JobState
from server.projects.auth import ProjectAccess
from server.settings import Settings

IMPORT_KIND = "datasets.import"
EXPORT_KIND = "datasets.export"
IMPORTS_DIR = "imports"
_IMPORT_NAME = re.compile(r"^imports/[0-9a-f]{32}\.zip$")
# An upload moved into imports/ but whose request has not committed yet is younger
# than this; older zips that no unfinished job names are leftovers.
STALE_IMPORT_SECONDS = 3600


def import_zip_path(storage: Storage, relative: object) -> Path:
    """The zip a job's params name, refusing anything but a name we generated."""
    if not isinstance(relative, str) or not _IMPORT_NAME.match(relative):
        raise ValueError(f"not an import zip path: {relative!r}")
    return storage.root / relative


def _delete_on_rollback(db: Session, path: Path) -> None:
    """The zip must not outlive a job row that never committed."""

    def discard(_session: Session) -> None:
        path.unlink(missing_ok=True)

    event.listen(db, "after_rollback", discard, once=True)


def start_import(
    db: Session,
    storage: Storage,
    settings: Settings,
    kinds: dict[str, JobKind],
    access: ProjectAccess,
    form: ReceivedForm,
    ip: str | None,
) -> JobRead:
    """Checks the received zip's directory and queues the import; on any refusal the
    upload is deleted and no job exists."""
    try:
        if not form.files:
            raise Unprocessable("send the dataset as one zip file (multipart/form-data)")
        upload = form.files[0]
        if upload.too_large:
            raise PayloadTooLarge(
                f"the zip is larger than the limit of {settings.max_import_bytes} bytes"
            )
        summary = check_archive(upload.path, settings)
        relative = f"{IMPORTS_DIR}/{uuid.uuid4().hex}.zip"
        target = storage.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload.path, target)
    finally:
        form.discard()
    _delete_on_rollback(db, target)
    user = access.user
    try:
        job = jobs.submit(
            db,
            settings,
            kinds,
            kind=IMPORT_KIND,
            user=user,
            project_id=access.project.id,
            params={"path": relative, "filename": upload.filename},
        )
    except BaseException:
        # Refused before any SQL ran, there may be no transaction to roll back.
        target.unlink(missing_ok=True)
        raise
    audit.record(
        db,
        "dataset.import",
        actor=user,
        target_type="job",
        target_id=job.id,
        project_id=access.project.id,
        ip=ip,
        filename=upload.filename,
        entries=summary.entries,
        unpacked_bytes=summary.unpacked_bytes,
    )
    return jobs.read(db, job)


def start_export(
    db: Session,
    settings: Settings,
    kinds: dict[str, JobKind],
    access: ProjectAccess,
    body: ExportRequest,
    ip: str | None,
) -> JobRead:
    user = access.user
    job = jobs.submit(
        db,
        settings,
        kinds,
        kind=EXPORT_KIND,
        user=user,
        project_id=access.project.id,
        params=body.model_dump(mode="json"),
    )
    audit.record(
        db,
        "dataset.export",
        actor=user,
        target_type="job",
        target_id=job.id,
        project_id=access.project.id,
        ip=ip,
        format=body.format,
    )
    return jobs.read(db, job)


def sweep_stale_imports(db: Session, storage: Storage) -> int:
    """Deletes import zips no job will read again: those of jobs that ended where their
    import could not delete them (canceled before they started, failed for good by the
    reconciler after a lost worker or a database outage), at once; and, after an hour,
    any that no queued or running job names. Returns how many were deleted."""
    folder = storage.root / IMPORTS_DIR
    if not folder.is_dir():
        return 0
    cutoff = time.time() - STALE_IMPORT_SECONDS
    present: dict[str, tuple[Path, bool]] = {}  # relative name -> (path, old enough)
    for path in folder.glob("*.zip"):
        try:
            old = path.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        present[f"{IMPORTS_DIR}/{path.name}"] = (path, old)
    if not present:
        return 0
    named = Job.params["path"].as_string()
    states: dict[str, set[JobState]] = {}
    for relative, state in db.execute(
        sa.select(named, Job.state).where(Job.kind == IMPORT_KIND, named.in_(list(present)))
    ).all():
        states.setdefault(relative, set()).add(state)
    deleted = 0
    for relative, (path, old) in present.items():
        jobs_of_zip = states.get(relative, set())
        live = jobs_of_zip & {JobState.queued, JobState.running}
        # A zip no job names yet may belong to a request still committing its job.
        if not live and (jobs_of_zip or old):
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted
