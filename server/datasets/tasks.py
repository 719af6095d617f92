"""The dataset job kinds: importing an uploaded zip and exporting a project."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from server.datasets import exporter, importer
from server.datasets.schemas import ExportRequest
from server.datasets.service import (
    EXPORT_KIND,
    IMPORT_KIND,
    import_zip_path,
    sweep_stale_imports,
)
from server.jobs.kinds import JobKind
from server.jobs.runtime import HandBack, JobContext, JobFailed

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
    except HandBack:
        # The job goes back to the queue and runs again: it still needs its zip.
        raise
    except Exception:
        path.unlink(missing_ok=True)
        raise
    path.unlink(missing_ok=True)
    return report.model_dump(mode="json")


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
