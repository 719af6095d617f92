"""The training child on the CPU, run as the worker runs it (``python -m
workers.ml.train_child SPEC`` with the supervisor's environment): it reports the device
it trains on, resumes on this attempt's device and batch rather than the checkpoint's,
never tries the network, and ends an out-of-memory run with a message that says so.

A CUDA out-of-memory error cannot happen on a CPU: a ``sitecustomize`` written by the test
makes torch's convolutions raise ``torch.OutOfMemoryError`` above a batch size, as the
CUDA allocator would (the boundary is faked, ultralytics and our code run for real).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI

from server.demo import shapes
from server.training import tasks
from tests.factories import Factory
from tests.helpers import wait_job, wait_until
from workers import cpus
from workers.ml.train_child import MEMORY_FRACTION_ENV

if importlib.util.find_spec("ultralytics") is None:  # not importing it: workers configure it
    pytest.skip("the ml extra is not installed", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent

# Records every attempt to reach another machine, and refuses it.
NO_NETWORK = """
import os, socket

_LOG = os.environ["NETWORK_LOG"]


def _refuse(what, *args, **kwargs):
    with open(_LOG, "a") as fh:
        fh.write(f"{what} {args!r}\\n")
    raise OSError(f"network refused by the test: {what}")


_connect = socket.socket.connect


def _checked_connect(self, address, *a, **k):
    if self.family == socket.AF_UNIX:
        return _connect(self, address, *a, **k)
    return _refuse("connect", address)


socket.socket.connect = _checked_connect
socket.socket.connect_ex = lambda self, address: _refuse("connect_ex", address)
socket.create_connection = lambda *a, **k: _refuse("create_connection", *a)
socket.getaddrinfo = lambda *a, **k: _refuse("getaddrinfo", *a)
socket.gethostbyname = lambda *a, **k: _refuse("gethostbyname", *a)
"""

# The CUDA allocator's answer to a training batch larger than FAKE_OOM_ABOVE, at the
# model's first convolution (RGB images of FAKE_OOM_IMGSZ, with gradients).
FAKE_OOM = """
import os

import torch

_ABOVE = int(os.environ["FAKE_OOM_ABOVE"])
_IMGSZ = int(os.environ.get("FAKE_OOM_IMGSZ", "64"))
_forward = torch.nn.Conv2d.forward


def _forward_or_oom(self, x, *a, **k):
    if torch.is_grad_enabled() and x.shape[1:] == (3, _IMGSZ, _IMGSZ) and x.shape[0] > _ABOVE:
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (faked by the test)"
        )
    return _forward(self, x, *a, **k)


torch.nn.Conv2d.forward = _forward_or_oom
"""


def hook_dir(tmp_path: Path, *sources: str) -> Path:
    folder = tmp_path / "hook"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text("\n".join(sources))
    return folder


def shapes_dataset(root: Path, n_train: int = 8, n_val: int = 4, size: int = 64) -> Path:
    """A YOLO dataset of rendered shapes, laid out like a job's snapshot."""
    for split, seeds in (("train", range(n_train)), ("val", range(100, 100 + n_val))):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for seed in seeds:
            png, boxes = shapes.render(seed, size=size)
            (root / "images" / split / f"{seed}.png").write_bytes(png)
            (root / "labels" / split / f"{seed}.txt").write_text(
                "".join(
                    f"{b.class_id} {b.x + b.w / 2:.6f} {b.y + b.h / 2:.6f} {b.w:.6f} {b.h:.6f}\n"
                    for b in boxes
                )
            )
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(shapes.CLASSES))
    data = root / "data.yaml"
    data.write_text(
        f"path: {json.dumps(str(root))}\ntrain: images/train\nval: images/val\nnames:\n{names}"
    )
    return data


def child_spec(here: Path, data: Path, **overrides: Any) -> Path:
    here.mkdir(parents=True, exist_ok=True)
    spec = {
        "base": "yolo11n.yaml",
        "data": str(data),
        "epochs": 1,
        "imgsz": 64,
        "batch": 4,
        "seed": 0,
        "warmup_epochs": 0.0,
        "project": str(here),
        "save_dir": str(here / "train"),
        "resume_dir": str(here),
        "device": "cpu",
        "workers": 0,
        "deterministic": True,
        "last": str(here / "train" / "weights" / "last.pt"),
        "events": str(here / "events.jsonl"),
        "lease_seconds": None,
        **overrides,
    }
    path = here / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def child_env(data_dir: Path, hook: Path | None = None, **extra: str) -> dict[str, str]:
    """The supervisor's own environment for a CPU slot, plus the test's hook."""
    ctx = SimpleNamespace(gpu_index=None, settings=SimpleNamespace(data_dir=data_dir))
    env = tasks._child_env(ctx)  # type: ignore[arg-type]
    if hook is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(hook), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def start_child(spec: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(spec.parent / "train.log", "ab")  # noqa: SIM115 - the child holds it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.ml.train_child", str(spec)],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def run_child(spec: Path, env: dict[str, str], timeout: float = 300) -> int:
    child = start_child(spec, env)
    try:
        return child.wait(timeout=timeout)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def events(here: Path) -> list[dict[str, Any]]:
    path = here / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def of_type(here: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in events(here) if e["type"] == kind]


def train_log(here: Path) -> str:
    return (here / "train.log").read_text(errors="replace")


# --- pure functions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "expected"),
    [
        (16, [], 16),  # no cgroup v2 limit
        (16, ["max 100000\n"], 16),  # a cgroup without a quota
        (64, ["200000 100000\n", "max 100000\n"], 2),  # a pod limited to 2 CPUs
        (64, ["max 100000\n", "150000 100000\n"], 1),  # 1.5 CPUs on an ancestor: 1
        (4, ["800000 100000\n"], 4),  # pinned to 4 cores under a looser quota
        (8, ["50000 100000\n"], 1),  # half a CPU still runs the loop
        (8, ["garbage\n", ""], 8),  # unreadable contents are no limit
    ],
)
def test_usable_cpus_follow_affinity_and_the_cgroup_quota(
    affinity: int, cpu_max: list[str], expected: int
) -> None:
    assert cpus.usable(affinity, cpu_max) == expected


def test_loader_workers_leave_a_cpu_for_training_and_none_on_a_cpu_slot() -> None:
    assert tasks.loader_workers(True, cpus.usable(64, ["200000 100000"])) == 1
    assert tasks.loader_workers(True, 64) == 8
    assert tasks.loader_workers(True, 5) == 4
    assert tasks.loader_workers(True, 1) == 0
    assert tasks.loader_workers(False, 64) == 0
    # This machine's own answer stays within what it may use.
    assert 1 <= cpus.usable() <= len(os.sched_getaffinity(0))


def test_out_of_memory_message_says_what_ran_out_and_what_to_change() -> None:
    from workers.ml.train_child import oom_message

    assert oom_message(True, "NVIDIA H200", int(139.8 * 2**30), 16, 16, 640) == (
        "the GPU ran out of memory (NVIDIA H200, 140 GiB) at batch 16, image size 640: "
        "lower the batch or the image size"
    )
    assert oom_message(True, "NVIDIA H200", 2**28, 8, 64, 640) == (
        "the GPU ran out of memory (NVIDIA H200, 0.25 GiB) at batch 8 (lowered from 64), "
        "image size 640: lower the batch or the image size"
    )
    assert oom_message(False, None, None, 4, -1, 320) == (
        "the CPU ran out of memory at batch 4, image size 320: lower the batch or the image size"
    )


def test_out_of_memory_is_recognised_however_it_is_wrapped() -> None:
    import torch

    from workers.ml.yolo import is_out_of_memory

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    wrapped = RuntimeError("validation failed")
    wrapped.__cause__ = torch.OutOfMemoryError("CUDA out of memory")
    assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("no labels found"))


def test_child_env_pins_the_slot_device_and_keeps_ultralytics_talking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YOLO_VERBOSE", "False")  # as configure_offline leaves a worker
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("OCULAB_SECRET_KEY", "not for children")
    monkeypatch.setenv(MEMORY_FRACTION_ENV, "0.25")
    env = child_env(tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU slot sees no GPU at all
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["YOLO_VERBOSE"] == "True"
    assert env["YOLO_OFFLINE"] == "1"
    assert env[MEMORY_FRACTION_ENV] == "0.25"
    assert "OCULAB_SECRET_KEY" not in env
    monkeypatch.delenv(MEMORY_FRACTION_ENV)
    assert MEMORY_FRACTION_ENV not in child_env(tmp_path)


def test_describe_device_is_one_readable_line() -> None:
    line = tasks.describe_device(
        {
            "cuda_visible_devices": "GPU-8f3c",
            "device_count": 1,
            "device": "cuda:0",
            "uuid": "8f3c",
            "name": "NVIDIA H200",
            "model_device": "cuda:0",
            "dtype": "float32",
            "amp": True,
            "batch": 16,
            "workers": 7,
            "imgsz": 640,
            "deterministic": False,
        }
    )
    assert line == (
        "training on cuda:0 (NVIDIA H200, 8f3c; CUDA_VISIBLE_DEVICES=GPU-8f3c, 1 visible): "
        "model on cuda:0 in float32, AMP on, batch 16, 7 loader workers, image size 640, "
        "not deterministic"
    )
    assert "\n" not in line


# --- the child, for real -------------------------------------------------------------------


@pytest.mark.no_database
def test_training_never_tries_the_network(tmp_path: Path) -> None:
    data = shapes_dataset(tmp_path / "data")
    here = tmp_path / "run"
    network = tmp_path / "network.log"
    env = child_env(tmp_path, hook_dir(tmp_path, NO_NETWORK), NETWORK_LOG=str(network))
    # The hook is live in the child: it refuses and records (checked on a throwaway run).
    probe = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 80))"],
        env=env,
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    assert probe.returncode != 0
    assert network.read_text().startswith("create_connection")
    network.unlink()

    code = run_child(child_spec(here, data), env)

    assert code == 0, train_log(here)[-3000:]
    assert of_type(here, "done"), events(here)
    assert not network.exists(), network.read_text()


@pytest.mark.no_database
def test_child_reports_the_device_it_trains_on(tmp_path: Path) -> None:
    data = shapes_dataset(tmp_path / "data")
    here = tmp_path / "run"
    code = run_child(child_spec(here, data, batch=4, deterministic=False), child_env(tmp_path))
    assert code == 0, train_log(here)[-3000:]
    (device,) = of_type(here, "device")
    assert device == {
        "type": "device",
        "cuda_visible_devices": "",
        "device_count": 0,
        "device": "cpu",
        "uuid": None,
        "name": "cpu",
        "memory_bytes": None,
        "model_device": "cpu",
        "dtype": "float32",
        "amp": False,
        "batch": 4,
        "workers": 0,
        "imgsz": 64,
        "deterministic": False,
    }
    (done,) = of_type(here, "done")
    assert done["batch"] == 4
    # ultralytics' own lines reach train.log now that the child is verbose.
    assert "CPU" in train_log(here)
    assert "Starting training" in train_log(here)


@pytest.mark.no_database
def test_resume_trains_on_this_attempts_device_and_batch(tmp_path: Path) -> None:
    """An attempt stopped after its first epoch on "GPU 0" with batch 4 is resumed on a
    CPU slot whose spec says batch 2: the resumed run uses the CPU and batch 2."""
    import torch

    from workers.ml import checkpoints

    data = shapes_dataset(tmp_path / "data")
    first = tmp_path / "attempt-1"
    env = child_env(tmp_path)
    child = start_child(child_spec(first, data, epochs=2, batch=4), env)
    try:

        def kept_first_epoch() -> bool:
            assert child.poll() is None, train_log(first)[-3000:]
            return (first / "resume-0001" / "last.pt").is_file()

        wait_until(kept_first_epoch, 300, lambda: train_log(first)[-3000:], 0.02)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert not (first / "resume-0002").exists(), "the first run finished before it was stopped"
    assert [e["batch"] for e in of_type(first, "device")] == [4]

    # The checkpoint was made on a GPU, with other loader workers: rewrite it so.
    second = tmp_path / "attempt-2"
    last = second / "train" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    checkpoint = checkpoints.load(first / "resume-0001" / "last.pt")
    assert checkpoint["train_args"]["batch"] == 4
    checkpoint["train_args"].update(device="0", workers=6, amp=True)
    torch.save(checkpoint, last)
    assert checkpoints.load(last)["train_args"]["device"] == "0"

    code = run_child(child_spec(second, data, epochs=2, batch=2, workers=0), env)

    assert code == 0, train_log(second)[-3000:]
    assert of_type(second, "resume") == [{"type": "resume", "after_epoch": 1}]
    (device,) = of_type(second, "device")
    assert device["batch"] == 2
    assert (device["device"], device["model_device"]) == ("cpu", "cpu")
    assert device["workers"] == 0
    assert device["amp"] is False
    assert [e["epoch"] for e in of_type(second, "epoch")] == [2]
    (done,) = of_type(second, "done")
    assert done["batch"] == 2


@pytest.mark.no_database
def test_ultralytics_halves_the_batch_on_out_of_memory_and_the_child_reports_it(
    tmp_path: Path,
) -> None:
    data = shapes_dataset(tmp_path / "data")
    here = tmp_path / "run"
    env = child_env(tmp_path, hook_dir(tmp_path, FAKE_OOM), FAKE_OOM_ABOVE="2")
    code = run_child(child_spec(here, data, batch=8), env)
    assert code == 0, train_log(here)[-3000:]
    assert [e["batch"] for e in of_type(here, "device")] == [8]
    assert [(e["was"], e["batch"]) for e in of_type(here, "batch")] == [(8, 4), (4, 2)]
    (done,) = of_type(here, "done")
    assert done["batch"] == 2


@pytest.mark.no_database
def test_child_that_runs_out_of_memory_says_so(tmp_path: Path) -> None:
    data = shapes_dataset(tmp_path / "data")
    here = tmp_path / "run"
    env = child_env(tmp_path, hook_dir(tmp_path, FAKE_OOM), FAKE_OOM_ABOVE="0")
    code = run_child(child_spec(here, data, batch=8), env)
    assert code != 0
    (error,) = of_type(here, "error")
    # ultralytics tried 8, 4, 2 and 1 before giving up.
    assert error["message"] == (
        "the CPU ran out of memory at batch 1 (lowered from 8), image size 64: "
        "lower the batch or the image size"
    )
    assert error["out_of_memory"] is True
    assert not of_type(here, "done")
    assert "OutOfMemoryError" in train_log(here)  # the traceback, for the job log


@pytest.mark.no_database
def test_a_bad_memory_fraction_is_refused(tmp_path: Path) -> None:
    here = tmp_path / "run"
    env = child_env(tmp_path, None, **{MEMORY_FRACTION_ENV: "1.5"})
    code = run_child(child_spec(here, tmp_path / "missing.yaml"), env)
    assert code == 2
    (error,) = of_type(here, "error")
    assert MEMORY_FRACTION_ENV in error["message"]


# --- through the job ------------------------------------------------------------------------


@pytest.fixture
def oom_above_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training children started by the app's worker meet a GPU that holds batch 2."""
    hook = hook_dir(tmp_path, FAKE_OOM)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_OOM_ABOVE", "2")


def shapes_project_via(f: Factory, n_images: int = 12) -> tuple[Factory, Any, int]:
    from server.models.auth import User
    from tests.factories import labeled_shapes_project

    owner_row = f.user("owner")
    with f.sessionmaker() as db, db.begin():
        user = db.get(User, owner_row.id)
        assert user is not None
        project = labeled_shapes_project(
            db, f.app.state.storage, f.app.state.settings, user, n_images=n_images
        )
        project_id = project.id
    return f, f.client(owner_row), project_id


def test_training_job_logs_its_device_and_registers_the_batch_used(
    oom_above_two: None, ml_app: FastAPI
) -> None:
    _, owner, project_id = shapes_project_via(Factory(ml_app))
    started = owner.post(
        f"/api/projects/{project_id}/jobs/train",
        json={
            "epochs": 1,
            "imgsz": 64,
            "batch": 8,
            "val_fraction": 0.25,
            "warmup_epochs": 0.0,
            "deterministic": False,
        },
    )
    assert started.status_code == 202, started.text
    job = wait_job(owner, started.json()["id"], timeout=300)
    assert job["state"] == "succeeded", job
    device = job["result"]["device"]
    assert (device["device"], device["model_device"], device["cuda_visible_devices"]) == (
        "cpu",
        "cpu",
        "",
    )
    assert device["batch"] == 8  # what it started with...
    assert device["batch_used"] == 2  # ...and what it trained with
    assert device["deterministic"] is False
    lines = [
        e["data"].get("line", "")
        for e in owner.get(f"/api/jobs/{job['id']}/logs").json()
        if e["kind"] == "log"
    ]
    assert any(line.startswith("training on cpu: model on cpu in float32") for line in lines), lines
    assert any("lowered the batch to 2" in line for line in lines), lines
    model = owner.get(f"/api/models/{job['result']['model_id']}").json()
    assert model["hyperparams"]["batch"] == 8
    assert model["hyperparams"]["batch_used"] == 2
    assert model["hyperparams"]["deterministic"] is False
    assert model["hyperparams"]["device"] == "cpu"


@pytest.fixture
def oom_always(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = hook_dir(tmp_path, FAKE_OOM)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_OOM_ABOVE", "0")


def test_training_job_that_runs_out_of_memory_fails_saying_so(
    oom_always: None, ml_app: FastAPI
) -> None:
    _, owner, project_id = shapes_project_via(Factory(ml_app), n_images=8)
    started = owner.post(
        f"/api/projects/{project_id}/jobs/train",
        json={"epochs": 1, "imgsz": 64, "batch": 4, "val_fraction": 0.25},
    )
    job = wait_job(owner, started.json()["id"], timeout=300)
    assert job["state"] == "failed", job
    assert job["error"] == (
        "training failed: the CPU ran out of memory at batch 1 (lowered from 4), image size "
        "64: lower the batch or the image size"
    )


@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_deterministic_must_be_a_boolean(make_app: Callable[..., FastAPI], value: Any) -> None:
    f = Factory(make_app())
    owner = f.client(f.user("owner"))
    project = owner.project()
    response = owner.post(
        f"/api/projects/{project['id']}/jobs/train", json={"deterministic": value}
    )
    assert response.status_code == 422, response.text
    assert "deterministic" in response.text
