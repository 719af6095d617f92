"""Starting `oculab standalone`: what the API process has loaded once it is healthy."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

# Shared objects that importing each package maps into the process: none of them in
# /proc/<pid>/maps means the package was never imported. ultralytics is pure Python,
# but its first import loads torch, cv2 and numpy, so their absence rules it out too.
ML_LIBRARIES = {
    "torch": re.compile(r"/torch/|libtorch|libc10"),
    "cv2": re.compile(r"/cv2/|opencv"),
    "numpy": re.compile(r"/numpy/|numpy\.libs/"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    return process.stdout.read()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/maps")
def test_standalone_is_healthy_with_its_admin_ready_and_no_ml_library_loaded(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(OCULAB_DATA_DIR=str(tmp_path / "data"), OCULAB_SEED_DEMO="false")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "standalone", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, _stop(process)
            assert time.monotonic() < deadline, _stop(process)
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        mapped = _mapped_files(process.pid)
        assert any("python" in path for path in mapped)  # the maps are the server's
        loaded = {
            name: sorted(path for path in mapped if pattern.search(path))
            for name, pattern in ML_LIBRARIES.items()
        }
        assert loaded == {name: [] for name in ML_LIBRARIES}

        # Healthy means ready to sign in: the first admin was made before serving,
        # even though its password hash is made while the app loads.
        assert process.stdout is not None
        output = ""
        while "Login:" not in output and (line := process.stdout.readline()):
            output += line
        password = re.search(r"Login:\s+admin / (\S+)", output)
        assert password, output
        login = httpx.post(
            f"{base}/api/auth/local/login",
            json={"username": "admin", "password": password.group(1)},
        )
        assert login.status_code == 200, login.text
    finally:
        _stop(process)
