"""Starting `oculab standalone`: what the API process has loaded once it is healthy."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.factories import png_bytes
from tests.helpers import free_port, wait_job, wait_until

# Shared objects that importing each package maps into the process: none of them in
# /proc/<pid>/maps means the package was never imported. ultralytics is pure Python,
# but its first import loads torch, cv2 and numpy, so their absence rules it out too.
ML_LIBRARIES = {
    "torch": re.compile(r"/torch/|libtorch|libc10"),
    "cv2": re.compile(r"/cv2/|opencv"),
    "numpy": re.compile(r"/numpy/|numpy\.libs/"),
}


def _mapped_files(pid: int) -> set[str]:
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            paths.add(fields[5])
    return paths


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.stdout is not None
    # Bounded: a child the server left behind would hold its output open for ever.
    output: list[str] = []
    stdout = process.stdout
    reader = threading.Thread(target=lambda: output.append(stdout.read()), daemon=True)
    reader.start()
    reader.join(timeout=15)
    return output[0] if output else "(output still held open by a leftover child)"


def _left_behind(data_dir: Path) -> dict[str, list[int]]:
    """Processes still running for the server's data dir once it stopped, by what marks
    them (the inference process has no OCULAB_ variables, but its ultralytics settings
    dir is in the data dir); each is stopped here."""
    marks = {
        "inference": f"YOLO_CONFIG_DIR={data_dir}/ultralytics\0".encode(),
        "other": f"OCULAB_DATA_DIR={data_dir}\0".encode(),
    }
    found: dict[str, list[int]] = {name: [] for name in marks}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes()
            pid = int(environ.parent.name)
        except (OSError, ValueError):
            continue
        for name, mark in marks.items():
            if mark in variables:
                found[name].append(pid)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                break
    return found


def _start(tmp_path: Path, **env_overrides: str) -> tuple[subprocess.Popen[str], str]:
    """``oculab standalone`` on a free port, healthy: the process and its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(OCULAB_DATA_DIR=str(tmp_path / "data"), OCULAB_SEED_DEMO="false", **env_overrides)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "standalone", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def healthy() -> bool:
        assert process.poll() is None, _stop(process)
        try:
            return httpx.get(f"{base}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 60, lambda: _stop(process))
    return process, base


def _loaded_ml(pid: int) -> dict[str, list[str]]:
    mapped = _mapped_files(pid)
    assert any("python" in path for path in mapped)  # the maps are the server's
    return {
        name: sorted(path for path in mapped if pattern.search(path))
        for name, pattern in ML_LIBRARIES.items()
    }


def _admin(process: subprocess.Popen[str], base: str) -> httpx.Client:
    """Signed in as the first admin, whose password the server printed."""
    assert process.stdout is not None
    output = ""
    while "Login:" not in output and (line := process.stdout.readline()):
        output += line
    password = re.search(r"Login:\s+admin / (\S+)", output)
    assert password, output
    client = httpx.Client(base_url=base, timeout=60)
    login = client.post(
        "/api/auth/local/login", json={"username": "admin", "password": password.group(1)}
    )
    assert login.status_code == 200, login.text
    client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
    return client


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/maps")
def test_standalone_is_healthy_with_its_admin_ready_and_no_ml_library_loaded(
    tmp_path: Path,
) -> None:
    process, base = _start(tmp_path)
    try:
        assert _loaded_ml(process.pid) == {name: [] for name in ML_LIBRARIES}
        # Healthy means ready to sign in: the first admin was made before serving,
        # even though its password hash is made while the app loads.
        _admin(process, base).close()
    finally:
        _stop(process)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _inference_children(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"workers.ml.inference_child" in cmdline:
            out.append(child)
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/maps")
@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="needs oculab[ml]")
def test_standalone_runs_autolabel_and_predict_in_a_child_that_goes_when_idle(
    tmp_path: Path,
) -> None:
    """Pillow decodes uploads in the API process without numpy (it imports numpy only to
    convert to arrays, which the API never does), so numpy stays out as well."""
    from workers.ml import yolo

    yolo.configure_offline(tmp_path / "weights")
    from ultralytics import YOLO

    weights = tmp_path / "yolo11n.pt"
    YOLO("yolo11n.yaml").save(str(weights))
    process, base = _start(tmp_path, OCULAB_INFERENCE_IDLE_SECONDS="4")
    try:
        client = _admin(process, base)
        project = client.post("/api/projects", json={"name": "p", "classes": ["person"]})
        assert project.status_code == 201, project.text
        project_id = project.json()["id"]
        uploaded = client.post(
            f"/api/projects/{project_id}/images",
            files=[("files", (f"{i}.png", png_bytes(i, (96, 80)), "image/png")) for i in range(4)],
        )
        assert uploaded.status_code == 201, uploaded.text
        model = client.post(
            "/api/models",
            params={"project_id": project_id},
            files={"file": ("yolo11n.pt", weights.read_bytes(), "application/octet-stream")},
        )
        assert model.status_code == 202, model.text
        inspected = wait_job(client, model.json()["inspect_job_id"])
        assert inspected["state"] == "succeeded", inspected
        model_id = model.json()["model"]["id"]
        started = client.post(
            f"/api/projects/{project_id}/jobs/autolabel",
            json={"model_id": model_id, "conf": 0.0, "imgsz": 128},
        )
        assert started.status_code == 202, started.text
        labelled = wait_job(client, started.json()["id"])
        assert labelled["state"] == "succeeded", labelled
        predicted = client.post(
            f"/api/models/{model_id}/predict",
            params={"conf": 0.0, "imgsz": 128},
            files=[("files", ("a.png", png_bytes(9, (96, 80)), "image/png"))],
        )
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["device"] == "cpu"

        # The model ran in an inference process; the API process loaded no ML library.
        (child,) = _inference_children(process.pid)
        assert _loaded_ml(child)["torch"]
        assert _loaded_ml(process.pid) == {name: [] for name in ML_LIBRARIES}
        # Idle for OCULAB_INFERENCE_IDLE_SECONDS, it exits and frees its memory.
        wait_until(
            lambda: not _inference_children(process.pid),
            60,
            "the idle inference process did not exit",
            0.2,
        )
        # The next prediction starts a fresh one, which the server takes along when it stops.
        again = client.post(
            f"/api/models/{model_id}/predict",
            files=[("files", ("a.png", png_bytes(9, (96, 80)), "image/png"))],
        )
        assert again.status_code == 200, again.text
        assert len(_inference_children(process.pid)) == 1
        client.close()
    finally:
        _stop(process)
    # The inference process went with the server (what else it left is not checked here).
    assert _left_behind(tmp_path / "data")["inference"] == []
