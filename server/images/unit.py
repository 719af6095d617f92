"""One request's whole unit of work in one worker-thread trip, for the image requests
on the hot paths: the annotation read and save, which an annotator sends for every
image, the editor's start and the thumbnails, which a gallery asks for by the hundred.
As server/auth/unit.py, plus the image gate (the ``ImageViewer``/``ImageAnnotator``
dependencies' rules); six trips to the thread pool become one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from server.auth.dependencies import Principal
from server.auth.unit import as_caller
from server.images.auth import ImageAccess, authorize_image
from server.kit.roles import Role

T = TypeVar("T")


def _run(
    request: Request, image_id: int, needed: Role, work: Callable[[Session, ImageAccess], T]
) -> T:
    def gated(db: Session, principal: Principal) -> T:
        return work(db, authorize_image(db, principal.user, image_id, needed))

    return as_caller(request, gated)


async def in_one_trip(
    request: Request, image_id: int, needed: Role, work: Callable[[Session, ImageAccess], T]
) -> T:
    """What ``work`` returns, run for a caller holding ``needed`` on the image."""
    return await run_in_threadpool(_run, request, image_id, needed, work)


async def run_for_image(
    request: Request, image_id: int, needed: Role, work: Callable[[Session, ImageAccess], BaseModel]
) -> Response:
    """``work``'s answer as JSON, run for a caller holding ``needed`` on the image."""

    def serialised(db: Session, access: ImageAccess) -> bytes:
        # Serialised here, off the event loop; the endpoint's response_model documents it.
        return work(db, access).model_dump_json().encode()

    content = await in_one_trip(request, image_id, needed, serialised)
    return Response(content=content, media_type="application/json")
