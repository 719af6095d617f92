"""Shared set-up for the ML benchmarks: a scratch standalone Oculab (SQLite, data dir,
in-process workers) and helpers to feed it images and wait on jobs."""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from server import migrate  # noqa: E402
from server.images import service as images  # noqa: E402
from server.images.upload import ReceivedFile  # noqa: E402
from server.jobs import service as jobs  # noqa: E402
from server.kit.storage import HashingWriter, Storage  # noqa: E402
from server.models.auth import User  # noqa: E402
from server.models.job import Job, JobState  # noqa: E402
from server.models.project import Project  # noqa: E402
from server.settings import Settings  # noqa: E402
from workers.machinery import standalone_jobs  # noqa: E402


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Oculab:
    settings: Settings
    storage: Storage
    maker: Any
    kinds: dict[str, Any]
    user_id: int

    def project(self, name: str, classes: list[str]) -> int:
        with self.maker() as db, db.begin():
            project = Project(name=name, description="", classes=classes, created_by=self.user_id)
            db.add(project)
            db.flush()
            return int(project.id)

    def received(self, data: bytes, filename: str) -> ReceivedFile:
        writer = HashingWriter(self.storage.temp_path(".upload"), 1 << 30)
        writer.write(data)
        writer.close()
        return ReceivedFile(
            "files", filename, writer.path, writer.size, writer.sha256, writer.too_large
        )

    def add_images(self, project_id: int, files: list[tuple[str, bytes]]) -> None:
        with self.maker() as db, db.begin():
            project = db.get(Project, project_id)
            user = db.get(User, self.user_id)
            assert project is not None
            assert user is not None
            received = [self.received(data, name) for name, data in files]
            images.store_files(db, self.storage, self.settings, project, user, received, split=None)

    def submit(self, kind: str, project_id: int, params: dict[str, Any]) -> int:
        with self.maker() as db, db.begin():
            user = db.get(User, self.user_id)
            return int(
                jobs.submit(
                    db,
                    self.settings,
                    self.kinds,
                    kind=kind,
                    user=user,
                    project_id=project_id,
                    params=params,
                ).id
            )

    def wait(self, job_id: int, timeout: float = 3600) -> Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.maker() as db:
                job = db.get(Job, job_id)
                assert job is not None
            if job.state is JobState.succeeded:
                return job
            if job.state in (JobState.failed, JobState.canceled):
                raise RuntimeError(f"job {job_id} {job.state.value}: {job.error}")
            time.sleep(0.05)
        raise RuntimeError(f"job {job_id} did not finish")


@contextmanager
def standalone(**settings: Any) -> Iterator[Oculab]:
    work = Path(tempfile.mkdtemp(prefix="oculab-mlbench-"))
    url = f"sqlite:///{work / 'oculab.db'}"
    config = Settings(
        data_dir=work / "data",
        database_url=url,
        secret_key="b" * 40,
        seed_demo=False,
        fsync=False,
        **settings,
    )
    migrate.upgrade(url)
    try:
        with standalone_jobs(config) as machinery:
            maker = machinery.sessionmaker
            with maker() as db, db.begin():
                user = User(
                    issuer="local",
                    subject="bench",
                    username="bench",
                    is_admin=True,
                    is_active=True,
                    groups=[],
                )
                db.add(user)
                db.flush()
                user_id = int(user.id)
            yield Oculab(config, machinery.storage, maker, machinery.kinds, user_id)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def seconds(job: Job) -> float:
    assert job.started_at is not None
    assert job.finished_at is not None
    return (job.finished_at - job.started_at).total_seconds()


def count(oculab: Oculab, stmt: Any) -> int:
    with oculab.maker() as db:
        return int(db.scalar(sa.select(sa.func.count()).select_from(stmt)) or 0)
