"""The admin's GPU queue page under load (issue 11): Playwright driving the system's
Chromium against a real ``oculab standalone``.

    make frontend && .venv/bin/python bench/ui_queue.py [--jobs 1000 --workers 50 --updates 10]

Seeds, directly in the server's database, ``--workers`` GPU workers (two GPUs each, one
job running on each) and ``--jobs`` queued GPU jobs of 20 users in 5 projects; a thread
keeps every heartbeat fresh and moves each GPU's utilisation and memory once a second,
so every view the page receives differs. Printed, not asserted (goals: first render
<= 1 s, main-thread CPU <= 50 ms per update):

- the server's time per queue view: ``queue.view`` in this process, and
  ``GET /api/admin/queue`` over HTTP (view + JSON), medians;
- time to first render: navigation start to the page's ``queue-first-rows`` mark (the
  queue table has rows), median of ``--repeats`` fresh page loads;
- main-thread CPU per update: Chrome DevTools Protocol ``Performance.getMetrics``
  TaskDuration (all main-thread work) and ScriptDuration deltas across ``--updates``
  applied updates (the page's ``queue-update`` marks), divided by their number; the
  once-a-second clock ticks in between are included. Also the long tasks (> 50 ms).

The browser half is ``frontend/scripts/bench-queue.mjs``; the last line printed is one
line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from server.auth.models import User
from server.jobs import queue
from server.jobs.models import Job, JobState, WorkerRow
from server.kit.db import make_engine, make_sessionmaker, utcnow
from server.projects.models import Project
from server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
OCULAB = str(Path(sys.executable).with_name("oculab"))
PASSWORD = "bench-queue-admin-password"
SHOTS = ROOT / "frontend" / "test-results" / "screenshots"
KINDS = ("training.train", "autolabel.run", "models.predict")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gpus(rng: random.Random) -> list[dict[str, object]]:
    return [
        {
            "index": g,
            "name": "NVIDIA H100 80GB HBM3",
            "utilization": rng.randrange(0, 101),
            "memory_used": rng.randrange(1, 80) * 2**30,  # bytes, as NVML reports them
            "memory_total": 80 * 2**30,
        }
        for g in range(2)
    ]


def seed(url: str, jobs: int, workers: int) -> None:
    rng = random.Random(11)
    now = utcnow()
    engine = make_engine(url)
    with make_sessionmaker(engine)() as db, db.begin():
        people = [
            User(issuer="local", subject=f"bq{i}", username=f"user{i:02d}", groups=[])
            for i in range(20)
        ]
        db.add_all(people)
        db.flush()
        projects = [
            Project(name=f"Lab project {i}", classes=["a"], created_by=people[i].id)
            for i in range(5)
        ]
        db.add_all(projects)
        db.flush()
        db.add_all(
            WorkerRow(
                id=f"bench-gpu-{i:02d}",
                hostname=f"gpu-node-{i:02d}.lab",
                pools=["gpu"],
                slots=1,
                gpus=_gpus(rng),
                started_at=now,
                last_heartbeat=now,
                version="bench",
            )
            for i in range(workers)
        )
        # One running job per worker fills every slot: the scheduler admits nothing more.
        db.add_all(
            Job(
                kind=KINDS[i % len(KINDS)],
                project_id=projects[i % 5].id,
                created_by=people[i % 20].id,
                pool="gpu",
                priority=0,
                state=JobState.running,
                worker_id=f"bench-gpu-{i:02d}",
                gpu_index=0,
                progress=rng.random(),
                attempts=1,
                heartbeat_at=now,
                admitted_at=now,
                started_at=now,
                created_at=now,
                params={},
            )
            for i in range(workers)
        )
        db.add_all(
            Job(
                kind=KINDS[i % len(KINDS)],
                project_id=projects[i % 5].id,
                created_by=people[rng.randrange(20)].id,
                pool="gpu",
                priority=rng.choice((0, 0, 0, 5, -5)),
                state=JobState.queued,
                created_at=now,
                params={"epochs": 50},
            )
            for i in range(jobs)
        )
    engine.dispose()


def keep_alive(url: str, stop: threading.Event) -> None:
    """Fresh heartbeats (workers and their running jobs) and moving GPU figures, 1/s."""
    rng = random.Random(5)
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    while not stop.wait(1.0):
        now = utcnow()
        with maker() as db, db.begin():
            for worker in db.scalars(sa.select(WorkerRow).where(WorkerRow.version == "bench")):
                worker.last_heartbeat = now
                worker.gpus = _gpus(rng)
            db.execute(
                sa.update(Job)
                .where(Job.state == JobState.running, Job.worker_id.like("bench-gpu-%"))
                .values(heartbeat_at=now)
            )
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    args = parser.parse_args()
    if not (ROOT / "server" / "web" / "static" / "index.html").exists():
        print("no web build: run `make frontend` first", file=sys.stderr)
        return 1

    data_dir = Path(tempfile.mkdtemp(prefix="oculab-bench-queue-"))
    db_url = f"sqlite:///{data_dir / 'oculab.db'}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(
        OCULAB_DATA_DIR=str(data_dir),
        OCULAB_DATABASE_URL=db_url,
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
    stop = threading.Event()
    beating: threading.Thread | None = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(f"the server did not start; see {data_dir / 'server.log'}", file=sys.stderr)
                return 1
            time.sleep(0.25)

        print(f"seeding {args.jobs} queued jobs and {args.workers} workers", file=sys.stderr)
        seed(db_url, args.jobs, args.workers)
        beating = threading.Thread(target=keep_alive, args=(db_url, stop), daemon=True)
        beating.start()

        settings = Settings(
            data_dir=data_dir, database_url=db_url, secret_key="x" * 40, seed_demo=False
        )
        engine = make_engine(db_url)
        maker = make_sessionmaker(engine)
        in_process = []
        for _ in range(15):
            with maker() as db:
                started = time.perf_counter()
                view = queue.view(db, settings)
                in_process.append((time.perf_counter() - started) * 1000)
        engine.dispose()

        http = httpx.Client(base_url=url, timeout=60)
        login = http.post("/api/auth/local/login", json={"username": "admin", "password": PASSWORD})
        login.raise_for_status()
        over_http = []
        size = 0
        for _ in range(15):
            started = time.perf_counter()
            response = http.get("/api/admin/queue")
            over_http.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            size = len(response.content)

        config = {
            "url": url,
            "chromium": args.chromium,
            "cookies": [{"name": name, "value": value} for name, value in http.cookies.items()],
            "updates": args.updates,
            "repeats": args.repeats,
            "screenshot": str(SHOTS / "bench-queue.png"),
        }
        SHOTS.mkdir(parents=True, exist_ok=True)
        print("driving Chromium", file=sys.stderr)
        run = subprocess.run(
            ["node", str(ROOT / "frontend" / "scripts" / "bench-queue.mjs"), json.dumps(config)],
            cwd=ROOT / "frontend",
            capture_output=True,
            text=True,
            env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
            check=False,
        )
        if run.returncode != 0:
            print(run.stdout, run.stderr, file=sys.stderr)
            return 1
        figures = json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        stop.set()
        if beating is not None:
            beating.join(10)
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)

    view_ms = round(statistics.median(in_process), 1)
    http_ms = round(statistics.median(over_http), 1)
    print(
        f"admin GPU queue: {len(view.jobs)} jobs in the view, {len(view.workers)} workers "
        f"({args.jobs} queued seeded)"
    )
    print(f"  server, queue view in process       {view_ms:>7} ms (median of 15)")
    print(f"  server, GET /api/admin/queue         {http_ms:>7} ms ({size / 1024:.0f} KiB JSON)")
    print(f"  first render (rows in the table)     {figures['first_render_ms']:>7} ms  goal 1000")
    print(
        f"  main-thread CPU per update           {figures['task_ms_per_update']:>7} ms  goal 50 "
        f"(script {figures['script_ms_per_update']} ms; {figures['updates']} updates in "
        f"{figures['seconds']} s; style {figures['style_ms_per_update']} ms, layout "
        f"{figures['layout_ms_per_update']} ms; long tasks {figures['long_tasks']})"
    )
    print(
        json.dumps(
            {
                "jobs": args.jobs,
                "workers": args.workers,
                "view_ms": view_ms,
                "http_ms": http_ms,
                "json_bytes": size,
                **figures,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
