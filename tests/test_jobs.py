"""The job system in standalone mode: in-process workers on the stub broker, the real
scheduler, the real database."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.jobs import scheduler as sched
from server.jobs import service as jobs
from server.kit.db import utcnow
from server.models.auth import User
from server.models.job import Job, JobEvent, JobState, Quota, WorkerRow
from server.settings import Settings
from tests.factories import Factory
from tests.helpers import wait_job
from tests.jobkinds import completions


@pytest.fixture
def jobs_app(make_running_app: Callable[..., FastAPI]) -> FastAPI:
    return make_running_app(
        run_jobs=True,
        job_modules=["tests.jobkinds"],
        heartbeat_interval_seconds=0.2,
        scheduler_interval_seconds=0.1,
        standalone_gpu_slots=0,  # the gpu pool has no worker: its jobs wait
        standalone_cpu_slots=2,
    )


@pytest.fixture
def f(jobs_app: FastAPI) -> Factory:
    return Factory(jobs_app)


def submit(
    f: Factory,
    kind: str,
    user_id: int | None,
    *,
    pool: str | None = None,
    project_id: int | None = None,
    **params: Any,
) -> int:
    app = f.app
    with f.sessionmaker() as db, db.begin():
        user = db.get(User, user_id) if user_id else None
        job = jobs.submit(
            db,
            app.state.settings,
            app.state.kinds,
            kind=kind,
            user=user,
            project_id=project_id,
            params=params,
            pool=pool,
        )
        return job.id


def test_a_job_runs_once_and_reports_its_life(f: Factory) -> None:
    admin = f.client(f.user("root", is_admin=True))
    created = admin.post(
        "/api/admin/diagnostics/jobs", json={"pool": "cpu", "count": 1, "seconds": 0.3}
    )
    assert created.status_code == 201
    job_id = created.json()[0]["id"]
    done = wait_job(admin, job_id, 20)
    assert done["state"] == "succeeded"
    assert done["attempts"] == 1
    assert done["progress"] == 1.0
    assert done["worker"]
    assert done["started_at"] >= done["created_at"]
    assert done["result"]["slept"] == 0.3
    states = [
        e["data"]["state"]
        for e in admin.get(f"/api/jobs/{job_id}/logs").json()
        if e["kind"] == "state"
    ]
    assert states == ["queued", "running", "succeeded"]


def test_failures_are_recorded_not_retried(f: Factory) -> None:
    alice = f.client(f.user("alice"))
    failed = submit(f, "test.fail", alice.user_id)
    exploded = submit(f, "test.explode", alice.user_id)
    first = wait_job(alice, failed, 20)
    assert first["state"] == "failed"
    assert first["error"] == "this job always fails"
    assert first["attempts"] == 1
    second = wait_job(alice, exploded, 20)
    assert second["state"] == "failed"
    assert second["error"] == "RuntimeError: unexpected"
    logs = alice.get(f"/api/jobs/{exploded}/logs").json()
    assert any("Traceback" in e["data"].get("line", "") for e in logs)


def test_cancel_while_queued_means_it_never_runs(f: Factory) -> None:
    alice = f.client(f.user("alice"))
    job_id = submit(f, "test.sleep_count", alice.user_id, pool="gpu", seconds=0.1)
    waiting = alice.get(f"/api/jobs/{job_id}").json()
    assert waiting["state"] == "queued"
    assert waiting["position"] == 1
    response = alice.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "canceled"
    time.sleep(0.5)
    body = alice.get(f"/api/jobs/{job_id}").json()
    assert body["state"] == "canceled"
    assert body["started_at"] is None
    assert alice.post(f"/api/jobs/{job_id}/cancel").status_code == 409


def test_cancel_while_running_stops_at_the_next_progress(f: Factory, settings: Settings) -> None:
    alice = f.client(f.user("alice"))
    job_id = submit(f, "test.sleep_count", alice.user_id, seconds=30)
    wait_job(alice, job_id, 20, states={"running"})
    started = time.monotonic()
    assert alice.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    body = wait_job(alice, job_id, 15)
    assert body["state"] == "canceled"
    # Well before the job's 30 s: it stopped at a progress report, not at its end (a
    # generous bound, as a loaded CI machine is slow).
    assert time.monotonic() - started < 15
    assert job_id not in completions(settings.data_dir)
    # The slot is free again.
    again = submit(f, "test.sleep_count", alice.user_id, seconds=0.05)
    assert wait_job(alice, again, 20)["state"] == "succeeded"


def test_positions_follow_fair_order_across_users(f: Factory) -> None:
    users = {name: f.client(f.user(name)) for name in ("ann", "ben", "cat")}
    ids: dict[str, list[int]] = {name: [] for name in users}
    for name, n in (("ann", 4), ("ben", 4), ("cat", 1)):
        for _ in range(n):
            ids[name].append(submit(f, "test.sleep_count", users[name].user_id, pool="gpu"))
    positions = {
        job_id: users[name].get(f"/api/jobs/{job_id}").json()["position"]
        for name, job_ids in ids.items()
        for job_id in job_ids
    }
    # Round-robin: ann1, ben1, cat1, ann2, ben2, ann3, ...
    assert positions[ids["ann"][0]] == 1
    assert positions[ids["ben"][0]] == 2
    assert positions[ids["cat"][0]] == 3
    assert positions[ids["ann"][1]] == 4
    assert sorted(positions.values()) == list(range(1, 10))


def test_fair_order_prefers_the_least_recently_served_user() -> None:
    def job(job_id: int, user: int, priority: int = 0) -> Job:
        return Job(id=job_id, created_by=user, priority=priority)

    waiting = [
        job(1, 1),
        job(2, 1),
        job(3, 1),
        job(4, 2),
        job(5, 2),
        job(6, 3),
        job(7, 2, priority=5),
    ]
    now = utcnow()
    served: dict[int | None, dt.datetime] = {1: now, 2: now - dt.timedelta(minutes=5)}
    order = [j.id for j in sched.fair_order(waiting, served)]
    # Priority beats everything; then never-served user 3, then user 2 (served longer
    # ago) before user 1.
    assert order == [7, 6, 4, 1, 5, 2, 3]


def test_jobs_are_visible_to_project_members_only(f: Factory) -> None:
    alice, bob, carol = (f.client(f.user(n)) for n in ("alice", "bob", "carol"))
    project = alice.project()
    alice.add_member(project["id"], bob, "viewer")
    job_id = submit(f, "test.sleep_count", alice.user_id, project_id=project["id"], pool="gpu")
    assert bob.get(f"/api/jobs/{job_id}").status_code == 200
    assert carol.get(f"/api/jobs/{job_id}").status_code == 404
    assert carol.get(f"/api/jobs/{job_id}/events").status_code == 404
    assert [j["id"] for j in bob.get("/api/jobs").json()["items"]] == [job_id]
    assert carol.get("/api/jobs").json()["items"] == []
    # Viewers may watch but not cancel someone else's job; the creator may.
    assert bob.post(f"/api/jobs/{job_id}/cancel").status_code == 403
    assert alice.post(f"/api/jobs/{job_id}/cancel").status_code == 200


def test_job_list_filters_and_paginates(f: Factory) -> None:
    alice = f.client(f.user("alice"))
    ids = [submit(f, "test.sleep_count", alice.user_id, pool="gpu") for _ in range(5)]
    alice.post(f"/api/jobs/{ids[0]}/cancel")
    page = alice.get("/api/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    rest = alice.get("/api/jobs", params={"cursor": page["next_cursor"]}).json()["items"]
    assert [j["id"] for j in rest] == ids[::-1][2:]
    canceled = alice.get("/api/jobs", params={"state": "canceled"}).json()["items"]
    assert [j["id"] for j in canceled] == [ids[0]]
    assert alice.get("/api/jobs", params={"mine": "true"}).json()["items"]
    for bad in ({"state": "done"}, {"limit": 0}, {"project_id": 0}, {"cursor": "%%%"}):
        assert alice.get("/api/jobs", params=bad).status_code in (400, 422), bad


def test_events_stream_until_the_job_ends(f: Factory) -> None:
    alice = f.client(f.user("alice"))
    job_id = submit(f, "test.sleep_count", alice.user_id, seconds=0.5)
    seen: list[tuple[str, dict[str, Any]]] = []
    with alice.http.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event:
                seen.append((event, json.loads(line.removeprefix("data: "))))
    kinds = [k for k, _ in seen]
    assert kinds[0] == "snapshot"
    assert kinds[-1] == "end"
    assert "progress" in kinds
    assert [d["state"] for k, d in seen if k == "state"][-1] == "succeeded"
    # Resuming after the last event replays nothing but the end.
    last_id = max(e["id"] for e in alice.get(f"/api/jobs/{job_id}/logs").json())
    with alice.http.stream(
        "GET", f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(last_id)}
    ) as response:
        text = "".join(response.iter_text())
    assert "event: state" not in text
    assert "event: end" in text


def test_admin_queue_shows_pools_workers_and_usage(f: Factory) -> None:
    admin = f.client(f.user("root", is_admin=True))
    alice = f.client(f.user("alice"))
    waiting = [submit(f, "test.sleep_count", alice.user_id, pool="gpu") for _ in range(2)]
    running = submit(f, "test.sleep_count", alice.user_id, seconds=5)
    wait_job(alice, running, 20, states={"running"})
    view = admin.get("/api/admin/queue").json()
    pools = {p["name"]: p for p in view["pools"]}
    assert pools["gpu"]["queued"] == 2
    assert pools["gpu"]["workers"] == 0
    assert pools["cpu"]["running"] == 1
    assert pools["cpu"]["slots"] == 2
    order = [j["id"] for j in view["jobs"]]
    assert running in order
    assert order.index(waiting[0]) < order.index(waiting[1])
    assert [j["position"] for j in view["jobs"] if j["id"] in waiting] == [1, 2]
    workers = {tuple(w["pools"]): w for w in view["workers"]}
    assert workers[("cpu",)]["current_jobs"] == [running]
    usage = {u["username"]: u for u in view["users"]}
    assert usage["alice"]["queued"] == {"gpu": 2}
    assert usage["alice"]["running"] == {"cpu": 1}
    alice.post(f"/api/jobs/{running}/cancel")


def test_admin_reprioritises_a_waiting_job(f: Factory) -> None:
    admin = f.client(f.user("root", is_admin=True))
    alice = f.client(f.user("alice"))
    first, second = (submit(f, "test.sleep_count", alice.user_id, pool="gpu") for _ in range(2))
    response = admin.post(f"/api/admin/jobs/{second}/priority", json={"priority": 10})
    assert response.status_code == 200
    assert response.json()["position"] == 1
    assert alice.get(f"/api/jobs/{first}").json()["position"] == 2
    for body in ({"priority": 1000}, {"priority": "high"}, {}, {"priority": 1, "x": 1}):
        assert admin.post(f"/api/admin/jobs/{second}/priority", json=body).status_code == 422
    assert admin.post("/api/admin/jobs/999999/priority", json={"priority": 1}).status_code == 404
    assert alice.post(f"/api/admin/jobs/{second}/priority", json={"priority": 1}).status_code == 403
    alice.post(f"/api/jobs/{first}/cancel")
    assert admin.post(f"/api/admin/jobs/{first}/priority", json={"priority": 1}).status_code == 409


def _span(job: Job) -> tuple[dt.datetime, dt.datetime]:
    assert job.started_at is not None
    assert job.finished_at is not None
    return job.started_at, job.finished_at


def test_quotas_cap_a_users_concurrent_jobs(f: Factory) -> None:
    admin = f.client(f.user("root", is_admin=True))
    alice = f.client(f.user("alice"))
    put = admin.put(
        "/api/admin/quotas", json={"user_id": alice.user_id, "pool": "cpu", "max_running": 1}
    )
    assert put.status_code == 200
    assert put.json() == [
        {"user_id": alice.user_id, "username": "alice", "pool": "cpu", "max_running": 1}
    ]
    ids = [submit(f, "test.sleep_count", alice.user_id, seconds=0.4) for _ in range(3)]
    for job_id in ids:
        wait_job(alice, job_id, 20)
    with f.sessionmaker() as db:
        spans = sorted(_span(j) for j in db.scalars(sa.select(Job)))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # never two at once, although two slots were free
    for bad in (
        {"user_id": alice.user_id, "pool": "tpu", "max_running": 1},
        {"user_id": alice.user_id, "pool": "cpu", "max_running": -1},
        {"user_id": alice.user_id, "pool": "cpu"},
        {"user_id": 0, "pool": "cpu", "max_running": 1},
    ):
        assert admin.put("/api/admin/quotas", json=bad).status_code == 422, bad
    missing = admin.put("/api/admin/quotas", json={"user_id": 999, "pool": "cpu", "max_running": 1})
    assert missing.status_code == 404
    cleared = admin.put(
        "/api/admin/quotas", json={"user_id": alice.user_id, "pool": "cpu", "max_running": None}
    )
    assert cleared.json() == []
    assert f.count(Quota) == 0


def test_draining_a_worker_stops_it_taking_work(f: Factory) -> None:
    admin = f.client(f.user("root", is_admin=True))
    worker = next(
        w for w in admin.get("/api/admin/queue").json()["workers"] if w["pools"] == ["cpu"]
    )
    response = admin.post(f"/api/admin/workers/{worker['id']}/drain")
    assert response.status_code == 200
    assert response.json()["draining"] is True
    job_id = submit(f, "test.sleep_count", admin.user_id, seconds=0.05)
    time.sleep(1.0)
    body = admin.get(f"/api/jobs/{job_id}").json()
    assert body["state"] == "queued"
    assert body["position"] == 1  # no capacity: not even admitted
    assert admin.post("/api/admin/workers/nope/drain").status_code == 404
    assert admin.post("/api/admin/workers/bad id!/drain").status_code == 422


def test_job_metrics_are_exported(f: Factory) -> None:
    admin = f.client(f.user("root", is_admin=True))
    job_id = submit(f, "test.sleep_count", admin.user_id, seconds=0.05)
    wait_job(admin, job_id, 20)
    submit(f, "test.sleep_count", admin.user_id, pool="gpu")
    text = admin.get("/metrics").text
    assert 'oculab_jobs{pool="cpu",state="succeeded"} 1.0' in text
    assert 'oculab_jobs{pool="gpu",state="queued"} 1.0' in text
    assert 'oculab_job_wait_seconds_count{kind="test.sleep_count",pool="cpu"} 1.0' in text
    assert 'oculab_job_run_seconds_bucket{kind="test.sleep_count",le="+Inf",pool="cpu"} 1.0' in text
    assert 'oculab_workers{pool="cpu"} 1.0' in text
    assert 'oculab_workers{pool="gpu"} 0.0' in text
    assert "oculab_worker_heartbeat_age_seconds" in text
    assert 'oculab_job_oldest_queued_seconds{pool="cpu"} 0.0' in text
    assert 'oculab_job_oldest_queued_seconds{pool="gpu"}' in text


def test_non_admins_cannot_use_admin_job_endpoints(f: Factory) -> None:
    alice = f.client(f.user("alice"))
    for method, url, body in (
        ("get", "/api/admin/queue", None),
        ("post", "/api/admin/diagnostics/jobs", {"pool": "cpu"}),
        ("get", "/api/admin/quotas", None),
        ("put", "/api/admin/quotas", {"user_id": 1, "pool": "cpu", "max_running": 1}),
        ("post", "/api/admin/workers/x/drain", None),
    ):
        kwargs = {"json": body} if body else {}
        assert getattr(alice, method)(url, **kwargs).status_code == 403, url


@pytest.mark.parametrize(
    "body",
    [
        {"pool": "tpu"},
        {"pool": "cpu", "count": 0},
        {"pool": "cpu", "count": 1001},
        {"pool": "cpu", "seconds": -1},
        {"pool": "cpu", "kind": "x"},
    ],
)
def test_bad_diagnostic_job_requests(f: Factory, body: dict[str, Any]) -> None:
    admin = f.client(f.user("root", is_admin=True))
    assert admin.post("/api/admin/diagnostics/jobs", json=body).status_code == 422
    assert f.count(Job) == 0


def test_restart_recovers_jobs_held_in_memory(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    """Standalone restarts lose in-process messages: running jobs count an attempt and
    run again; admitted ones are sent again."""
    settings = {
        "run_jobs": True,
        "job_modules": ["tests.jobkinds"],
        "heartbeat_interval_seconds": 0.2,
        "scheduler_interval_seconds": 0.1,
        "standalone_gpu_slots": 0,
    }
    app = make_app(**settings)
    f = factory_for(app)
    user = f.client(f.user("alice"))
    with TestClient(app):
        job_id = submit(f, "test.sleep_count", user.user_id, seconds=0.3)
        wait_job(user, job_id, 20, states={"running"})
        with f.sessionmaker() as db, db.begin():
            # Simulate the process dying mid-job: freeze the row as the dead process left it.
            db.execute(sa.update(WorkerRow).values(last_heartbeat=utcnow()))
    # The first app's workers stopped and handed the job back; make it look crashed.
    with f.sessionmaker() as db, db.begin():
        db.execute(
            sa.update(Job)
            .where(Job.id == job_id)
            .values(state=JobState.running, attempts=1, worker_id="dead", heartbeat_at=utcnow())
        )
    again = make_app(**settings)
    with TestClient(again):
        done = wait_job(user, job_id, 20)
    assert done["state"] == "succeeded"
    assert done["attempts"] == 2
    assert f.count(JobEvent, JobEvent.job_id == job_id) > 3


def test_metrics_are_the_job_s_metrics_events_as_validated_rows(f: Factory) -> None:
    """GET /metrics builds its JSON from the rows directly: the same answer the validated
    JobEventRead rows give (ids, UTC times with a Z, data), only the metrics events, in
    order; non-finite numbers (SQLite can hold them) come back as null."""
    alice, carol = (f.client(f.user(n)) for n in ("alice", "carol"))
    project = alice.project()
    job_id = submit(f, "test.sleep_count", alice.user_id, project_id=project["id"], pool="gpu")
    sqlite = f.app.state.engine.dialect.name == "sqlite"
    with f.sessionmaker() as db, db.begin():
        for epoch in range(1, 4):
            db.add(JobEvent(job_id=job_id, kind="log", data={"line": f'epoch {epoch} "done"'}))
            data: dict[str, Any] = {
                "epoch": epoch,
                "train/box_loss": 1.5 / epoch,
                "note": "é\u2028",
            }
            if sqlite and epoch == 2:
                data["val/cls_loss"] = float("nan")
            db.add(JobEvent(job_id=job_id, kind="metrics", data=data))
    answer = alice.get(f"/api/jobs/{job_id}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    events = answer.json()
    assert [e["data"]["epoch"] for e in events] == [1, 2, 3]
    assert all(e["kind"] == "metrics" and e["created_at"].endswith("Z") for e in events)
    with f.sessionmaker() as db:
        rows = jobs.events_after(db, job_id, 0, ("metrics",))
    assert events == [json.loads(row.model_dump_json()) for row in rows]
    if sqlite:
        assert events[1]["data"]["val/cls_loss"] is None
    assert carol.get(f"/api/jobs/{job_id}/metrics").status_code == 404
    for bad in ("0", "abc", str(2**63)):
        assert alice.get(f"/api/jobs/{bad}/metrics").status_code in (404, 422), bad
    empty = submit(f, "test.sleep_count", alice.user_id, project_id=project["id"], pool="gpu")
    assert alice.get(f"/api/jobs/{empty}/metrics").json() == []
