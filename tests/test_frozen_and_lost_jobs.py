"""Outages with real processes: PostgreSQL restarting or gone for longer than the
heartbeat timeout, a GPU worker frozen mid-training, a standalone process frozen, and
cancels of jobs whose worker is frozen or gone.

Redis db 13 (test_faults.py uses 14). Anything that stops PostgreSQL does it to a
throwaway cluster of the test's own (tests/pgcluster.py), never the shared one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from server import migrate
from server.jobs import service as jobs
from server.kit.db import utcnow
from server.kit.storage import Storage
from server.models.auth import User
from server.models.job import Job, JobEvent, JobState, WorkerRow
from server.models.registered_model import RegisteredModel
from server.tokens import service as tokens
from tests import pgcluster
from tests.factories import labeled_shapes_project, png_bytes
from tests.helpers import BACKEND, free_port, redis_db_url, wait_job, wait_until
from tests.jobkinds import completions
from tests.processes import FINISHED, REPO, Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BACKEND != "postgres", reason="server mode: PostgreSQL and Redis"),
]

REDIS_URL = redis_db_url(1)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/health").status_code == 200
    except httpx.HTTPError:
        return False


def _pid(worker_id: str) -> int:
    return int(worker_id.rsplit("-", 2)[-2])


class OutageCluster(Cluster):
    """The fault tests' cluster on Redis db 13, plus an `oculab api` process."""

    def __init__(self, database_url: str, data_dir: Path, **settings: str) -> None:
        super().__init__(database_url, data_dir, redis_url=REDIS_URL, **settings)
        self.api: subprocess.Popen[bytes] | None = None
        self.api_url = ""

    def start_api(self) -> None:
        port = free_port()
        self.api = self._spawn("api", "--port", str(port))
        self.api_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(self.api_url), 60, self.logs, 0.2)

    def stop(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.send_signal(signal.SIGTERM)
            try:
                self.api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait()
        super().stop()

    def token(self, user_id: int) -> str:
        with self.maker() as db, db.begin():
            user = db.get(User, user_id)
            assert user is not None
            return tokens.create(db, user, "outage-test", 1, ip=None)[1]

    def cancel(self, job_id: int, user_id: int, heartbeat_timeout: float | None = None) -> Job:
        with self.maker() as db, db.begin():
            user = db.get(User, user_id)
            job = db.get(Job, job_id)
            assert user is not None
            assert job is not None
            if heartbeat_timeout is None:
                return jobs.cancel(db, job, user, ip=None)
            return jobs.cancel(db, job, user, ip=None, heartbeat_timeout=heartbeat_timeout)

    def worker_row(self, worker_id: str) -> WorkerRow:
        with self.maker() as db:
            row = db.get(WorkerRow, worker_id)
            assert row is not None
            return row

    def train(self, user_id: int, epochs: int, n_images: int = 16) -> tuple[int, int]:
        """A tiny real training job; returns (project id, job id)."""
        storage = Storage(self.data_dir, fsync=False)
        storage.ensure_layout()
        with self.maker() as db, db.begin():
            owner = db.get(User, user_id)
            assert owner is not None
            project = labeled_shapes_project(db, storage, self.settings, owner, n_images=n_images)
            job = jobs.submit(
                db,
                self.settings,
                self.kinds,
                kind="training.train",
                user=owner,
                project_id=project.id,
                params={
                    "base": "yolo11n.yaml",
                    "epochs": epochs,
                    "imgsz": 64,
                    "batch": 8,
                    "val_fraction": 0.25,
                    "seed": 0,
                    "warmup_epochs": 0,
                    "only_reviewed": True,
                },
            )
            return project.id, job.id

    def epochs_in_files(self, job_id: int) -> int:
        """Epochs the training children wrote to their own events files so far."""
        total = 0
        for path in (self.data_dir / "runs" / f"job-{job_id}").rglob("events.jsonl"):
            total = max(total, path.read_text(errors="replace").count('"type": "epoch"'))
        return total

    def reported_epochs(self, job_id: int) -> list[int]:
        with self.maker() as db:
            return [
                int(e.data["epoch"])
                for e in db.scalars(
                    sa.select(JobEvent)
                    .where(JobEvent.job_id == job_id, JobEvent.kind == "metrics")
                    .order_by(JobEvent.id)
                )
            ]

    def models_of(self, job_id: int) -> list[int]:
        with self.maker() as db:
            return list(
                db.scalars(sa.select(RegisteredModel.id).where(RegisteredModel.job_id == job_id))
            )

    def running_without_a_heartbeat(self) -> list[int]:
        """Running jobs no live process vouches for (their heartbeat is stale)."""
        cutoff = utcnow().timestamp() - self.settings.heartbeat_timeout_seconds
        with self.maker() as db:
            return [
                job.id
                for job in db.scalars(sa.select(Job).where(Job.state == JobState.running))
                if job.heartbeat_at is None or job.heartbeat_at.timestamp() < cutoff
            ]


@pytest.fixture
def outage_cluster(tmp_path: Path) -> Iterator[Callable[..., OutageCluster]]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    made: list[OutageCluster] = []

    def make(database_url: str, **settings: str) -> OutageCluster:
        data = tmp_path / f"cluster{len(made)}"
        data.mkdir()
        cluster = OutageCluster(database_url, data, **settings)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
    client.flushdb()
    client.close()


@pytest.fixture
def database(fresh_database_url: str) -> str:
    migrate.upgrade(fresh_database_url)
    return fresh_database_url


def _training_children(marker: str) -> list[int]:
    """Live (not zombie) train_child processes whose spec lies under ``marker``: the
    training processes themselves, not what they fork (a fork has its parent's command
    line until it execs, and data-loader workers keep it)."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/stat", "rb") as fh:
                # pid (comm) state ppid ...: comm may hold spaces, so split after it.
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if b"workers.ml.train_child" in cmdline and marker.encode() in cmdline:
            found[int(entry)] = ppid
    return [pid for pid, ppid in found.items() if ppid not in found]


class ChildSampler:
    """Counts training children ten times a second: at most one may ever be alive."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.most = 0
        self.seen: set[int] = set()
        # pid: (first, last) monotonic time it was seen alive, for the failure message.
        self.lives: dict[int, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            alive = _training_children(self.marker)
            now = time.monotonic()
            for pid in alive:
                self.lives[pid] = (self.lives.get(pid, (now, now))[0], now)
            self.seen.update(alive)
            self.most = max(self.most, len(alive))

    def timeline(self, since: float) -> str:
        return "; ".join(
            f"pid {pid} alive {first - since:+.2f}..{last - since:+.2f} s"
            for pid, (first, last) in sorted(self.lives.items(), key=lambda kv: kv[1])
        )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- cancel, re-queue and revival with a frozen worker ---------------------------------


def test_cancel_ends_jobs_whose_worker_is_frozen_or_gone(
    database: str, outage_cluster: Callable[..., OutageCluster]
) -> None:
    c = outage_cluster(database)
    c.start_scheduler()
    worker = c.start_worker()
    c.wait_for_workers(1)
    user = c.user("u")

    # 1. Cancel asked while the worker is frozen: the reconciler re-queues the job when
    # the worker goes silent, and a re-queued job asked to cancel ends canceled.
    first = c.submit("test.sleep_count", user, seconds=60)
    running = c.wait([first], (JobState.running,))[0]
    assert running.worker_id is not None
    worker_id = running.worker_id
    worker.send_signal(signal.SIGSTOP)
    try:
        assert c.cancel(first, user).state == JobState.running  # its worker looks alive
        done = c.wait([first], timeout=20)[0]
        assert done.state == JobState.canceled, c.logs()
        assert c.worker_row(worker_id).stopped_at is not None  # taken for dead
    finally:
        worker.send_signal(signal.SIGCONT)

    # 2. The worker comes back: it learns it lost the job (nothing more is written for
    # it) and counts again for admission without a restart: it is the only worker.
    wait_until(
        lambda: c.worker_row(worker_id).stopped_at is None, 10, lambda: "not revived\n" + c.logs()
    )
    second = c.submit("test.sleep_count", user, seconds=60)
    running = c.wait([second], (JobState.running,), timeout=15)[0]
    assert running.worker_id == worker_id
    assert c.job(first).state == JobState.canceled
    assert completions(c.data_dir) == []

    # 3. Cancel of a job no live process runs (its worker frozen, no reconciler to
    # notice): it ends at once instead of answering 200 and changing nothing.
    assert c.scheduler is not None
    c.scheduler.send_signal(signal.SIGTERM)
    assert c.scheduler.wait(timeout=20) == 0
    worker.send_signal(signal.SIGSTOP)
    try:
        time.sleep(c.settings.heartbeat_timeout_seconds + 0.5)
        canceled = c.cancel(second, user, c.settings.heartbeat_timeout_seconds)
        assert canceled.state == JobState.canceled
    finally:
        worker.send_signal(signal.SIGCONT)
    # The worker notices and stops the job (its heartbeat or the job's own next write,
    # whichever comes first); it never completes nor changes state again.
    stopped = re.compile(rf"job {second} attempt 1: .*no longer")
    wait_until(
        lambda: bool(stopped.search(c.logs())), 10, lambda: "the worker went on\n" + c.logs()
    )
    time.sleep(1)
    assert c.job(second).state == JobState.canceled
    assert completions(c.data_dir) == []


# --- PostgreSQL restarts and outages ---------------------------------------------------


class ApiClients:
    """Eight API clients reading and submitting while the database comes and goes."""

    def __init__(self, base: str, token: str, project_id: int, n: int = 8) -> None:
        self.codes: Counter[int] = Counter()
        self.errors: list[str] = []
        self.exports: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        headers = {"Authorization": f"Bearer {token}"}
        self._threads = [
            threading.Thread(target=self._run, args=(base, headers, project_id, i), daemon=True)
            for i in range(n)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, base: str, headers: dict[str, str], project_id: int, i: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    if i == 0 and n % 20 == 0:
                        response = http.post(
                            f"/api/projects/{project_id}/exports", json={"format": "yolo"}
                        )
                        if response.status_code == 202:
                            with self._lock:
                                self.exports.append(int(response.json()["id"]))
                    elif i % 2:
                        response = http.get("/api/jobs", params={"project_id": project_id})
                    else:
                        response = http.get(f"/api/projects/{project_id}")
                    with self._lock:
                        self.codes[response.status_code] += 1
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(repr(exc))
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _recovery(c: OutageCluster, user: int, since: float) -> tuple[float, float]:
    """Seconds from ``since`` until the API is ready and until a new job has run."""
    probe = c.submit("test.sleep_count", user, seconds=0.1)

    def ready() -> bool:
        try:
            return httpx.get(f"{c.api_url}/api/ready").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, lambda: "API not ready\n" + c.logs())
    api = time.monotonic() - since
    assert c.wait([probe], timeout=30)[0].state == JobState.succeeded, c.logs()
    return api, time.monotonic() - since


def test_postgres_restart_and_outage_leave_no_phantom_job(
    outage_cluster: Callable[..., OutageCluster],
) -> None:
    reason = pgcluster.available()
    if reason:
        pytest.skip(reason)
    with pgcluster.throwaway_postgres() as pg:
        # Timeout 6 s: the restart is shorter than it, the outage longer.
        c = outage_cluster(pg.url, heartbeat_timeout_seconds="6", cpu_jobs_per_user="20")
        c.start_scheduler()
        c.start_worker(slots=2)
        c.start_worker(slots=2)
        c.start_worker(pool="gpu")
        c.start_api()
        c.wait_for_workers(3)
        user = c.user("lab")
        project_id, training = c.train(user, epochs=10)
        clients = ApiClients(c.api_url, c.token(user), project_id)
        sleeps: list[int] = []
        timings: dict[str, tuple[float, float]] = {}
        try:
            for fault in ("restart", "outage"):
                batch = [c.submit("test.sleep_count", user, seconds=4) for _ in range(4)]
                sleeps += batch
                c.wait(batch, (JobState.running, *FINISHED), timeout=30)
                if fault == "restart":
                    # Mid-training, with epochs still to come.
                    wait_until(
                        lambda: c.epochs_in_files(training) >= 1,
                        120,
                        lambda: "training did not start\n" + c.logs(),
                    )
                    pg.restart(down_for=2.0)
                else:
                    pg.stop()
                    time.sleep(c.settings.heartbeat_timeout_seconds + 3)
                    pg.start()
                since = time.monotonic()
                timings[fault] = _recovery(c, user, since)
                # Nothing runs unvouched for: every running job has a live process.
                time.sleep(c.settings.heartbeat_interval_seconds * 2)
                assert c.running_without_a_heartbeat() == [], c.logs()
        finally:
            clients.stop()
        everything = [training, *sleeps, *clients.exports]
        done = c.wait(everything, timeout=180)
        assert [j.state for j in done] == [JobState.succeeded] * len(done), c.logs()
        counts = Counter(completions(c.data_dir))
        assert all(counts[job_id] == 1 for job_id in sleeps), counts
        assert c.reported_epochs(training) == list(range(1, 11))
        assert len(c.models_of(training)) == 1
        assert clients.exports, "no export was submitted"
        assert c.running_without_a_heartbeat() == []
        # The API answered or said "unavailable"; nothing else (see the report if 500s).
        assert set(clients.codes) <= {200, 202, 503}, clients.codes
        assert 503 in clients.codes or clients.errors == [], (clients.codes, clients.errors[:3])
        print(f"\nrecovery (API ready, new job done) after PostgreSQL: {timings}")
        print(f"API answers: {dict(clients.codes)}; transport errors: {len(clients.errors)}")


# --- a frozen GPU worker -----------------------------------------------------------------


def test_frozen_gpu_worker_and_its_replacement_never_train_at_once(
    database: str, outage_cluster: Callable[..., OutageCluster]
) -> None:
    c = outage_cluster(database)
    c.start_scheduler()
    c.start_worker(pool="gpu")
    c.start_worker(pool="gpu")
    c.wait_for_workers(2)
    user = c.user("owner")
    epochs = 16
    _, job_id = c.train(user, epochs=epochs)
    sampler = ChildSampler(str(c.data_dir))
    try:
        wait_until(lambda: c.epochs_in_files(job_id) >= 2, 180, lambda: "no epochs\n" + c.logs())
        first = c.job(job_id)
        assert first.worker_id is not None
        frozen = first.worker_id
        os.kill(_pid(frozen), signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            # Another worker resumes the job and trains on while the first is frozen.
            def resumed() -> bool:
                job = c.job(job_id)
                return job.attempts == 2 and job.state == JobState.running

            wait_until(resumed, 60, lambda: "not resumed\n" + c.logs())
            # Its training process started; let it train a while the first one is frozen.
            wait_until(
                lambda: len(sampler.seen) >= 2,
                120,
                lambda: "the second attempt did not start training\n" + c.logs(),
            )
            takeover = time.monotonic() - frozen_at
            time.sleep(3)
        finally:
            os.kill(_pid(frozen), signal.SIGCONT)
        done = c.wait([job_id], timeout=240)[0]
    finally:
        sampler.stop()
    assert done.state == JobState.succeeded, c.logs()
    assert done.attempts == 2
    assert done.worker_id != frozen
    assert sampler.most == 1, (
        f"{sampler.most} training processes at once (times from the freeze: "
        f"{sampler.timeline(frozen_at)})\n{c.logs()}"
    )
    assert len(sampler.seen) == 2
    # Every epoch reported once, in order; the frozen worker relayed nothing stale.
    assert c.reported_epochs(job_id) == list(range(1, epochs + 1))
    assert len(c.models_of(job_id)) == 1
    # The frozen worker is alive again and counts for admission.
    wait_until(
        lambda: c.worker_row(frozen).stopped_at is None, 10, lambda: "not revived\n" + c.logs()
    )
    with c.maker() as db:
        lost = db.scalar(
            sa.select(sa.func.count())
            .select_from(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.data["reason"].as_string().like("%lost%"))
        )
    assert lost == 1
    print(
        f"\nfrozen worker: another started training the job {takeover:.1f} s after the "
        f"freeze ({sampler.timeline(frozen_at)})"
    )


# --- a frozen standalone process ---------------------------------------------------------


class Standalone:
    def __init__(self, data_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
        env.update(
            {
                "OCULAB_DATA_DIR": str(data_dir),
                "OCULAB_SEED_DEMO": "false",
                "OCULAB_ADMIN_PASSWORD": "outage-admin-pass",
                "OCULAB_FSYNC": "false",
                "PYTHONPATH": str(REPO),
            }
        )
        env.update({f"OCULAB_{k.upper()}": v for k, v in settings.items()})
        self.log = open(data_dir.parent / "standalone.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "standalone", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.log_path = data_dir.parent / "standalone.log"

        def up() -> bool:
            assert self.proc.poll() is None, self.output()
            return _healthy(self.base)

        wait_until(up, 60, self.output, 0.2)
        self.http = httpx.Client(base_url=self.base, timeout=60)
        login = self.http.post(
            "/api/auth/local/login", json={"username": "admin", "password": "outage-admin-pass"}
        )
        assert login.status_code == 200, login.text
        self.http.headers["X-CSRF-Token"] = login.json()["csrf_token"]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def test_frozen_standalone_process_admits_and_predicts_again(tmp_path: Path) -> None:
    from ultralytics import YOLO

    data = tmp_path / "data"
    data.mkdir()
    server = Standalone(
        data,
        heartbeat_timeout_seconds="3",
        heartbeat_interval_seconds="0.5",
        scheduler_interval_seconds="0.2",
        standalone_gpu_slots="1",
        standalone_cpu_slots="1",
        predict_queue_seconds="20",
    )
    try:
        http = server.http
        project = http.post("/api/projects", json={"name": "P", "classes": ["a", "b"]}).json()
        upload = http.post(
            f"/api/projects/{project['id']}/images",
            files=[("files", (f"i{n}.png", png_bytes(n, (96, 96)), "image/png")) for n in range(3)],
        )
        assert upload.status_code == 201, upload.text
        weights = tmp_path / "tiny.pt"
        YOLO("yolo11n.yaml").save(str(weights))
        uploaded = http.post(
            f"/api/models?project_id={project['id']}",
            files={"file": ("tiny.pt", weights.read_bytes())},
        )
        assert uploaded.status_code == 202, uploaded.text
        inspected = wait_job(http, uploaded.json()["inspect_job_id"], 120, server.output)
        assert inspected["state"] == "succeeded"
        model_id = uploaded.json()["model"]["id"]

        recoveries = []
        for stall in range(2):
            # A job in flight across the stall keeps its attempt: nobody took it for lost.
            busy = http.post(
                "/api/admin/diagnostics/jobs", json={"pool": "cpu", "count": 1, "seconds": 6}
            ).json()[0]["id"]
            wait_job(http, busy, 30, server.output, states={"running"})
            server.proc.send_signal(signal.SIGSTOP)
            time.sleep(5)  # longer than the heartbeat timeout
            server.proc.send_signal(signal.SIGCONT)
            since = time.monotonic()
            predicted = http.post(
                f"/api/models/{model_id}/predict",
                files={"files": ("a.png", png_bytes(stall, (96, 96)), "image/png")},
            )
            assert predicted.status_code == 200, predicted.text + server.output()
            recoveries.append(time.monotonic() - since)
            label = http.post(
                f"/api/projects/{project['id']}/jobs/autolabel",
                json={"model_id": model_id, "status": "all"},
            )
            assert label.status_code == 202, label.text
            labelled = wait_job(http, label.json()["id"], 120, server.output)
            assert labelled["state"] == "succeeded"
            finished = wait_job(http, busy, 120, server.output)
            assert finished["state"] == "succeeded"
            assert finished["attempts"] == 1, server.output()
        workers = http.get("/api/admin/queue").json()["workers"]
        assert {p for w in workers for p in w["pools"]} == {"cpu", "gpu"}
        print(f"\npredict answered after a standalone stall in {recoveries} s")
    finally:
        server.stop()
