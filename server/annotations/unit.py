"""One request's whole unit of work in one worker thread, for the editor's hot path.

FastAPI runs each sync dependency in its own trip to the thread pool: the session
(in and out), the caller, the image gate and the endpoint make six per request, and
under load each trip costs more CPU than the queries it wraps (GIL hand-overs, thread
wake-ups). The annotation read and save, which an annotator sends for every image,
instead run everything here in one trip, with the same steps and rules as the
``DB``, ``CurrentPrincipal`` and ``ImageViewer``/``ImageAnnotator`` dependencies.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from server.auth.dependencies import CSRF_HEADER, resolve_principal
from server.images.auth import ImageAccess, authorize_image
from server.kit.roles import Role

Work = Callable[[Session, ImageAccess], BaseModel]


def _run(request: Request, image_id: int, needed: Role, work: Work) -> bytes:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as db:
        try:
            csrf_sent = request.headers.get(CSRF_HEADER, "")
            principal = resolve_principal(request, db, request.app.state.settings, csrf_sent)
            answer = work(db, authorize_image(db, principal.user, image_id, needed))
            # As ``kit.db.get_db``: committed before the response is sent.
            db.commit()
        except BaseException:
            db.rollback()
            raise
    # Serialised here, off the event loop; the endpoint's response_model documents it.
    return answer.model_dump_json().encode()


async def run_for_image(request: Request, image_id: int, needed: Role, work: Work) -> Response:
    """``work``'s answer as JSON, run for a caller holding ``needed`` on the image."""
    content = await run_in_threadpool(_run, request, image_id, needed, work)
    return Response(content=content, media_type="application/json")
