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
  The bench waits for the marks inside the page (a PerformanceObserver), not by polling
  on every animation frame: that polling made the page draw 60 frames a second and was
  counted as the page's work (about 100 ms per update). ``--trace FILE`` writes a Chrome
  trace of the measured updates.

The browser half is ``frontend/scripts/bench-queue.mjs``; the last line printed is one
line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from typing import Any

import sqlalchemy as sa
from webbench import SHOTS, BenchError, cookies, run_browser, signed_in, standalone

from server.admin import queue
from server.kit.db import make_engine, make_sessionmaker, utcnow
from server.models.auth import User
from server.models.job import Job, JobState, WorkerRow
from server.models.project import Project
from server.settings import Settings

KINDS = ("training.train", "autolabel.run", "models.predict")


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


def measure(
    args: argparse.Namespace,
) -> tuple[list[float], list[float], int, queue.QueueView, dict[str, Any]]:
    """The server's times per view (in process, over HTTP), the JSON's size, the last
    view, and the browser's figures."""
    with standalone("queue") as server:
        db_url = server.database_url
        print(f"seeding {args.jobs} queued jobs and {args.workers} workers", file=sys.stderr)
        seed(db_url, args.jobs, args.workers)
        stop = threading.Event()
        beating = threading.Thread(target=keep_alive, args=(db_url, stop), daemon=True)
        beating.start()
        try:
            settings = Settings(
                data_dir=server.data_dir, database_url=db_url, secret_key="x" * 40, seed_demo=False
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

            http, _ = signed_in(server.url, timeout=60)
            over_http = []
            size = 0
            for _ in range(15):
                started = time.perf_counter()
                response = http.get("/api/admin/queue")
                over_http.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                size = len(response.content)

            figures = run_browser(
                "bench-queue.mjs",
                {
                    "url": server.url,
                    "chromium": args.chromium,
                    "cookies": cookies(http),
                    "updates": args.updates,
                    "repeats": args.repeats,
                    "screenshot": str(SHOTS / "bench-queue.png"),
                    "trace": args.trace,
                },
            )
        finally:
            stop.set()
            beating.join(10)
        return in_process, over_http, size, view, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--trace", default=None, help="write a Chrome trace of the measured updates to this file"
    )
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    args = parser.parse_args()
    try:
        in_process, over_http, size, view, figures = measure(args)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 1

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
