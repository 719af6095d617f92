"""Inference in workers, on the CPU: the model cache (one copy of the weights per model
and device, eviction per device), the batch that halves when the GPU runs out of memory,
decoding ahead of the model, and interactive predictions that run on the CPU while a
long job holds the only GPU slot. tests/test_gpu_inference.py checks the GPU side."""

from __future__ import annotations

import gc
import importlib.util
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.annotations.models import Annotation
from server.auth.models import User
from server.autolabel import decoding
from server.images.models import Image, ImageStatus
from server.jobs import service as jobs
from tests.factories import ApiClient, Factory, png_bytes, wait_job

if importlib.util.find_spec("ultralytics") is None:  # not importing it: workers configure it
    pytest.skip("the ml extra is not installed", allow_module_level=True)

from workers.ml import yolo


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yolo11n from its YAML (untrained: inference costs the same), saved once."""
    root = tmp_path_factory.mktemp("weights")
    yolo.configure_offline(root / "data")
    from ultralytics import YOLO

    path = root / "yolo11n.pt"
    YOLO("yolo11n.yaml").save(str(path))
    return path


def predictor_module(model: Any) -> Any:
    return model.predictor.model.backend.model  # ultralytics 8.4: AutoBackend → backend


# --- the model cache -----------------------------------------------------------------------


def test_a_cached_model_is_loaded_once_and_shares_its_weights_with_its_predictor(
    weights: Path,
) -> None:
    cache = yolo.ModelCache(size=2)
    model = cache.get(weights, "a", "cpu")
    assert cache.get(weights, "a", "cpu") is model
    assert len(cache._models) == 1

    def one_copy() -> bool:
        ours = [p.data_ptr() for p in model.model.parameters()]
        theirs = [p.data_ptr() for p in predictor_module(model).parameters()]
        return ours == theirs

    # One copy: the cached model is the module the predictor runs, not a second one.
    assert one_copy()
    assert yolo.placement(model) == ("cpu", False)
    # Still a working model after the swap, and other thresholds and sizes keep the
    # predictor (a new one would deep-copy the weights again).
    for conf, imgsz in ((0.0, 128), (0.5, 160)):
        found = yolo.predict(model, [png_array(3)], conf=conf, iou=0.7, imgsz=imgsz, device="cpu")
        assert len(found) == 1
        assert one_copy()
    found = yolo.predict(model, [png_array(3)], conf=0.0, iou=0.7, imgsz=128, device="cpu")
    assert found[0]
    for d in found[0]:
        assert all(isinstance(v, float) for v in (d.x, d.y, d.w, d.h, d.confidence))
        assert 0 <= d.x <= d.x + d.w <= 1
        assert 0 <= d.y <= d.y + d.h <= 1


def test_the_least_recently_used_model_of_a_device_is_dropped_and_freed(
    weights: Path,
) -> None:
    cache = yolo.ModelCache(size=2)
    cache.get(weights, "a", "cpu")
    b = cache.get(weights, "b", "cpu")
    cache.get(weights, "a", "cpu")  # "a" is now the most recently used
    evicted = weakref.ref(b)
    del b
    cache.get(weights, "c", "cpu")
    assert list(cache._models) == [("a", "cpu"), ("c", "cpu")]
    gc.collect()
    # Nothing of ours still holds the dropped model, so its weights are gone with it.
    assert evicted() is None


def test_each_device_keeps_its_own_models() -> None:
    entries = [("a", "cuda:0"), ("b", "cuda:1"), ("c", "cuda:0"), ("d", "cuda:0")]
    assert yolo.victims(entries, "cuda:0", 2) == [("a", "cuda:0")]
    assert yolo.victims(entries, "cuda:1", 2) == []
    assert yolo.victims(entries, "cuda:0", 1) == [("a", "cuda:0"), ("c", "cuda:0")]


def test_no_cuda_is_started_to_release_memory_on_the_cpu() -> None:
    import torch

    yolo.release_cuda_memory()
    assert not torch.cuda.is_initialized()


# --- running out of GPU memory ---------------------------------------------------------------


def oom_above(limit: int, tried: list[int]) -> Callable[[Any], list[int]]:
    """A predict that runs out of GPU memory above ``limit`` images, as CUDA would."""
    import torch

    def run(chunk: Any) -> list[int]:
        tried.append(len(chunk))
        if len(chunk) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in chunk]

    return run


def test_out_of_memory_halves_the_batch_and_runs_the_same_images_again() -> None:
    tried: list[int] = []
    logged: list[str] = []
    out, batch = yolo.run_in_batches(
        oom_above(3, tried),
        list(range(10)),
        16,
        what="model 7 at image size 640",
        log=logged.append,
    )
    assert out == [x * 10 for x in range(10)]
    assert tried == [10, 5, 2, 2, 2, 2, 2]
    assert batch == 2  # where the next batch of the job starts
    assert logged == [
        "the GPU ran out of memory at batch 10; retrying with batch 5",
        "the GPU ran out of memory at batch 5; retrying with batch 2",
    ]
    tried.clear()
    assert yolo.run_in_batches(oom_above(3, tried), [1, 2, 3], batch, what="m") == ([10, 20, 30], 2)
    assert tried == [2, 1]


def test_out_of_memory_even_at_one_image_fails_with_a_clear_message() -> None:
    tried: list[int] = []
    with pytest.raises(yolo.GpuOutOfMemory) as caught:
        yolo.run_in_batches(oom_above(0, tried), [1, 2, 3, 4], 4, what="model 7 at image size 1280")
    assert str(caught.value) == (
        "the GPU ran out of memory running model 7 at image size 1280 even one image at a time"
    )
    assert tried == [4, 2, 1]


def test_other_errors_are_not_retried() -> None:
    tried: list[int] = []

    def run(chunk: Any) -> list[int]:
        tried.append(len(chunk))
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        yolo.run_in_batches(run, [1, 2, 3, 4], 4, what="m")
    assert tried == [4]


# --- decoding ahead ----------------------------------------------------------------------------


def test_decoding_is_sized_to_the_device() -> None:
    assert decoding.plan("cuda:0", 16, usable_cpus=16) == decoding.DecodePlan(8, 2)
    assert decoding.plan("cuda:1", 16, usable_cpus=4) == decoding.DecodePlan(3, 2)
    assert decoding.plan("cuda:0", 16, usable_cpus=1) == decoding.DecodePlan(1, 2)
    assert decoding.plan("cuda:0", 64, usable_cpus=16) == decoding.DecodePlan(8, 1)
    # On the CPU the decoders compete with torch for the cores.
    assert decoding.plan("cpu", 16, usable_cpus=16) == decoding.DecodePlan(1, 1)
    assert decoding.plan("cpu", 16, usable_cpus=16, threads=4) == decoding.DecodePlan(4, 1)


def test_batches_come_in_order_decoded_ahead_on_several_threads() -> None:
    rows = [(i, f"sha{i}", 0) for i in range(1, 24)]
    fetched: list[int] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def fetch(after: int) -> list[decoding.Row]:
        batch = [r for r in rows if r[0] > after][:5]
        fetched.append(after)
        return batch

    def decode(row: decoding.Row) -> str:
        time.sleep(0.01 * (row[0] % 3))  # out-of-order completion
        with lock:
            threads.add(threading.current_thread().name)
        return f"img{row[0]}"

    plan = decoding.DecodePlan(threads=3, batches_ahead=2)
    seen: list[list[str]] = []
    with closing(decoding.batches(fetch, decode, 0, plan)) as ahead:
        for index, (batch, images) in enumerate(ahead):
            assert images == [f"img{r[0]}" for r in batch]
            # This batch, plus at most two fetched ahead of it.
            assert len(fetched) <= index + 1 + plan.batches_ahead
            seen.append(images)
    assert [img for batch in seen for img in batch] == [f"img{i}" for i in range(1, 24)]
    assert [len(b) for b in seen] == [5, 5, 5, 5, 3]
    assert len(threads) > 1


def test_closing_the_batches_early_stops_fetching() -> None:
    fetched: list[int] = []

    def fetch(after: int) -> list[decoding.Row]:
        fetched.append(after)
        return [(after + 1, "x", 0)]

    plan = decoding.DecodePlan(threads=2, batches_ahead=1)
    with closing(decoding.batches(fetch, lambda row: row[0], 0, plan)) as ahead:
        for rows, _ in ahead:
            if rows[0][0] == 3:
                break
    count = len(fetched)
    time.sleep(0.05)
    assert count == len(fetched) == 4  # batch 3 and the one fetched ahead of it


# --- through the jobs ----------------------------------------------------------------------------


def png_array(seed: int) -> Any:
    import cv2
    import numpy as np

    return cv2.imdecode(np.frombuffer(png_bytes(seed, (96, 80)), np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture
def inference_app(make_app: Callable[..., FastAPI]) -> Iterator[FastAPI]:
    """Standalone: one GPU-pool slot (on the CPU here), one CPU-pool slot."""
    app = make_app(
        run_jobs=True,
        job_modules=["tests.jobkinds"],
        standalone_gpu_slots=1,
        standalone_cpu_slots=1,
        heartbeat_interval_seconds=0.5,
        scheduler_interval_seconds=0.1,
        predict_queue_seconds=30,
        autolabel_decode_threads=3,
    )
    with TestClient(app):
        yield app


def test_autolabel_reports_where_it_ran_and_the_batch_it_used(
    inference_app: FastAPI, weights: Path
) -> None:
    f = Factory(inference_app)
    owner = f.client(f.user("owner"))
    project_id = owner.project(classes=["0", "1", "2"])["id"]
    model_id, _ = f.weights(project_id, weights)
    uploaded = owner.upload(project_id, *[(f"{i}.png", png_bytes(i, (96, 80))) for i in range(6)])
    ids = [item["image_id"] for item in uploaded.json()["items"]]
    started = owner.post(
        f"/api/projects/{project_id}/jobs/autolabel",
        json={"model_id": model_id, "conf": 0.0, "batch": 4, "imgsz": 128},
    )
    job = wait_job(owner, started.json()["id"])
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["images"] == 6
    assert (result["device"], result["half"], result["batch"]) == ("cpu", False, 4)
    assert result["decode_threads"] == 3  # the setting; on its own the CPU takes one
    with f.sessionmaker() as db:
        statuses = db.scalars(sa.select(Image.status).where(Image.id.in_(ids))).all()
        assert set(statuses) == {ImageStatus.predicted}
        boxes = db.scalars(sa.select(Annotation).where(Annotation.image_id.in_(ids))).all()
    assert boxes, "an untrained model at conf 0 still proposes boxes"
    for box in boxes:
        assert 0 <= box.x <= box.x + box.w <= 1 + 1e-6
        assert 0 <= box.y <= box.y + box.h <= 1 + 1e-6


def hold_gpu_slot(f: Factory, owner: ApiClient) -> int:
    """A long job in the GPU pool, like a training: it holds the pool's only slot."""
    with f.sessionmaker() as db, db.begin():
        user = db.get(User, owner.user_id)
        job = jobs.submit(
            db,
            f.app.state.settings,
            f.app.state.kinds,
            kind="test.sleep_count",
            user=user,
            project_id=None,
            params={"seconds": 120},
            pool="gpu",
        )
        job_id = job.id
    deadline = time.monotonic() + 30
    while owner.get(f"/api/jobs/{job_id}").json()["state"] != "running":
        assert time.monotonic() < deadline, "the GPU-pool job never started"
        time.sleep(0.05)
    return job_id


def predict(owner: ApiClient, model_id: int) -> Any:
    return owner.post(
        f"/api/models/{model_id}/predict",
        params={"conf": 0.0},
        files=[("files", ("a.png", png_bytes(900, (96, 80)), "image/png"))],
    )


def test_predict_runs_on_the_cpu_while_a_long_job_holds_the_only_gpu_slot(
    inference_app: FastAPI, weights: Path
) -> None:
    f = Factory(inference_app)
    owner = f.client(f.user("owner"))
    project_id = owner.project(classes=["0", "1"])["id"]
    model_id, _ = f.weights(project_id, weights)
    holder = hold_gpu_slot(f, owner)

    busy = predict(owner, model_id)
    assert busy.status_code == 200, busy.text
    body = busy.json()
    assert (body["device"], body["half"]) == ("cpu", False)
    assert body["images"][0]["boxes"]
    assert owner.get(f"/api/jobs/{body['job_id']}").json()["pool"] == "cpu"
    assert owner.get(f"/api/jobs/{holder}").json()["state"] == "running"

    assert owner.post(f"/api/jobs/{holder}/cancel").status_code == 200
    assert wait_job(owner, holder, timeout=30)["state"] == "canceled"
    free = predict(owner, model_id)
    assert free.status_code == 200, free.text
    # With the slot free it runs in the GPU pool (whose device is the CPU on this machine).
    assert owner.get(f"/api/jobs/{free.json()['job_id']}").json()["pool"] == "gpu"
    assert free.json()["images"][0]["boxes"]


def test_predict_waits_for_the_gpu_when_the_fallback_is_off(
    make_app: Callable[..., FastAPI], weights: Path
) -> None:
    app = make_app(
        run_jobs=True,
        job_modules=["tests.jobkinds"],
        standalone_gpu_slots=1,
        standalone_cpu_slots=1,
        heartbeat_interval_seconds=0.5,
        scheduler_interval_seconds=0.1,
        predict_queue_seconds=0.5,
        predict_cpu_fallback=False,
    )
    f = Factory(app)
    owner = f.client(f.user("owner"))
    project_id = owner.project(classes=["0"])["id"]
    model_id, _ = f.weights(project_id, weights)
    with TestClient(app):
        holder = hold_gpu_slot(f, owner)
        response = predict(owner, model_id)
        owner.post(f"/api/jobs/{holder}/cancel")
    assert response.status_code == 503
    assert "pool 'gpu'" in response.json()["detail"]
