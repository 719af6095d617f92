"""Shared set-up for the ML benchmarks: a scratch standalone Oculab (SQLite, data dir,
in-process workers) and helpers to feed it images and wait on jobs."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from common import scratch_dir
from PIL import Image

from server import migrate
from server.images import service as images
from server.images.upload import ReceivedFile
from server.jobs import service as jobs
from server.kit.storage import HashingWriter, Storage
from server.models.auth import User
from server.models.job import Job, JobState
from server.models.project import Project
from server.settings import Settings
from workers.machinery import standalone_jobs


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
                job: Job | None = db.get(Job, job_id)
                assert job is not None
            if job.state is JobState.succeeded:
                return job
            if job.state in (JobState.failed, JobState.canceled):
                raise RuntimeError(f"job {job_id} {job.state.value}: {job.error}")
            time.sleep(0.05)
        raise RuntimeError(f"job {job_id} did not finish")


@contextmanager
def standalone(**settings: Any) -> Iterator[Oculab]:
    with scratch_dir("oculab-mlbench-") as work:
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
