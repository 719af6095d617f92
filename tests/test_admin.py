from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server.admin import queue
from server.jobs import scheduler
from server.kit.db import make_sessionmaker, utcnow
from server.models.audit import AuditEvent
from server.models.auth import User
from server.models.job import Job, JobState, WorkerRow
from server.models.project import Project
from tests.factories import ApiClient, Factory, statements
from tests.helpers import wait_job, wait_until


def test_admin_creates_a_local_account_that_can_log_in(admin: ApiClient, app: FastAPI) -> None:
    response = admin.post(
        "/api/admin/users", json={"username": "dave", "password": "s3cret-pass", "is_admin": False}
    )
    assert response.status_code == 201
    assert response.json()["is_local"] is True
    login = TestClient(app).post(
        "/api/auth/local/login", json={"username": "dave", "password": "s3cret-pass"}
    )
    assert login.status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "dave", "password": "short"}, 422),
        ({"username": "bad name", "password": "long enough"}, 422),
        ({"username": "dave", "password": "long enough", "role": "god"}, 422),
        ({"username": "root", "password": "long enough"}, 409),
    ],
)
def test_bad_user_creation(
    admin: ApiClient, factory: Factory, body: dict[str, object], status: int
) -> None:
    before = factory.count(User)
    assert admin.post("/api/admin/users", json=body).status_code == status
    assert factory.count(User) == before


def test_non_admins_get_403_everywhere(alice: ApiClient) -> None:
    for method, url in [
        ("get", "/api/admin/users"),
        ("get", "/api/admin/audit"),
        ("post", "/api/admin/users"),
        ("patch", "/api/admin/users/1"),
    ]:
        kwargs = {"json": {"username": "x", "password": "long enough"}} if method != "get" else {}
        assert getattr(alice, method)(url, **kwargs).status_code == 403, url


def test_last_admin_cannot_be_disabled_or_demoted(admin: ApiClient) -> None:
    me = admin.user_id
    assert admin.patch(f"/api/admin/users/{me}", json={"is_active": False}).status_code == 409
    assert admin.patch(f"/api/admin/users/{me}", json={"is_admin": False}).status_code == 409


def test_sso_users_have_no_local_password(admin: ApiClient, factory: Factory) -> None:
    sso = factory.user("erin", issuer="https://idp.example")
    response = admin.patch(f"/api/admin/users/{sso.id}", json={"password": "long enough"})
    assert response.status_code == 409


def test_users_list_paginates(admin: ApiClient, factory: Factory) -> None:
    for name in ("u1", "u2", "u3"):
        factory.user(name)
    page = admin.get("/api/admin/users", params={"limit": 2}).json()
    assert len(page["items"]) == 2
    rest = admin.get("/api/admin/users", params={"cursor": page["next_cursor"]}).json()
    assert [u["username"] for u in page["items"] + rest["items"]] == ["root", "u1", "u2", "u3"]


def test_audit_log_records_and_filters(admin: ApiClient, alice: ApiClient, bob: ApiClient) -> None:
    project = alice.project()
    alice.add_member(project["id"], bob, "viewer")
    image = alice.image(project["id"])
    alice.delete(f"/api/images/{image['image_id']}")
    events = admin.get("/api/admin/audit").json()["items"]
    actions = [e["action"] for e in events]
    # Newest first.
    assert actions.index("image.delete") < actions.index("membership.set")
    assert {"project.create", "membership.set", "image.delete", "token.create"} <= set(actions)
    only = admin.get("/api/admin/audit", params={"action": "membership.set"}).json()["items"]
    assert [e["details"]["role"] for e in only] == ["viewer"]
    assert only[0]["actor_name"] == "alice"
    scoped = admin.get("/api/admin/audit", params={"project_id": project["id"]}).json()["items"]
    assert all(e["project_id"] == project["id"] for e in scoped)
    assert admin.get("/api/admin/audit", params={"action": "DROP TABLE"}).status_code == 422


def test_user_directory_search(alice: ApiClient, factory: Factory) -> None:
    factory.user("bobby")
    found = alice.get("/api/users", params={"q": "BOB"}).json()
    assert [u["username"] for u in found] == ["bobby"]
    assert alice.get("/api/users", params={"q": "%"}).json() == []
    assert alice.get("/api/users", params={"q": "x" * 101}).status_code == 422


# --- the GPU queue page: the view's cost and its live stream ------------------------------


def _seed_queue(app: FastAPI, users: int, jobs: int, workers: int, tag: str = "q") -> list[int]:
    """Queued jobs of several users in two pools, a few running, and live GPU workers."""
    now = utcnow()
    with make_sessionmaker(app.state.engine)() as db, db.begin():
        people = [
            User(
                issuer="local", subject=f"{tag}{i}", username=f"{tag}{i}", is_admin=False, groups=[]
            )
            for i in range(users)
        ]
        db.add_all(people)
        db.flush()
        project = Project(name="Queue", classes=["a"], created_by=people[0].id)
        db.add(project)
        db.flush()
        rows = [
            WorkerRow(
                id=f"{tag}w{i}",
                hostname=f"{tag}-gpu-{i:02d}",
                pools=["gpu"],
                slots=2,
                gpus=[
                    {
                        "index": g,
                        "name": "H100",
                        "utilization": 50,
                        "memory_used": 1,
                        "memory_total": 80,
                    }
                    for g in range(2)
                ],
                started_at=now,
                last_heartbeat=now,
            )
            for i in range(workers)
        ]
        db.add_all(rows)
        created = [
            Job(
                kind="diagnostics.sleep",
                project_id=project.id if i % 2 else None,
                created_by=people[i % users].id,
                pool="gpu" if i % 3 else "cpu",
                priority=i % 4,
                state=JobState.running if i < workers else JobState.queued,
                worker_id=f"{tag}w{i}" if i < workers else None,
                admitted_at=now if i < workers else None,
                params={"seconds": 1},
                created_at=now,
            )
            for i in range(jobs)
        ]
        db.add_all(created)
        db.flush()
        return [job.id for job in created]


def test_queue_view_costs_the_same_statements_for_ten_or_a_thousand_jobs(app: FastAPI) -> None:
    settings = app.state.settings
    maker = make_sessionmaker(app.state.engine)

    def take() -> queue.QueueView:
        with maker() as db:
            return queue.view(db, settings)

    _seed_queue(app, users=3, jobs=12, workers=2, tag="s")
    small = statements(app, take)
    _empty_view = take()
    assert len(_empty_view.jobs) == 12
    ids = _seed_queue(app, users=40, jobs=1000, workers=50)
    large = statements(app, take)
    assert large == small, (small, large)
    assert large <= 4
    big = take()
    assert len(big.workers) == 52
    assert len(big.jobs) == 1012
    # Same order and places as the scheduler's own fair order, pool by pool.
    with maker() as db:
        for pool in ("cpu", "gpu"):
            expected = scheduler.positions(db, pool)
            shown = {j.id: j.position for j in big.jobs if j.pool == pool and j.position}
            assert shown == expected
    # Pool by pool: running jobs first, then the waiting ones by place in line.
    for pool in ("cpu", "gpu"):
        rows = [j for j in big.jobs if j.pool == pool]
        running = sum(j.state == JobState.running for j in rows)
        assert all(j.state == JobState.running for j in rows[:running])
        places = [j.position for j in rows[running:]]
        assert places == list(range(1, len(rows) - running + 1))
    named = next(j for j in big.jobs if j.id == ids[1])
    assert (named.project_name, named.created_by_name) == ("Queue", "q1")
    gpu = next(p for p in big.pools if p.name == "gpu")
    assert (gpu.workers, gpu.gpus, gpu.slots) == (52, 104, 104)
    assert {u.username for u in big.users} >= {"q0", "q39"}


@contextlib.contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """The app behind a real HTTP server: a stream that never ends needs a real client
    that can hang up (TestClient buffers a whole response)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "the test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        # Shutdown waits for open responses: a stream that outlived its client hangs it.
        thread.join(timeout=20)
        sock.close()
        assert not thread.is_alive(), "a response was still streaming to nobody"


def test_queue_stream_sends_the_view_first_then_changes(app: FastAPI, factory: Factory) -> None:
    root = factory.user("root", is_admin=True)
    token = factory.token_for(root)
    _seed_queue(app, users=2, jobs=5, workers=1)
    with _serve(app) as url:
        headers = {"Authorization": f"Bearer {token}"}
        with (
            httpx.Client(base_url=url, headers=headers, timeout=20) as http,
            http.stream("GET", "/api/admin/queue/events", params={"interval": 0.2}) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            first = _sse_events_from(lines, 1)
            assert first[0][0] == "queue"
            assert len(first[0][1]["jobs"]) == 5
            assert first[0][1]["workers"][0]["hostname"] == "q-gpu-00"
            # A change reaches the open stream without a new request.
            waiting = next(j for j in first[0][1]["jobs"] if j["position"])
            bumped = http.post(f"/api/admin/jobs/{waiting['id']}/priority", json={"priority": 99})
            assert bumped.status_code == 200
            second = _sse_events_from(lines, 1)
            # Only the parts that changed: nobody's heartbeat moved here.
            assert "jobs" in second[0][1]
            assert "workers" not in second[0][1]
            assert (
                next(j for j in second[0][1]["jobs"] if j["id"] == waiting["id"])["priority"] == 99
            )


def _sse_events_from(lines: Iterator[str], wanted: int) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            found.append((kind, json.loads(line.removeprefix("data: "))))
            if len(found) == wanted:
                break
    return found


def test_queue_stream_refuses_non_admins_and_bad_intervals(
    admin: ApiClient, alice: ApiClient, app: FastAPI
) -> None:
    assert alice.get("/api/admin/queue/events").status_code == 403
    assert TestClient(app).get("/api/admin/queue/events").status_code == 401
    for bad in ("0", "-1", "2.5", "soon", "nan"):
        response = admin.get("/api/admin/queue/events", params={"interval": bad})
        assert response.status_code == 422, bad


def _audit(
    db: Session, action: str, at: dt.datetime, actor: int | None = None, name: str | None = None
) -> None:
    with db.begin():
        db.add(AuditEvent(action=action, created_at=at, actor_id=actor, actor_name=name))


def _actions(admin: ApiClient, **params: Any) -> list[str]:
    """The test's own events (the fixtures' token.create and such left out), newest first."""
    response = admin.get("/api/admin/audit", params=params)
    assert response.status_code == 200, response.text
    return [e["action"] for e in response.json()["items"] if e["action"].startswith("test.")]


def test_audit_log_filters_by_actor_and_time(
    admin: ApiClient, alice: ApiClient, bob: ApiClient, db: Session
) -> None:
    day = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    _audit(db, "test.early", day, alice.user_id, "alice")
    _audit(db, "test.noon", day + dt.timedelta(hours=12), bob.user_id, "bob")
    _audit(db, "test.late", day + dt.timedelta(days=1), alice.user_id, "alice")

    assert _actions(admin) == ["test.late", "test.noon", "test.early"]
    assert _actions(admin, actor_id=alice.user_id) == ["test.late", "test.early"]
    assert _actions(admin, actor_id=bob.user_id, action="test.noon") == ["test.noon"]
    assert _actions(admin, actor_id=bob.user_id, action="test.early") == []
    # `since` is inclusive, `until` exclusive: consecutive windows never count twice.
    assert _actions(admin, since="2024-03-01T00:00:00Z", until="2024-03-01T12:00:00Z") == [
        "test.early"
    ]
    assert _actions(admin, since="2024-03-01T12:00:00Z", until="2024-03-02T00:00:00Z") == [
        "test.noon"
    ]
    # An offset is an instant like any other: 13:00+01:00 is noon UTC.
    assert _actions(admin, since="2024-03-01T13:00:00+01:00", until="2024-03-02T00:00:00Z") == [
        "test.noon"
    ]
    assert _actions(admin, actor_id=alice.user_id, since="2024-03-01T00:00:01Z") == ["test.late"]
    # Filters hold across keyset pages.
    params: dict[str, Any] = {"actor_id": alice.user_id, "until": "2024-03-03T00:00:00Z"}
    first = admin.get("/api/admin/audit", params={**params, "limit": 1}).json()
    assert [e["action"] for e in first["items"]] == ["test.late"]
    rest = admin.get("/api/admin/audit", params={**params, "cursor": first["next_cursor"]}).json()
    assert [e["action"] for e in rest["items"]] == ["test.early"]
    assert rest["next_cursor"] is None
    # An id nobody has (or a deleted user's, whose events keep it) is simply no events.
    assert admin.get("/api/admin/audit", params={"actor_id": 999_999}).json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"actor_id": "alice"},
        {"actor_id": 0},
        {"actor_id": 2**63},
        {"since": "yesterday"},
        {"since": "2024-03-01T00:00:00"},  # naive: whose midnight?
        {"until": "2024-03-01"},
        {"since": "2024-02-30T00:00:00Z"},
        {"since": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {"until": "9999-12-31T23:59:59-05:00"},  # after year 9999 in UTC
        {"since": "2024-03-02T00:00:00Z", "until": "2024-03-01T00:00:00Z"},
        {"since": "2024-03-01T00:00:00Z", "until": "2024-03-01T00:00:00Z"},
        {"since": "x" * 5000},
    ],
)
def test_bad_audit_filters_get_422(admin: ApiClient, params: dict[str, Any]) -> None:
    response = admin.get("/api/admin/audit", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_an_undrained_worker_takes_work_again(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(
        run_jobs=True,
        heartbeat_interval_seconds=0.2,
        scheduler_interval_seconds=0.1,
        standalone_gpu_slots=0,
        standalone_cpu_slots=1,
    )
    with TestClient(app):
        factory = Factory(app)
        admin = factory.client(factory.user("root", is_admin=True))
        workers = admin.get("/api/admin/queue").json()["workers"]
        worker = next(w for w in workers if w["pools"] == ["cpu"])
        drain = f"/api/admin/workers/{worker['id']}/drain"
        assert admin.post(drain, json={"draining": True}).status_code == 200
        time.sleep(1.0)  # several heartbeats: the worker has paused its consumers
        assert admin.post(drain, json={"draining": False}).json()["draining"] is False
        made = admin.post("/api/admin/diagnostics/jobs", json={"pool": "cpu"})
        job_id = made.json()[0]["id"]
        # The undrained worker runs it.
        wait_job(admin, job_id, 15, states={"succeeded"})
