"""The training run page's speed in a browser (issue 11): Playwright driving the
system's Chromium against a real ``oculab standalone``.

    make frontend && .venv/bin/python bench/ui_run.py [--epochs 300 --runs 5 --repeats 5]

Seeds ``--runs`` finished training jobs of ``--epochs`` epochs each, with one metrics
event per epoch written straight into the database (the keys the training job reports:
train/val box, class and DFL losses, precision, recall, mAP50, mAP50-95), then measures,
printed and not asserted (goal: <= 200 ms):

- run page: from navigation start to the page's ``oculab:run-curves-drawn`` mark, set
  when uPlot has drawn every epoch of every series of its three charts (10 series);
- overlay: the runs page with all the runs ticked for comparison, to its
  ``oculab:overlay-drawn`` mark (every run's mAP50-95 drawn on one chart).

Cold is a new browser context (nothing cached), warm a reload, in the app the click on
the run in the runs list (the app already loaded) to the mark. The browser half is
``frontend/scripts/bench-run.mjs``; the last line printed is one line of JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from webbench import SHOTS, BenchError, cookies, run_browser, signed_in, standalone

from server.kit.db import make_engine, make_sessionmaker
from server.models import Job, JobEvent  # every model, so foreign keys resolve
from server.models.job import JobState


def epoch_metrics(epoch: int, epochs: int, rng: random.Random) -> dict[str, float]:
    """Plausible curves: losses falling, scores rising, with noise."""
    t = epoch / epochs
    fall = math.exp(-3 * t)
    rise = 1 - math.exp(-4 * t)

    def noisy(value: float) -> float:
        return round(max(0.0, value * (1 + rng.gauss(0, 0.03))), 5)

    return {
        "epoch": epoch,
        "train/box_loss": noisy(0.6 + 1.4 * fall),
        "train/cls_loss": noisy(0.4 + 2.6 * fall),
        "train/dfl_loss": noisy(0.9 + 0.8 * fall),
        "val/box_loss": noisy(0.7 + 1.2 * fall),
        "val/cls_loss": noisy(0.5 + 2.2 * fall),
        "val/dfl_loss": noisy(1.0 + 0.7 * fall),
        "metrics/precision(B)": noisy(0.85 * rise),
        "metrics/recall(B)": noisy(0.8 * rise),
        "metrics/mAP50(B)": noisy(0.82 * rise),
        "metrics/mAP50-95(B)": noisy(0.55 * rise),
    }


def seed_runs(
    database_url: str, project_id: int, user_id: int, runs: int, epochs: int
) -> list[int]:
    """Finished training jobs with their per-epoch metrics events, as the job leaves them."""
    engine = make_engine(database_url)
    maker = make_sessionmaker(engine)
    ids = []
    now = dt.datetime.now(dt.UTC)
    with maker() as db, db.begin():
        for run in range(runs):
            rng = random.Random(run)
            job = Job(
                kind="training.train",
                project_id=project_id,
                created_by=user_id,
                pool="gpu",
                priority=0,
                state=JobState.succeeded,
                progress=1.0,
                message=f"epoch {epochs}/{epochs}",
                attempts=1,
                max_attempts=3,
                params={
                    "base": "yolo11n.yaml",
                    "epochs": epochs,
                    "imgsz": 640,
                    "batch": 16,
                    "val_fraction": 0.2,
                    "name": f"bench-{run}",
                },
                result={"metrics": {"mAP50-95": 0.5}},
                created_at=now - dt.timedelta(hours=2),
                started_at=now - dt.timedelta(hours=2),
                finished_at=now - dt.timedelta(minutes=run),
            )
            db.add(job)
            db.flush()
            db.add_all(
                JobEvent(job_id=job.id, kind="metrics", data=epoch_metrics(e, epochs, rng))
                for e in range(1, epochs + 1)
            )
            db.add(JobEvent(job_id=job.id, kind="state", data={"state": "succeeded"}))
            ids.append(job.id)
    with maker() as db:
        count = db.scalar(
            sa.select(sa.func.count()).select_from(JobEvent).where(JobEvent.kind == "metrics")
        )
    engine.dispose()
    print(f"seeded {runs} runs, {count} metrics events", file=sys.stderr)
    return ids


def measure(args: argparse.Namespace) -> tuple[float, float, dict[str, Any]]:
    """The size and time of one run's GET /metrics, and the browser's figures."""
    with standalone("run") as server:
        http, csrf = signed_in(server.url)
        project = http.post(
            "/api/projects", json={"name": "Run bench", "classes": ["car", "person"]}, headers=csrf
        ).json()
        me = http.get("/api/me").json()
        job_ids = seed_runs(server.database_url, project["id"], me["id"], args.runs, args.epochs)
        metrics = http.get(f"/api/jobs/{job_ids[0]}/metrics")
        figures = run_browser(
            "bench-run.mjs",
            {
                "url": server.url,
                "chromium": args.chromium,
                "cookies": cookies(http),
                "projectId": project["id"],
                "jobIds": job_ids,
                "epochs": args.epochs,
                "repeats": args.repeats,
                "screenshots": str(SHOTS),
                "trace": str(Path(args.trace).resolve()) if args.trace else None,
            },
        )
        return len(metrics.content) / 1024, metrics.elapsed.total_seconds() * 1000, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    parser.add_argument(
        "--trace",
        help="also record a Chrome trace (JSON, for chrome://tracing or Perfetto) of one "
        "more cold open of the run page, with the V8 sampling profiler",
    )
    args = parser.parse_args()
    try:
        metrics_kib, metrics_ms, figures = measure(args)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 1

    print(
        f"training run page, {args.epochs} epochs x 10 metrics "
        f"(GET /metrics: {metrics_kib:.0f} KiB, {metrics_ms:.0f} ms)"
    )
    for key, label in (("run", "run page, 3 charts"), ("overlay", f"overlay of {args.runs} runs")):
        cold, warm = figures[f"{key}_cold_ms"], figures[f"{key}_warm_ms"]
        print(
            f"  {label:<24} navigation -> curves drawn: cold {cold['median']:>6} ms, "
            f"warm {warm['median']:>6} ms  goal 200   (all: {cold['all']} / {warm['all']})"
        )
    in_app = figures["run_in_app_ms"]
    print(
        f"  {'run page, in the app':<24} click on the run -> curves drawn: {in_app['median']:>6} ms"
        f"  goal 200   (all: {in_app['all']})"
    )
    print(f"  drawn: {figures['run_points']}")
    print(json.dumps({"epochs": args.epochs, "runs": args.runs, **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
