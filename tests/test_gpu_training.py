"""Training on a real CUDA GPU (run with `pytest -m gpu`; skipped without one): the
training child runs on its slot's GPU and says so from inside (its CUDA_VISIBLE_DEVICES,
device count, the device's UUID, where the model's weights are and in which dtype), and
running out of GPU memory ends in a message that says what ran out, or in a smaller
batch that the model's hyperparameters record.

The memory tests cap the child's share of the GPU with ``OCULAB_CUDA_MEMORY_FRACTION``
(workers/ml/train_child.py), so that an H200 runs out as a small card would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from server.models.auth import User
from server.training import tasks
from tests.factories import Factory, labeled_shapes_project
from tests.helpers import wait_job
from workers import cpus
from workers.ml.train_child import MEMORY_FRACTION_ENV

pytestmark = pytest.mark.gpu

GIB = 1 << 30


def _bare(uuid: str) -> str:
    """A device UUID as torch and NVML both spell it once their prefixes are gone."""
    return uuid.lower().removeprefix("gpu-").removeprefix("mig-")


@pytest.fixture
def gpu_app(make_running_app: Callable[..., FastAPI]) -> FastAPI:
    return make_running_app(run_jobs=True, standalone_cpu_slots=1, scheduler_interval_seconds=0.1)


def _train(app: FastAPI, body: dict[str, Any], n_images: int = 24) -> tuple[Any, dict[str, Any]]:
    f = Factory(app)
    owner_row = f.user("owner")
    owner = f.client(owner_row)
    with f.sessionmaker() as db, db.begin():
        user = db.get(User, owner_row.id)
        assert user is not None
        project = labeled_shapes_project(
            db, app.state.storage, app.state.settings, user, n_images=n_images
        )
        project_id = project.id
    started = owner.post(f"/api/projects/{project_id}/jobs/train", json=body)
    assert started.status_code == 202, started.text
    return owner, wait_job(owner, started.json()["id"], timeout=300)


def _log_lines(owner: Any, job_id: int) -> list[str]:
    return [
        str(e["data"].get("line", ""))
        for e in owner.get(f"/api/jobs/{job_id}/logs").json()
        if e["kind"] == "log"
    ]


def test_training_child_trains_on_its_slots_gpu_and_proves_it(gpu_app: FastAPI) -> None:
    import torch

    from workers import gpus

    owner, job = _train(gpu_app, {"epochs": 2, "imgsz": 160, "batch": 8, "val_fraction": 0.25})
    assert job["state"] == "succeeded", job["error"]
    slot = job["gpu"]
    assert slot is not None
    device = job["result"]["device"]
    # The child saw exactly its slot's device, named as the slot names it...
    expected = gpus.visible_devices_for(slot)
    assert expected
    assert device["cuda_visible_devices"] == expected
    assert device["device_count"] == 1
    # ...which is the same physical GPU as the worker's cuda:<slot>.
    assert device["uuid"]
    assert _bare(device["uuid"]) == _bare(str(torch.cuda.get_device_properties(slot).uuid))
    if expected.upper().startswith(("GPU-", "MIG-")):
        assert _bare(device["uuid"]) == _bare(expected)
    assert device["name"] == torch.cuda.get_device_name(slot)
    # The model was on it, in FP32 weights under AMP, with this pod's loader workers.
    assert device["device"] == "cuda:0"
    assert device["model_device"] == "cuda:0"
    assert device["dtype"] == "float32"
    assert device["amp"] is True
    assert device["batch"] == device["batch_used"] == 8
    assert device["workers"] == tasks.loader_workers(True, cpus.usable())
    lines = _log_lines(owner, job["id"])
    assert any(line.startswith("training on cuda:0 (") for line in lines), lines
    log = gpu_app.state.settings.data_dir / "runs" / f"job-{job['id']}" / "attempt-1" / "train.log"
    assert "CUDA:0" in log.read_text(errors="replace")  # ultralytics' own device line
    model = owner.get(f"/api/models/{job['result']['model_id']}").json()
    assert model["hyperparams"]["device"] == device["name"]
    assert model["hyperparams"]["batch_used"] == 8


def test_training_that_runs_out_of_gpu_memory_fails_saying_what_ran_out(
    gpu_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    monkeypatch.setenv(MEMORY_FRACTION_ENV, f"{0.25 * GIB / total:.6f}")
    owner, job = _train(
        gpu_app,
        {"epochs": 1, "imgsz": 640, "batch": 64, "val_fraction": 0.25, "warmup_epochs": 0.0},
    )
    assert job["state"] == "failed", job
    name = torch.cuda.get_device_name(0)
    error = job["error"]
    assert error.startswith(
        f"training failed: the GPU ran out of memory ({name}, 0.25 GiB) at batch "
    )
    assert error.endswith(", image size 640: lower the batch or the image size")
    assert "exit code" not in error
    # The job log keeps the traceback's own words.
    assert any("out of memory" in line.lower() for line in _log_lines(owner, job["id"]))


def test_out_of_gpu_memory_in_the_first_epoch_halves_the_batch_and_records_it(
    gpu_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    # yolo11n at 640 needs several GiB at batch 64 and well under 4 at batch 8.
    monkeypatch.setenv(MEMORY_FRACTION_ENV, f"{4 * GIB / total:.6f}")
    owner, job = _train(
        gpu_app,
        {"epochs": 1, "imgsz": 640, "batch": 64, "val_fraction": 0.25, "warmup_epochs": 0.0},
    )
    assert job["state"] == "succeeded", job["error"]
    used = job["result"]["device"]["batch_used"]
    assert 8 <= used < 64
    lines = _log_lines(owner, job["id"])
    assert any(f"lowered the batch to {used}" in line for line in lines), lines
    model = owner.get(f"/api/models/{job['result']['model_id']}").json()
    assert model["hyperparams"]["batch"] == 64
    assert model["hyperparams"]["batch_used"] == used
