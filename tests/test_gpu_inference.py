"""On a machine with a CUDA GPU (`pytest -m gpu`): a cached model holds one FP16 copy of
its weights on the GPU and gives the memory back when it is dropped; auto-label and
predict run there in FP16, in an inference process that sees only its slot's GPU, and
say so; after a job that process keeps no inference memory a training child could use;
a job that runs out of GPU memory halves its batch, or ends with a clear message when
even one image does not fit. The test process is the worker (standalone); the memory
cap reaches its inference process through OCULAB_INFERENCE_GPU_HEADROOM_MB."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from tests.factories import ApiClient, Factory, png_bytes
from tests.helpers import wait_job
from workers import cpus, gpus, inference
from workers.ml.inference_child import GPU_HEADROOM_ENV

pytestmark = pytest.mark.gpu

MiB = 1 << 20
DEVICE = "cuda:0"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """yolo11n and yolo11x from their YAML (untrained: memory and speed are the same)."""
    from workers.ml import yolo

    root = tmp_path_factory.mktemp("weights")
    yolo.configure_offline(root / "data")
    from ultralytics import YOLO

    paths = {}
    for name in ("yolo11n", "yolo11x"):
        paths[name] = root / f"{name}.pt"
        YOLO(f"{name}.yaml").save(str(paths[name]))
    return paths


def settle() -> None:
    import torch

    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()


def weight_bytes(module: Any) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_a_cached_model_holds_one_fp16_copy_of_its_weights_on_the_gpu(
    weights: dict[str, Path],
) -> None:
    import torch

    from workers.ml import yolo

    settle()
    before = torch.cuda.memory_allocated(0)
    cache = yolo.ModelCache(size=2)
    model = cache.get(weights["yolo11x"], "x", DEVICE)
    settle()
    grown = torch.cuda.memory_allocated(0) - before

    runs = model.predictor.model.backend.model  # the module the predictor runs
    params = list(runs.parameters())
    assert {p.device for p in params} == {torch.device(DEVICE)}
    assert {p.dtype for p in params} == {torch.float16}
    # The cached model is that module: no second copy, in FP32 or otherwise.
    assert [p.data_ptr() for p in model.model.parameters()] == [p.data_ptr() for p in params]
    assert yolo.placement(model) == (DEVICE, True)
    size = weight_bytes(runs)
    assert size > 50 * MiB  # yolo11x: a second copy could not hide in the slack below
    # One copy, plus cuBLAS/cuDNN workspaces far smaller than a second copy.
    assert size <= grown < 2 * size, (grown / MiB, size / MiB)


def test_dropping_a_model_gives_its_gpu_memory_back(weights: dict[str, Path]) -> None:
    import torch

    from workers.ml import yolo

    settle()
    base = torch.cuda.memory_allocated(0)
    cache = yolo.ModelCache(size=1)
    first = cache.get(weights["yolo11x"], "x1", DEVICE)
    size = weight_bytes(first.model)
    del first
    settle()
    torch.cuda.reset_peak_memory_stats(0)
    cache.get(weights["yolo11x"], "x2", DEVICE)  # one per device: x1 goes
    torch.cuda.synchronize()
    assert list(cache._models) == [("x2", DEVICE)]
    held = torch.cuda.memory_allocated(0) - base
    assert held < 2 * size, (held / MiB, size / MiB)  # x2 and workspaces, not x1 too
    # The cache emptied the allocator: what x1 used is back with the driver.
    assert torch.cuda.memory_reserved(0) < torch.cuda.max_memory_reserved(0) - 0.8 * size


@pytest.fixture
def gpu_app(make_running_app: Callable[..., FastAPI]) -> FastAPI:
    """Standalone: one GPU-pool slot per GPU found, one CPU slot, in this process."""
    return make_running_app(
        run_jobs=True,
        standalone_cpu_slots=1,
        heartbeat_interval_seconds=0.5,
        scheduler_interval_seconds=0.1,
        predict_queue_seconds=30,
    )


def labelled_project(f: Factory, weights: Path, n_images: int) -> tuple[ApiClient, int, int, Path]:
    owner = f.client(f.user("owner"))
    project_id = owner.project(classes=["0", "1", "2"])["id"]
    model_id, blob = f.weights(project_id, weights)
    files = [(f"{i}.png", png_bytes(i, (320, 240))) for i in range(n_images)]
    assert owner.upload(project_id, *files).status_code == 201
    return owner, project_id, model_id, blob


def autolabel(owner: ApiClient, project_id: int, model_id: int, **body: Any) -> dict[str, Any]:
    started = owner.post(
        f"/api/projects/{project_id}/jobs/autolabel",
        json={"model_id": model_id, "conf": 0.0, **body},
    )
    assert started.status_code == 202, started.text
    return wait_job(owner, started.json()["id"], timeout=180)


def test_autolabel_and_predict_run_in_fp16_on_the_gpu_and_say_so(
    gpu_app: FastAPI, weights: dict[str, Path]
) -> None:

    f = Factory(gpu_app)
    owner, project_id, model_id, _ = labelled_project(f, weights["yolo11n"], 40)
    job = autolabel(owner, project_id, model_id, batch=32, imgsz=1280)
    assert job["state"] == "succeeded", job["error"]
    result = job["result"]
    assert result["images"] == 40
    assert result["boxes"] > 0
    assert (result["device"], result["half"], result["batch"]) == (DEVICE, True, 32)
    assert result["decode_threads"] == max(1, min(8, cpus.usable() - 1))
    # It ran in the slot's inference process, which sees that GPU only, by UUID.
    (child,) = inference.CHILDREN.stats()
    assert child["pid"] != os.getpid()
    assert child["device"] == gpus.visible_devices_for(0)
    environ = Path(f"/proc/{child['pid']}/environ").read_bytes()
    assert f"CUDA_VISIBLE_DEVICES={gpus.visible_devices_for(0)}\0".encode() in environ
    # Batches of 32 at 1280 px reserve gigabytes while they run; the job hands them back.
    kept = child["cuda_reserved"] - child["cuda_allocated"]
    assert kept < 256 * MiB, kept / MiB

    predicted = owner.post(
        f"/api/models/{model_id}/predict",
        params={"conf": 0.0},
        files=[
            ("files", ("a.png", png_bytes(900, (320, 240)), "image/png")),
            ("files", ("b.png", png_bytes(901, (200, 300)), "image/png")),
        ],
    )
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    assert (body["device"], body["half"]) == (DEVICE, True)
    boxes = [b for image in body["images"] for b in image["boxes"]]
    assert boxes
    for b in boxes:
        assert 0 <= b["x"] <= b["x"] + b["w"] <= 1 + 1e-6
        assert 0 <= b["y"] <= b["y"] + b["h"] <= 1 + 1e-6


def log_lines(owner: ApiClient, job_id: int) -> list[str]:
    events = owner.get(f"/api/jobs/{job_id}/logs").json()
    return [str(e.get("data", {}).get("line", "")) for e in events]


def test_autolabel_out_of_gpu_memory_halves_its_batch_and_finishes(
    gpu_app: FastAPI, weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = Factory(gpu_app)
    owner, project_id, model_id, _ = labelled_project(f, weights["yolo11n"], 8)
    # A batch of 64 at 1280 px needs 630 MiB for its FP16 input alone; the cap is set
    # once the model is loaded.
    monkeypatch.setenv(GPU_HEADROOM_ENV, "1024")
    job = autolabel(owner, project_id, model_id, batch=64, imgsz=1280)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["images"] == 8
    assert job["result"]["batch"] < 64
    assert any("ran out of memory at batch 64" in line for line in log_lines(owner, job["id"]))


def test_autolabel_that_cannot_fit_one_image_fails_with_a_clear_message(
    gpu_app: FastAPI, weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = Factory(gpu_app)
    owner, project_id, model_id, _ = labelled_project(f, weights["yolo11n"], 2)
    # One 2048 px image is 12 MiB as bytes and 24 MiB in FP16 before the first layer.
    monkeypatch.setenv(GPU_HEADROOM_ENV, "8")
    job = autolabel(owner, project_id, model_id, batch=2, imgsz=2048)
    monkeypatch.delenv(GPU_HEADROOM_ENV)
    assert job["state"] == "failed", job
    assert job["error"] == (
        f"the GPU ran out of memory running model {model_id} at image size 2048 even one "
        "image at a time"
    )
    # The inference process is fine afterwards: the same job without the cap succeeds.
    again = autolabel(owner, project_id, model_id, batch=2, imgsz=2048)
    assert again["state"] == "succeeded", again["error"]
