"""Inference for jobs, on the CPU: the model cache (one copy of the weights per model
and device, eviction per device), the batch that halves when the GPU runs out of memory,
the inference process of a worker slot (warm between jobs, gone when idle, a clear end
when it dies, a cancel that stops it between batches), batches sent ahead of the model,
and interactive predictions that run on the CPU while a long job holds the only GPU
slot. tests/test_gpu_inference.py checks the GPU side."""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
import time
import weakref
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.autolabel import decoding
from server.jobs import service as jobs
from server.models.annotation import Annotation
from server.models.auth import User
from server.models.image import Image, ImageStatus
from tests.factories import ApiClient, Factory, png_bytes
from tests.helpers import wait_job, wait_until
from workers import inference

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


def test_batches_come_in_order_submitted_ahead() -> None:
    rows = [(i, f"sha{i}", 0) for i in range(1, 24)]
    fetched: list[int] = []
    submitted: list[list[int]] = []

    def fetch(after: int) -> list[decoding.Row]:
        fetched.append(after)
        return [r for r in rows if r[0] > after][:5]

    def submit(batch: list[decoding.Row]) -> int:
        submitted.append([r[0] for r in batch])
        return len(submitted) - 1

    def collect(handle: int) -> list[str]:
        return [f"img{i}" for i in submitted[handle]]

    seen: list[list[str]] = []
    with closing(decoding.batches(fetch, submit, collect, 0, batches_ahead=2)) as ahead:
        for index, (batch, images) in enumerate(ahead):
            assert images == [f"img{r[0]}" for r in batch]
            # This batch and two submitted ahead of it (while rows remain): the
            # inference process always has the next batch to decode.
            assert len(submitted) == min(index + 3, 5)
            seen.append(images)
    assert [img for batch in seen for img in batch] == [f"img{i}" for i in range(1, 24)]
    assert [len(b) for b in seen] == [5, 5, 5, 5, 3]
    assert fetched == [0, 5, 10, 15, 20, 23]


def test_closing_the_batches_early_stops_fetching() -> None:
    fetched: list[int] = []

    def fetch(after: int) -> list[decoding.Row]:
        fetched.append(after)
        return [(after + 1, "x", 0)]

    ahead = decoding.batches(fetch, lambda rows: rows[0][0], lambda h: h, 0, batches_ahead=1)
    with closing(ahead):
        for rows, _ in ahead:
            if rows[0][0] == 3:
                break
    assert len(fetched) == 4  # batch 3 and the one fetched ahead of it


# --- the inference process ---------------------------------------------------------------


def request(weights: Path, batch: int = 2, **changes: Any) -> inference.Request:
    values: dict[str, Any] = {
        "weights": weights,
        "sha": weights.name,
        "label": "model 7",
        "conf": 0.0,
        "iou": 0.7,
        "imgsz": 128,
        "batch": batch,
        "decode_threads": 1,
        "warm": True,
    }
    values.update(changes)
    return inference.Request(**values)


def png_files(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"{i}.png"
        path.write_bytes(png_bytes(i, (96, 80)))
        paths.append(path)
    return paths


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.no_database
def test_the_inference_process_answers_in_order_and_stays_warm(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCULAB_SECRET_KEY", "not for the child")
    children = inference.Children()
    files = png_files(tmp_path / "in", 5)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not an image")
    try:
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            ready = session.ready
            assert ready == inference.Ready(device="cpu", half=False, batch=2, imgsz=128)
            first = session.submit(files[:2])
            second = session.submit([files[2], broken, files[3]])
            one, two = session.result(first), session.result(second)
            pid = session.child.pid
        assert [img is not None for img in one.images + two.images] == [
            True,
            True,
            True,
            False,
            True,
        ]
        assert (one.images[0].width, one.images[0].height) == (96, 80)  # type: ignore[union-attr]
        boxes = [b for img in one.images + two.images if img is not None for b in img.boxes]
        assert boxes, "an untrained model at conf 0 still proposes boxes"
        for b in boxes:
            assert 0 <= b.x <= b.x + b.w <= 1 + 1e-6
            assert 0 <= b.y <= b.y + b.h <= 1 + 1e-6
        # Only its device, and nothing of the worker's secrets or database.
        env = environ_of(pid)
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        assert not [k for k in env if k.startswith("OCULAB_")]
        assert env["YOLO_OFFLINE"] == "1"

        # The next job on this device finds the same process, its model still loaded.
        with children.session(tmp_path / "data", None, request(weights, batch=3), 60) as again:
            assert again.child.pid == pid
            assert again.ready is not None
            assert again.ready.batch == 3
            found = again.result(again.submit(files[4:]))
            assert found.images[0] is not None
        (stats,) = children.stats()
        assert (stats["pid"], stats["models"]) == (pid, 1)
        assert stats["rss"] > 100 << 20  # torch lives there, not here
    finally:
        children.stop_all()
    assert children.pids() == []


@pytest.mark.no_database
def test_an_idle_inference_process_exits(weights: Path, tmp_path: Path) -> None:
    children = inference.Children()
    try:
        with children.session(tmp_path / "data", None, request(weights), 0.5) as session:
            child = session.child
        wait_until(lambda: not child.alive(), 20, "the idle inference process did not exit")
        assert child.process.returncode == 0
        assert children.pids() == []
        # The next job starts a fresh one.
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            assert session.child.pid != child.pid
    finally:
        children.stop_all()


@pytest.mark.no_database
def test_a_job_that_ends_early_leaves_the_process_clean_for_the_next(
    weights: Path, tmp_path: Path
) -> None:
    children = inference.Children()
    files = png_files(tmp_path / "in", 6)
    try:
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            sent = [session.submit(files[i : i + 2]) for i in range(0, 6, 2)]
            session.result(sent[0])
            pid = session.child.pid
            # Canceled here: two batches are still queued in the child.
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            assert session.child.pid == pid
            found = session.result(session.submit(files[:1]))
            assert len(found.images) == 1
            assert found.images[0] is not None
    finally:
        children.stop_all()


class _Stop(BaseException):
    pass


@pytest.mark.no_database
def test_the_jobs_check_ends_a_wait_for_a_process_that_does_not_answer(
    weights: Path, tmp_path: Path
) -> None:
    """A stopping worker or a time limit reaches a job waiting on its inference process
    through the check it passed, within one poll."""
    children = inference.Children()
    files = png_files(tmp_path / "in", 2)
    stop_at: list[float] = []

    def check() -> None:
        if stop_at and time.monotonic() >= stop_at[0]:
            raise _Stop

    try:
        with (  # noqa: PT012 - the wait that must end is inside the session
            pytest.raises(_Stop),
            children.session(tmp_path / "data", None, request(weights), 60, check=check) as session,
        ):
            pid = session.child.pid
            os.kill(pid, signal.SIGSTOP)  # it will never answer on its own
            stop_at.append(time.monotonic() + 1.0)
            session.result(session.submit(files))
        waited = time.monotonic() - stop_at[0]
        assert 0 <= waited < 2.0
        os.kill(pid, signal.SIGCONT)
        # The abandoned batch is drained, and the process serves the next job.
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            assert session.child.pid == pid
            assert session.result(session.submit(files)).images[0] is not None
    finally:
        children.stop_all()


@pytest.mark.no_database
def test_weights_the_loader_refuses_fail_the_job_not_the_process(
    weights: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    children = inference.Children()
    try:
        opening = children.session(tmp_path / "data", None, request(bad), 60)
        with pytest.raises(inference.ModelRefused, match="the model could not be loaded"):
            opening.__enter__()
        (pid,) = children.pids()
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            assert session.child.pid == pid
    finally:
        children.stop_all()


@pytest.mark.no_database
def test_a_killed_inference_process_ends_the_session_with_why(
    weights: Path, tmp_path: Path
) -> None:
    children = inference.Children()
    files = png_files(tmp_path / "in", 2)
    try:
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            os.kill(session.child.pid, signal.SIGKILL)
            session.child.process.wait()
            with pytest.raises(inference.ChildDied) as died:
                session.result(session.submit(files))
        assert str(died.value) == (
            "the inference process was killed (SIGKILL), e.g. by the kernel for running "
            "out of memory"
        )
        assert children.pids() == []
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            assert session.result(session.submit(files)).images[0] is not None
    finally:
        children.stop_all()


@pytest.mark.no_database
def test_a_process_that_died_while_idle_is_replaced_for_the_next_job(
    weights: Path, tmp_path: Path
) -> None:
    children = inference.Children()
    files = png_files(tmp_path / "in", 1)
    try:
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            dead = session.child
        os.kill(dead.pid, signal.SIGKILL)
        dead.process.wait()
        with children.session(tmp_path / "data", None, request(weights), 60) as session:
            assert session.child.pid != dead.pid
            assert session.result(session.submit(files)).images[0] is not None
        assert children.pids() == [session.child.pid]
    finally:
        children.stop_all()


def test_child_death_reasons() -> None:
    assert inference.child_died_reason(-signal.SIGSEGV) == (
        "the inference process crashed (SIGSEGV)"
    )
    assert inference.child_died_reason(1) == (
        "the inference process exited unexpectedly (exit code 1)"
    )


# --- through the jobs ----------------------------------------------------------------------------


def png_array(seed: int) -> Any:
    import cv2
    import numpy as np

    return cv2.imdecode(np.frombuffer(png_bytes(seed, (96, 80)), np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture
def inference_app(make_running_app: Callable[..., FastAPI]) -> FastAPI:
    """Standalone: one GPU-pool slot (on the CPU here), one CPU-pool slot."""
    return make_running_app(
        run_jobs=True,
        job_modules=["tests.jobkinds"],
        standalone_gpu_slots=1,
        standalone_cpu_slots=1,
        heartbeat_interval_seconds=0.5,
        scheduler_interval_seconds=0.1,
        predict_queue_seconds=30,
        autolabel_decode_threads=3,
    )


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
    wait_job(owner, job_id, 30, lambda: "the GPU-pool job never started", states={"running"})
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


def labelling(f: Factory, weights: Path, count: int) -> tuple[ApiClient, int, int, list[int]]:
    owner = f.client(f.user("owner"))
    project_id = owner.project(classes=["0", "1", "2"])["id"]
    model_id, _ = f.weights(project_id, weights)
    files = [(f"{i}.png", png_bytes(i, (96, 80))) for i in range(count)]
    uploaded = owner.upload(project_id, *files)
    assert uploaded.status_code == 201, uploaded.text
    return owner, project_id, model_id, [item["image_id"] for item in uploaded.json()["items"]]


def started_autolabel(owner: ApiClient, project_id: int, model_id: int) -> int:
    """An auto-label job two images a batch, once it has written its first batch."""
    started = owner.post(
        f"/api/projects/{project_id}/jobs/autolabel",
        json={"model_id": model_id, "conf": 0.0, "batch": 2, "imgsz": 128},
    )
    assert started.status_code == 202, started.text
    job_id: int = started.json()["id"]

    def progressed() -> dict[str, Any] | None:
        job: dict[str, Any] = owner.get(f"/api/jobs/{job_id}").json()
        assert job["state"] in ("queued", "running"), job
        return job if job["progress"] > 0 else None

    job = wait_until(progressed, 120, "the job never made progress", 0.02)
    assert job["progress"] < 0.5, "the job ran too fast to be interrupted mid-way"
    return job_id


def predicted_count(f: Factory, ids: list[int]) -> int:
    with f.sessionmaker() as db:
        return len(
            db.scalars(
                sa.select(Image.id).where(Image.id.in_(ids), Image.status == ImageStatus.predicted)
            ).all()
        )


def test_autolabel_whose_inference_process_is_killed_resumes_in_a_fresh_one(
    inference_app: FastAPI, weights: Path
) -> None:
    f = Factory(inference_app)
    owner, project_id, model_id, ids = labelling(f, weights, 40)
    job_id = started_autolabel(owner, project_id, model_id)
    (pid,) = inference.CHILDREN.pids()
    os.kill(pid, signal.SIGKILL)
    job = wait_job(owner, job_id)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["result"]["images"] == 40  # the batches written before the kill count
    assert predicted_count(f, ids) == 40
    reasons = [
        e["data"].get("reason", "")
        for e in owner.get(f"/api/jobs/{job_id}/logs").json()
        if e["kind"] == "state"
    ]
    assert any("inference process was killed (SIGKILL)" in r for r in reasons), reasons
    assert pid not in inference.CHILDREN.pids()


def test_canceled_autolabel_stops_between_batches_and_keeps_its_process_warm(
    inference_app: FastAPI, weights: Path
) -> None:
    f = Factory(inference_app)
    owner, project_id, model_id, ids = labelling(f, weights, 40)
    job_id = started_autolabel(owner, project_id, model_id)
    (pid,) = inference.CHILDREN.pids()
    assert owner.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    assert wait_job(owner, job_id)["state"] == "canceled"
    done = predicted_count(f, ids)
    assert 0 < done < 40
    time.sleep(1)
    assert predicted_count(f, ids) == done  # nothing sent ahead is written after it
    # The process is still there, and serves the next job with its model loaded.
    assert inference.CHILDREN.pids() == [pid]
    response = predict(owner, model_id)
    assert response.status_code == 200, response.text
    assert response.json()["images"][0]["boxes"]
    assert inference.CHILDREN.pids() == [pid]
