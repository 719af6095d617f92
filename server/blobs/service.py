"""Image files are stored once per content (``Storage`` blobs, by sha256) and shared by
every image row with those bytes, in any project. A blob goes when its last row does:
deleting an image or a whole project schedules the collection of the blobs it held."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from server.kit.storage import Storage
from server.models.image import Image

log = logging.getLogger(__name__)


def schedule_gc(db: Session, storage: Storage, shas: list[str]) -> None:
    """After this transaction commits, delete blobs no image references any more."""
    if not shas:
        return
    engine = db.get_bind()

    def collect(_session: Session) -> None:
        try:
            _gc(engine, storage, set(shas))
        except Exception:
            # Orphaned blobs are harmless; a failed GC must not fail the request.
            log.warning("blob garbage collection failed", exc_info=True)

    event.listen(db, "after_commit", collect, once=True)


def _gc(engine: sa.Engine | sa.Connection, storage: Storage, shas: set[str]) -> None:
    with Session(bind=engine) as db:
        referenced: set[str] = set()
        candidates = sorted(shas)
        for start in range(0, len(candidates), 500):
            chunk = candidates[start : start + 500]
            referenced.update(db.scalars(sa.select(Image.sha256).where(Image.sha256.in_(chunk))))
    # Runs after the deleting transaction committed, so a reference found here is real.
    # (An upload of the same bytes into another project committing in between the
    # check and the unlink is the one race left; it is far rarer than a re-upload.)
    for sha in shas - referenced:
        storage.delete_blob(sha)
