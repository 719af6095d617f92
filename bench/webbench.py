"""What the web app's benches share: a real ``oculab standalone`` on a free port with a
temp data dir, a signed-in client, and the browser half run with the frontend's
Playwright in the system's Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
OCULAB = str(Path(sys.executable).with_name("oculab"))
SHOTS = ROOT / "frontend" / "test-results" / "screenshots"
PASSWORD = "bench-ui-admin-password"


class BenchError(RuntimeError):
    """The bench cannot go on (no build, the server or the browser failed)."""


@dataclass
class Standalone:
    url: str
    data_dir: Path

    @property
    def database_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'oculab.db').resolve()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def standalone(prefix: str) -> Iterator[Standalone]:
    """``oculab standalone`` (no demo, no fsync, one CPU slot) until the block ends; its
    data dir goes with it."""
    if not (ROOT / "server" / "web" / "static" / "index.html").exists():
        raise BenchError("no web build: run `make frontend` first")
    data_dir = Path(tempfile.mkdtemp(prefix=f"oculab-bench-{prefix}-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(
        OCULAB_DATA_DIR=str(data_dir),
        OCULAB_ADMIN_PASSWORD=PASSWORD,
        OCULAB_SEED_DEMO="false",
        OCULAB_FSYNC="false",
        OCULAB_STANDALONE_GPU_SLOTS="0",
        OCULAB_STANDALONE_CPU_SLOTS="1",
    )
    log = (data_dir / "server.log").open("wb")
    server = subprocess.Popen(
        [OCULAB, "standalone", "--host", "127.0.0.1", "--port", str(port)],
        cwd=data_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the server did not start; see {data_dir / 'server.log'}")
            time.sleep(0.25)
        yield Standalone(url=url, data_dir=data_dir)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def signed_in(url: str, timeout: float = 120) -> tuple[httpx.Client, dict[str, str]]:
    """A client with the admin's session cookie, and the CSRF header its writes need."""
    http = httpx.Client(base_url=url, timeout=timeout)
    login = http.post("/api/auth/local/login", json={"username": "admin", "password": PASSWORD})
    login.raise_for_status()
    return http, {"X-CSRF-Token": http.cookies.get("oculab_csrf") or ""}


def cookies(http: httpx.Client) -> list[dict[str, str]]:
    """The session for the browser's context."""
    return [{"name": name, "value": value} for name, value in http.cookies.items()]


def run_browser(script: str, config: dict[str, Any]) -> dict[str, Any]:
    """Runs ``frontend/scripts/<script>`` with ``config``; its last stdout line is JSON."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    print("driving Chromium", file=sys.stderr)
    run = subprocess.run(
        ["node", str(ROOT / "frontend" / "scripts" / script), json.dumps(config)],
        cwd=ROOT / "frontend",
        capture_output=True,
        text=True,
        env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
        check=False,
    )
    if run.returncode != 0:
        raise BenchError(f"{script} failed:\n{run.stdout}\n{run.stderr}")
    figures: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return figures
