"""The whole loop on synthetic data, offline, through the same services and jobs a user
drives from the API: import a YOLO zip -> train -> promote -> auto-label a fresh batch.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from server.autolabel import service as autolabel
from server.autolabel.schemas import AutolabelRequest
from server.datasets import service as datasets
from server.datasets.boxes import to_yolo_line
from server.demo import shapes
from server.images import service as images
from server.images.upload import ReceivedFile, ReceivedForm
from server.jobs.kinds import JobKind
from server.kit.errors import OculabError, validation_problems
from server.kit.roles import Role
from server.kit.storage import HashingWriter, Storage
from server.models.auth import User
from server.models.job import Job, JobState
from server.models.project import Project
from server.models.registered_model import RegisteredModel
from server.projects import service as projects
from server.projects.auth import ProjectAccess
from server.projects.schemas import ProjectCreate
from server.registry import service as models
from server.settings import Settings
from server.training import service as training
from server.training.schemas import TrainRequest

PROJECT_NAME = "Demo: shapes"


@dataclass(frozen=True)
class DemoPlan:
    train_images: int = 64
    val_images: int = 16
    fresh_images: int = 16
    epochs: int = 50
    imgsz: int = 160
    batch: int = 16
    warmup_epochs: float = 3.0


@dataclass
class DemoReport:
    project_id: int = 0
    model_id: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    predicted_images: int = 0
    predicted_boxes: int = 0


class DemoFailed(RuntimeError):
    pass


def shapes_zip(plan: DemoPlan) -> bytes:
    """A YOLO-layout dataset zip: images/{train,val}, labels/{train,val}, data.yaml."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "data.yaml",
            "names:\n" + "".join(f"  {i}: {name}\n" for i, name in enumerate(shapes.CLASSES)),
        )
        for split, count, offset in (
            ("train", plan.train_images, 0),
            ("val", plan.val_images, 10_000),
        ):
            for index in range(count):
                png, boxes = shapes.render(offset + index)
                archive.writestr(
                    f"images/{split}/shape_{offset + index:05d}.png",
                    png,
                    compress_type=zipfile.ZIP_STORED,
                )
                archive.writestr(
                    f"labels/{split}/shape_{offset + index:05d}.txt",
                    "".join(to_yolo_line(b.class_id, b.x, b.y, b.w, b.h) for b in boxes),
                )
    return out.getvalue()


class DemoRunner:
    def __init__(
        self,
        maker: sessionmaker[Session],
        settings: Settings,
        storage: Storage,
        kinds: dict[str, JobKind],
        owner_id: int,
        log: Callable[[str], None],
        plan: DemoPlan | None = None,
    ) -> None:
        self.maker = maker
        self.settings = settings
        self.storage = storage
        self.kinds = kinds
        self.owner_id = owner_id
        self.log = log
        self.plan = plan or DemoPlan()

    def _access(self, db: Session, project_id: int) -> ProjectAccess:
        owner = db.get(User, self.owner_id)
        project = db.get(Project, project_id)
        assert owner is not None
        assert project is not None
        return ProjectAccess(project=project, role=Role.owner, user=owner)

    def _train_request(self) -> TrainRequest:
        """The run the demo trains, held to the API's rules: a plan from the command
        line (``oculab demo --imgsz 33``) is refused before anything is made."""
        plan = self.plan
        try:
            return TrainRequest(
                base="yolo11n.yaml",
                epochs=plan.epochs,
                imgsz=plan.imgsz,
                batch=plan.batch,
                warmup_epochs=plan.warmup_epochs,
                val_fraction=0.0,
                seed=0,
                only_reviewed=True,
                name="shapes-demo",
            )
        except ValidationError as exc:
            raise DemoFailed(f"the demo cannot train with {validation_problems(exc)}") from None

    def run(self) -> DemoReport:
        report = DemoReport()
        plan = self.plan
        train_request = self._train_request()
        started = time.monotonic()

        with self.maker() as db, db.begin():
            owner = db.get(User, self.owner_id)
            assert owner is not None
            created = projects.create(
                db,
                owner,
                ProjectCreate(
                    name=PROJECT_NAME,
                    classes=list(shapes.CLASSES),
                    description="Synthetic squares, circles and triangles: the "
                    "demo imports them, trains a model, promotes it and lets it "
                    "pre-label a fresh batch.",
                ),
                ip=None,
            )
            report.project_id = created.id
        self.log(f"project {report.project_id}: {PROJECT_NAME}")

        stage = time.monotonic()
        zip_path = self._write_temp(shapes_zip(plan), "shapes.zip")
        with self.maker() as db, db.begin():
            job = datasets.start_import(
                db,
                self.storage,
                self.settings,
                self.kinds,
                self._access(db, report.project_id),
                ReceivedForm(files=[zip_path]),
                ip=None,
            )
        self._wait(job.id, "import")
        report.seconds["import"] = time.monotonic() - stage

        stage = time.monotonic()
        with self.maker() as db, db.begin():
            access = self._access(db, report.project_id)
            train = training.submit(
                db, self.settings, self.kinds, access.project, access.user, train_request
            )
            train_id = train.id
        result = self._wait(train_id, "training")
        report.model_id = int(result["model_id"])
        report.metrics = dict(result.get("metrics", {}))
        report.seconds["train"] = time.monotonic() - stage

        with self.maker() as db, db.begin():
            model = db.get(RegisteredModel, report.model_id)
            assert model is not None
            models.promote(db, model, self._access(db, report.project_id), ip=None)
        self.log(f"model {report.model_id} promoted (mAP50 {report.metrics.get('mAP50', 0.0):.3f})")

        stage = time.monotonic()
        fresh = [
            self._write_temp(shapes.render(50_000 + i)[0], f"fresh_{i:03d}.png")
            for i in range(plan.fresh_images)
        ]
        with self.maker() as db, db.begin():
            access = self._access(db, report.project_id)
            images.ingest(
                db,
                self.storage,
                self.settings,
                access.project,
                access.user,
                fresh,
                split=None,
            )
            labeling = autolabel.submit(
                db,
                self.settings,
                self.kinds,
                access.project,
                access.user,
                AutolabelRequest(model_id=report.model_id, conf=0.1, iou=0.7, status="unlabeled"),
            )
            labeling_id = labeling.id
        labeled = self._wait(labeling_id, "auto-labeling")
        report.predicted_images = int(labeled.get("images", 0))
        report.predicted_boxes = int(labeled.get("boxes", 0))
        report.seconds["autolabel"] = time.monotonic() - stage
        report.seconds["total"] = time.monotonic() - started
        return report

    def _write_temp(self, data: bytes, filename: str) -> ReceivedFile:
        writer = HashingWriter(self.storage.temp_path(".upload"), self.settings.max_import_bytes)
        writer.write(data)
        writer.close()
        return ReceivedFile(
            "files", filename, writer.path, writer.size, writer.sha256, writer.too_large
        )

    def _wait(self, job_id: int, what: str, timeout: float = 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last_message = ""
        while time.monotonic() < deadline:
            with self.maker() as db:
                job = db.get(Job, job_id)
                assert job is not None
                state, message, result, error = job.state, job.message, job.result, job.error
            if message and message != last_message:
                self.log(f"{what}: {message}")
                last_message = message
            if state is JobState.succeeded:
                self.log(f"{what}: done (job {job_id})")
                return dict(result or {})
            if state in (JobState.failed, JobState.canceled):
                raise DemoFailed(f"{what} job {job_id} {state.value}: {error or message}")
            time.sleep(0.5)
        raise DemoFailed(f"{what} job {job_id} did not finish in {timeout:.0f} s")


def run_demo(
    maker: sessionmaker[Session],
    settings: Settings,
    storage: Storage,
    kinds: dict[str, JobKind],
    owner_id: int,
    log: Callable[[str], None],
    plan: DemoPlan | None = None,
) -> DemoReport:
    try:
        return DemoRunner(maker, settings, storage, kinds, owner_id, log, plan).run()
    except OculabError as exc:
        raise DemoFailed(exc.detail) from exc


def start_demo_thread(
    maker: sessionmaker[Session],
    settings: Settings,
    storage: Storage,
    kinds: dict[str, JobKind],
    owner_id: int,
) -> threading.Thread:
    """The first standalone start seeds the demo while the server already answers."""
    log = logging.getLogger("oculab.demo")

    def target() -> None:
        try:
            report = run_demo(maker, settings, storage, kinds, owner_id, log.info)
        except Exception:
            log.exception("the demo did not complete")
            return
        log.info(
            "demo ready in %.0f s: project %s, model %s (mAP50 %.3f), %s boxes to review",
            report.seconds["total"],
            report.project_id,
            report.model_id,
            report.metrics.get("mAP50", 0.0),
            report.predicted_boxes,
        )

    thread = threading.Thread(target=target, name="demo", daemon=True)
    thread.start()
    return thread
