"""Builders for users, clients, projects, image and archive bytes used across the tests
(tests/helpers.py says where the other shared test code lives)."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from server.annotations import service as annotation_service
from server.annotations.schemas import AnnotationsPut, Box
from server.auth.passwords import hash_password
from server.demo import shapes
from server.images import service as images
from server.images.upload import ReceivedFile
from server.kit.db import make_sessionmaker
from server.kit.storage import HashingWriter, Storage
from server.models.auth import LOCAL_ISSUER, User
from server.models.image import Image as ImageRow
from server.models.project import Project
from server.models.registered_model import ModelState, RegisteredModel
from server.projects import service as projects
from server.projects.schemas import ProjectCreate
from server.settings import Settings
from server.tokens import service as tokens


@dataclass
class ApiClient:
    """A TestClient authenticated as one user (API token, or session cookie + CSRF)."""

    http: TestClient
    user_id: int
    username: str

    def get(self, url: str, **kw: Any) -> Any:
        return self.http.get(url, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.http.post(url, **kw)

    def put(self, url: str, **kw: Any) -> Any:
        return self.http.put(url, **kw)

    def patch(self, url: str, **kw: Any) -> Any:
        return self.http.patch(url, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.http.delete(url, **kw)

    # Domain shortcuts ---------------------------------------------------------------

    def project(self, name: str = "Cats", classes: list[str] | None = None) -> dict[str, Any]:
        response = self.post(
            "/api/projects",
            json={"name": name, "classes": classes if classes is not None else ["cat", "dog"]},
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def upload(self, project_id: int, *files: tuple[str, bytes], **params: Any) -> Any:
        return self.post(
            f"/api/projects/{project_id}/images",
            files=[("files", (name, data, "application/octet-stream")) for name, data in files],
            params=params,
        )

    def image(self, project_id: int, seed: int = 0) -> dict[str, Any]:
        response = self.upload(project_id, (f"img{seed}.png", png_bytes(seed=seed)))
        assert response.status_code == 201, response.text
        item: dict[str, Any] = response.json()["items"][0]
        return item

    def add_member(self, project_id: int, user: ApiClient, role: str) -> None:
        response = self.put(
            f"/api/projects/{project_id}/members/{user.user_id}", json={"role": role}
        )
        assert response.status_code == 200, response.text


class Factory:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.sessionmaker = make_sessionmaker(app.state.engine)

    def user(
        self,
        username: str,
        *,
        is_admin: bool = False,
        password: str | None = None,
        issuer: str = LOCAL_ISSUER,
    ) -> User:
        with self.sessionmaker() as db, db.begin():
            user = User(
                issuer=issuer,
                subject=username,
                username=username,
                is_admin=is_admin,
                is_active=True,
                groups=[],
                password_hash=hash_password(password) if password else None,
            )
            db.add(user)
        return user

    def token_for(self, user: User, days: int | None = 30) -> str:
        with self.sessionmaker() as db, db.begin():
            fresh = db.get(User, user.id)
            assert fresh is not None
            _, secret = tokens.create(db, fresh, "test", days, ip=None)
        return secret

    def client(self, user: User) -> ApiClient:
        http = TestClient(self.app)
        http.headers["Authorization"] = f"Bearer {self.token_for(user)}"
        return ApiClient(http=http, user_id=user.id, username=user.username)

    def session_client(self, username: str, password: str) -> ApiClient:
        """Logs in through the local-login endpoint: cookie auth with the CSRF header set."""
        http = TestClient(self.app)
        response = http.post(
            "/api/auth/local/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        http.headers["X-CSRF-Token"] = response.json()["csrf_token"]
        return ApiClient(http=http, user_id=response.json()["id"], username=username)

    def model(self, project_id: int, state: ModelState = ModelState.ready) -> int:
        """A registry row (no weights file): enough for whatever only names the model."""
        with self.sessionmaker() as db, db.begin():
            row = RegisteredModel(
                project_id=project_id,
                name="model",
                state=state,
                source="upload",
                sha256="0" * 64,
                size_bytes=1,
            )
            db.add(row)
            db.flush()
            return row.id

    def weights(self, project_id: int, path: Path, classes: int = 80) -> tuple[int, Path]:
        """A ready model with real weights, stored as an upload would store them (without
        the inspection job): its id and its blob."""
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        blob: Path = self.app.state.storage.blob_path(sha)
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        with self.sessionmaker() as db, db.begin():
            row = RegisteredModel(
                project_id=project_id,
                name=path.stem,
                state=ModelState.ready,
                source="upload",
                sha256=sha,
                size_bytes=len(data),
                class_names=[str(i) for i in range(classes)],
                hyperparams={},
                metrics={},
            )
            db.add(row)
            db.flush()
            return row.id, blob

    def count(self, model: type[Any], *where: Any) -> int:
        with self.sessionmaker() as db:
            return db.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


# --- image bytes ---------------------------------------------------------------------


def _image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    img.putpixel((0, 0), (seed % 256, (seed // 256) % 256, 7))
    return img


def png_bytes(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    _image(seed, size).save(out, format="PNG")
    return out.getvalue()


def image_bytes(fmt: str, seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    _image(seed, size).save(out, format=fmt)
    return out.getvalue()


def noisy_jpeg(size: tuple[int, int] = (320, 240), seed: int = 0) -> bytes:
    rng = random.Random(seed)
    img = Image.frombytes(
        "RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    )
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def png_bomb(width: int = 14000, height: int = 14000) -> bytes:
    """A valid PNG of width x height black pixels: a few hundred KB, ~196 MP decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + grey pixels
    idat = bytearray()
    for _ in range(height):
        idat += compressor.compress(row)
    idat += compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", bytes(idat))
        + chunk(b"IEND", b"")
    )


def make_zip(entries: dict[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def post_zip(client: ApiClient, project_id: int, data: bytes, name: str = "dataset.zip") -> Any:
    """Starts a dataset import; the caller checks the answer."""
    return client.post(
        f"/api/projects/{project_id}/imports",
        files={"file": (name, data, "application/zip")},
    )


# --- a labelled project, through the services -------------------------------------------


def labeled_shapes_project(
    db: Session, storage: Storage, settings: Settings, owner: User, n_images: int = 24
) -> Project:
    created = projects.create(
        db,
        owner,
        ProjectCreate(
            name="Shapes",
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
    for image in db.scalars(sa.select(ImageRow).where(ImageRow.project_id == project.id)):
        body = AnnotationsPut(
            base_revision=image.revision,
            boxes=[
                Box(class_id=b.class_id, x=b.x, y=b.y, w=b.w, h=b.h) for b in truth[image.sha256]
            ],
        )
        annotation_service.save(db, settings, project, image, owner, body)
    return project


def statements(app: FastAPI, call: Callable[[], object]) -> int:
    """How many SQL statements ``call`` sends to the app's database."""
    count = 0

    def counted(*_: object) -> None:
        nonlocal count
        count += 1

    engine = app.state.engine
    sa.event.listen(engine, "before_cursor_execute", counted)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", counted)
    return count
