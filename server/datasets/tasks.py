"""The dataset job kinds: importing an uploaded zip and exporting a project."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from server.datasets import exporter, importer
from server.datasets.schemas import ExportRequest
from server.datasets.service import (
    EXPORT_KIND,
    IMPORT_KIND,
    import_zip_path,
    sweep_stale_imports,
)
from server.jobs.context import JobContext, JobFailed, JobLost, Release
from server.jobs.kinds import JobKind
from server.kit.db import database_unavailable
from server.models.job import Job, JobState

log = logging.getLogger(__name__)


def import_dataset(ctx: JobContext) -> dict[str, Any]:
    try:
        path = import_zip_path(ctx.storage, ctx.params.get("path"))
    except ValueError as exc:
        raise JobFailed(str(exc)) from None
    filename = str(ctx.params.get("filename") or path.name)
    try:
        with ctx.session() as db:
            sweep_stale_imports(db, ctx.storage)
    except Exception:
        # Leftover zips cost disk space only; they must not fail someone's import.
        log.warning("sweeping stale import zips failed", exc_info=True)
    if not path.is_file():
        raise JobFailed("the uploaded zip is gone from storage; upload it again")
    try:
        report = importer.run(ctx, path, filename)
    except Exception as exc:
        if _ends_the_job(ctx, exc):
            path.unlink(missing_ok=True)
        raise
    if _ends_the_job(ctx, None):
        path.unlink(missing_ok=True)
    return report.model_dump(mode="json")


def _ends_the_job(ctx: JobContext, exc: Exception | None) -> bool:
    """Whether this outcome is the import's last: then its zip can go.

    Not when the job runs again and needs the zip: released after a database outage
    (the attempt counts; it may also have been the last, then the next import's sweep
    deletes the zip), or lost to the reconciler while another attempt takes over. A
    stopping worker's WorkerStopping is no Exception and never reaches here: the job
    goes back to the queue with its zip. Success, a clean failure, a crash and a
    cancel end it, provided this attempt still owns the job to record that outcome; when
    that cannot be checked, the zip stays for the sweep."""
    if isinstance(exc, Release | JobLost) or (exc is not None and database_unavailable(exc)):
        return False
    if ctx.signals is not None and ctx.signals.lost.is_set():
        return False
    try:
        with ctx.sessionmaker() as db:
            owned = db.scalar(
                sa.select(Job.id).where(
                    Job.id == ctx.job_id,
                    Job.state == JobState.running,
                    Job.worker_id == ctx.worker_id,
                    Job.attempts == ctx.attempt,
                )
            )
    except Exception:
        log.warning("job %s: cannot check who owns it; keeping its zip", ctx.job_id)
        return False
    return owned is not None


def export_dataset(ctx: JobContext) -> dict[str, Any]:
    try:
        request = ExportRequest.model_validate(ctx.params)
    except ValidationError as exc:
        raise JobFailed(f"invalid export parameters: {exc}") from None
    return exporter.run(ctx, request).model_dump(mode="json")


JOB_KINDS = [
    JobKind(IMPORT_KIND, import_dataset, runs_on="cpu"),
    JobKind(EXPORT_KIND, export_dataset, runs_on="cpu"),
]
