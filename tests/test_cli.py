"""The `oculab` command, run as real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import noisy_jpeg
from tests.helpers import free_port, wait_until

OCULAB = [sys.executable, "-m", "server.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(extra)
    return env


class Server:
    def __init__(self, args: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [*OCULAB, *args, "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.stop()}")
            try:
                return httpx.get(f"{self.base}/api/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, lambda: f"server did not become healthy: {self.stop()}", 0.2)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        assert self.proc.stdout is not None
        self.output += self.proc.stdout.read()
        return self.output


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _demo_started(db_file: Path) -> bool:
    import sqlite3

    if not db_file.exists():
        return False
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return bool(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
        except sqlite3.OperationalError:
            return False


def test_standalone_first_start_creates_admin_and_starts_the_demo_then_reuses_data(
    tmp_path: Path, servers: list[Server]
) -> None:
    data = tmp_path / "oculab-data"
    env = _env(OCULAB_DATA_DIR=str(data))
    first = Server(["standalone"], env, free_port())
    servers.append(first)
    first.wait_healthy()
    # A second standalone on the same data dir is refused, not half-started.
    clash = subprocess.run(
        [*OCULAB, "standalone", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert clash.returncode != 0
    assert "another Oculab standalone process" in clash.stderr
    # The demo starts in the background: a project and its import job appear.
    wait_until(lambda: _demo_started(data / "oculab.db"), 60, first.stop, 0.2)
    output = first.stop()
    match = re.search(r"Login:\s+admin / (\S+)", output)
    assert match, output
    password = match.group(1)
    assert "http://127.0.0.1:" in output
    assert "Demo:" in output

    second = Server(["standalone"], env, free_port())
    servers.append(second)
    second.wait_healthy()
    client = httpx.Client(base_url=second.base)
    login = client.post("/api/auth/local/login", json={"username": "admin", "password": password})
    assert login.status_code == 200, login.text
    projects = client.get("/api/projects").json()["items"]
    assert [p["name"] for p in projects] == ["Demo: shapes"]
    jobs = client.get("/api/jobs", params={"project_id": projects[0]["id"]}).json()["items"]
    assert "datasets.import" in {j["kind"] for j in jobs}
    output = second.stop()
    assert password not in output  # printed once only
    assert "Demo:" not in output  # seeded once only
    assert (data / "oculab.db").exists()


def test_admin_password_comes_from_the_environment(tmp_path: Path, servers: list[Server]) -> None:
    env = _env(
        OCULAB_DATA_DIR=str(tmp_path / "d"),
        OCULAB_ADMIN_PASSWORD="from-env-pass",
        OCULAB_SEED_DEMO="false",
    )
    server = Server(["standalone"], env, free_port())
    servers.append(server)
    server.wait_healthy()
    response = httpx.post(
        f"{server.base}/api/auth/local/login",
        json={"username": "admin", "password": "from-env-pass"},
    )
    assert response.status_code == 200
    assert "from-env-pass" not in server.stop()


def test_sigterm_after_an_upload_stops_the_pools_without_warnings(
    tmp_path: Path, servers: list[Server]
) -> None:
    """What Kubernetes sends a pod: uvicorn shuts the app down, then ends the process by
    raising SIGTERM again, so the decode and thumbnail pools must stop in the app's
    shutdown, or the resource tracker warns of "leaked semaphore objects" in every log."""
    data = tmp_path / "d"
    env = _env(
        OCULAB_DATA_DIR=str(data), OCULAB_ADMIN_PASSWORD="pools-pass-1", OCULAB_SEED_DEMO="false"
    )
    server = Server(["standalone"], env, free_port())
    servers.append(server)
    server.wait_healthy()
    client = httpx.Client(base_url=server.base, timeout=60)
    login = client.post(
        "/api/auth/local/login", json={"username": "admin", "password": "pools-pass-1"}
    )
    assert login.status_code == 200, login.text
    csrf = {"X-CSRF-Token": client.cookies.get("oculab_csrf") or ""}
    project = client.post("/api/projects", json={"name": "P", "classes": ["a"]}, headers=csrf)
    assert project.status_code == 201, project.text
    upload = client.post(
        f"/api/projects/{project.json()['id']}/images",
        files=[("files", ("a.jpg", noisy_jpeg(), "image/jpeg"))],
        headers=csrf,
    )
    assert upload.status_code == 201, upload.text
    # Decoded in the decode pool; its thumbnail, once uploads are quiet, in the other.
    wait_until(lambda: any((data / "thumbs").rglob("*")), 60, server.stop, 0.2)
    output = server.stop()
    assert server.proc.returncode == -signal.SIGTERM, output
    assert "Application shutdown complete" in output
    assert "leaked" not in output, output


def test_api_refuses_to_start_before_migrations(
    fresh_database_url: str, tmp_path: Path, servers: list[Server]
) -> None:
    env = _env(
        OCULAB_DATABASE_URL=fresh_database_url,
        OCULAB_SECRET_KEY="k" * 40,
        OCULAB_DATA_DIR=str(tmp_path / "d"),
    )
    result = subprocess.run(
        [*OCULAB, "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "oculab migrate" in result.stderr
    migrated = subprocess.run(
        [*OCULAB, "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    server = Server(["api"], env, free_port())
    servers.append(server)
    server.wait_healthy()
    ready = httpx.get(f"{server.base}/api/ready")
    assert ready.status_code == 200
    # Server mode seeds no admin: create one with the CLI, then log in.
    created = subprocess.run(
        [*OCULAB, "create-admin", "--username", "it-admin", "--password-stdin"],
        env=env,
        input="a long password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    login = httpx.post(
        f"{server.base}/api/auth/local/login",
        json={"username": "it-admin", "password": "a long password"},
    )
    assert login.status_code == 200
    assert login.json()["is_admin"] is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "OCULAB_DATABASE_URL is required"),
        (
            {"OCULAB_DATABASE_URL": "sqlite:////tmp/x.db", "OCULAB_SECRET_KEY": "changeme"},
            "OCULAB_SECRET_KEY",
        ),
        (
            {
                "OCULAB_DATABASE_URL": "sqlite:////tmp/x.db",
                "OCULAB_SECRET_KEY": "k" * 40,
                "OCULAB_OIDC_ISSUER": "https://idp.example",
            },
            "OCULAB_OIDC_CLIENT_ID",
        ),
        (
            {
                "OCULAB_DATABASE_URL": "sqlite:////tmp/x.db",
                "OCULAB_SECRET_KEY": "k" * 40,
                "OCULAB_OIDC_PROJECT_ROLES": '{"g": {"P": "superuser"}}',
            },
            "oidc_project_roles",
        ),
    ],
)
def test_api_reports_configuration_errors_clearly(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [*OCULAB, "api"], env=_env(**env), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "configuration error" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_create_admin_resets_an_existing_password(fresh_database_url: str, tmp_path: Path) -> None:
    env = _env(OCULAB_DATABASE_URL=fresh_database_url, OCULAB_DATA_DIR=str(tmp_path / "d"))
    subprocess.run([*OCULAB, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    first = subprocess.run(
        [*OCULAB, "create-admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert first.returncode == 0
    assert "created" in first.stdout
    assert re.search(r"password: \S+", first.stdout)
    short = subprocess.run(
        [*OCULAB, "create-admin", "--password-stdin"],
        env=env,
        input="x\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert short.returncode != 0
    assert "at least 8" in short.stderr
    again = subprocess.run(
        [*OCULAB, "create-admin", "--password-stdin"],
        env=env,
        input="another long one\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0
    assert "updated" in again.stdout


def test_migrate_in_server_mode_refuses_to_fall_back_to_sqlite(tmp_path: Path) -> None:
    env = _env(
        OCULAB_MODE="server", OCULAB_SECRET_KEY="k" * 40, OCULAB_DATA_DIR=str(tmp_path / "d")
    )
    result = subprocess.run(
        [*OCULAB, "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "OCULAB_DATABASE_URL is required" in result.stderr
    assert not (tmp_path / "d" / "oculab.db").exists()


def test_migrate_check_reports_whether_the_schema_is_current(
    fresh_database_url: str, tmp_path: Path
) -> None:
    env = _env(OCULAB_DATABASE_URL=fresh_database_url, OCULAB_DATA_DIR=str(tmp_path / "d"))
    before = subprocess.run(
        [*OCULAB, "migrate", "--check"], env=env, capture_output=True, text=True, timeout=60
    )
    assert before.returncode != 0
    assert "not at the latest revision" in before.stderr
    subprocess.run([*OCULAB, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    after = subprocess.run(
        [*OCULAB, "migrate", "--wait", "10"], env=env, capture_output=True, text=True, timeout=60
    )
    assert after.returncode == 0, after.stderr
    assert "schema at" in after.stdout


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--imgsz", "33"], "imgsz"),
        (["--epochs", "0"], "epochs"),
        (["--warmup-epochs", "-1"], "warmup_epochs"),
    ],
)
@pytest.mark.no_database  # the demo's own standalone SQLite, whatever the test database
def test_demo_refuses_a_plan_the_api_would_refuse(
    tmp_path: Path, flags: list[str], reason: str
) -> None:
    """The demo's training run is held to the train endpoint's rules, before anything
    is created: no project, no job."""
    import sqlite3

    data = tmp_path / "data"
    done = subprocess.run(
        [*OCULAB, "demo", *flags],
        env=_env(OCULAB_DATA_DIR=str(data), OCULAB_FSYNC="false"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"oculab demo: the demo cannot train with {reason}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    with sqlite3.connect(data / "oculab.db") as conn:
        assert conn.execute("SELECT count(*) FROM projects").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
