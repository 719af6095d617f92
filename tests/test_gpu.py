"""On a machine with a CUDA GPU (run with `pytest -m gpu`; skipped without one): the
worker's slots are the GPUs torch sees, telemetry reports each by its UUID, and the
whole loop (train, promote, auto-label, predict) runs on the slot's GPU and says so.

The finer checks live beside their code: tests/test_gpu_training.py (the training
child's device, memory caps) and tests/test_gpu_inference.py (one FP16 copy of the
weights, memory given back, out-of-memory batches)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.models.auth import User
from tests.factories import Factory, labeled_shapes_project, png_bytes
from tests.helpers import wait_job

pytestmark = pytest.mark.gpu


def _bare(uuid: str) -> str:
    """A device UUID as torch and NVML both spell it without their prefixes."""
    return uuid.lower().removeprefix("gpu-").removeprefix("mig-")


def test_slots_are_the_gpus_torch_sees_and_telemetry_names_each() -> None:
    import torch

    from workers import gpus

    indices = gpus.detect()
    assert indices == list(range(torch.cuda.device_count()))
    report = gpus.telemetry(indices)
    assert [g["index"] for g in report] == indices
    for ordinal, entry in zip(indices, report, strict=True):
        # The slot's UUID is the one torch gives cuda:N in this process.
        assert entry["uuid"] == gpus.visible_devices_for(ordinal)
        assert _bare(entry["uuid"]) == _bare(str(torch.cuda.get_device_properties(ordinal).uuid))
        assert entry["name"] == torch.cuda.get_device_properties(ordinal).name
        assert entry["memory_total"] > entry["memory_used"] > 0
        if not entry["mig"]:
            assert 0 <= entry["utilization"] <= 1


def test_train_promote_autolabel_and_predict_run_on_the_slots_gpu(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    from workers import gpus

    app = make_app(run_jobs=True, standalone_cpu_slots=1, scheduler_interval_seconds=0.1)
    f = factory_for(app)
    owner_row = f.user("owner")
    owner = f.client(owner_row)
    admin = f.client(f.user("root", is_admin=True))
    with TestClient(app):
        queue = admin.get("/api/admin/queue").json()
        gpu_worker = next(w for w in queue["workers"] if w["pools"] == ["gpu"])
        assert [g["uuid"] for g in gpu_worker["gpus"]] == [
            gpus.visible_devices_for(i) for i in gpus.detect()
        ]
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
        job = wait_job(owner, started.json()["id"], timeout=300)
        assert job["state"] == "succeeded", job["error"]
        slot = job["gpu"]
        assert slot in gpus.detect()
        trained = job["result"]["device"]
        assert trained["cuda_visible_devices"] == gpus.visible_devices_for(slot)
        assert trained["device_count"] == 1
        assert trained["model_device"] == "cuda:0"
        log = app.state.settings.data_dir / "runs" / f"job-{job['id']}" / "attempt-1" / "train.log"
        assert "CUDA:0" in log.read_text(errors="replace")

        model_id = job["result"]["model_id"]
        promoted = owner.post(f"/api/models/{model_id}/promote")
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["id"] == model_id
        assert promoted.json()["promoted"] is True
        assert promoted.json()["hyperparams"]["device"] == trained["name"]

        owner.upload(project_id, ("fresh.png", png_bytes(7, (160, 160))))
        labeled = wait_job(
            owner,
            owner.post(f"/api/projects/{project_id}/jobs/autolabel", json={"conf": 0.001}).json()[
                "id"
            ],
        )
        assert labeled["state"] == "succeeded", labeled["error"]
        assert labeled["gpu"] == slot
        assert labeled["result"]["device"] == f"cuda:{slot}"
        assert labeled["result"]["images"] >= 1
        assert labeled["result"]["boxes"] >= 1  # conf 0.001 on a trained model finds some
        assert labeled["result"]["unreadable"] == 0

        predicted = owner.post(
            f"/api/models/{model_id}/predict",
            files=[("files", ("probe.png", png_bytes(3, (160, 160)), "image/png"))],
        )
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        assert body["device"].startswith("cuda:")
        [image] = body["images"]
        assert (image["filename"], image["width"], image["height"]) == ("probe.png", 160, 160)
        for box in image["boxes"]:
            assert 0 <= box["x"] <= 1
            assert 0 < box["w"] <= 1
            assert 0 <= box["confidence"] <= 1
