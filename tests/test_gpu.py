"""On a machine with a CUDA GPU (run with `pytest -m gpu`): jobs claim a GPU slot, the
training child sees only its GPU, inference runs on it, and telemetry reports it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.auth.models import User
from tests.factories import Factory, labeled_shapes_project, png_bytes, wait_job

pytestmark = pytest.mark.gpu


def test_gpu_telemetry_reports_each_device() -> None:
    from workers import gpus

    indices = gpus.detect()
    assert indices
    report = gpus.telemetry(indices)
    assert [g["index"] for g in report] == indices
    assert all(g["memory_total"] and g["memory_total"] > 0 for g in report)
    assert all(0 <= g["utilization"] <= 1 for g in report)


def test_training_and_autolabel_run_on_the_gpu(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(run_jobs=True, standalone_cpu_slots=1, scheduler_interval_seconds=0.1)
    f = factory_for(app)
    owner_row = f.user("owner")
    owner = f.client(owner_row)
    admin = f.client(f.user("root", is_admin=True))
    with TestClient(app):
        queue = admin.get("/api/admin/queue").json()
        gpu_worker = next(w for w in queue["workers"] if w["pools"] == ["gpu"])
        assert gpu_worker["gpus"]
        assert gpu_worker["gpus"][0]["name"]
        with f.sessionmaker() as db, db.begin():
            user = db.get(User, owner_row.id)
            assert user is not None
            project = labeled_shapes_project(
                db, app.state.storage, app.state.settings, user, n_images=24
            )
            project_id = project.id
        started = owner.post(
            f"/api/projects/{project_id}/jobs/train",
            json={"epochs": 3, "imgsz": 160, "batch": 8, "val_fraction": 0.25},
        )
        job = wait_job(owner, started.json()["id"])
        assert job["state"] == "succeeded", job
        assert job["gpu"] is not None
        log = app.state.settings.data_dir / "runs" / f"job-{job['id']}" / "train.log"
        assert "CUDA:0" in log.read_text(errors="replace")
        model_id = job["result"]["model_id"]
        owner.post(f"/api/models/{model_id}/promote")
        owner.upload(project_id, ("fresh.png", png_bytes(7, (160, 160))))
        labeled = wait_job(
            owner,
            owner.post(f"/api/projects/{project_id}/jobs/autolabel", json={"conf": 0.001}).json()[
                "id"
            ],
        )
        assert labeled["state"] == "succeeded"
        assert labeled["gpu"] is not None
