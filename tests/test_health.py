from __future__ import annotations

import shutil

from fastapi.testclient import TestClient

from server import __version__
from server.settings import Settings
from tests.factories import ApiClient


def test_health_answers_without_auth(client: TestClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_ready_reports_each_dependency(client: TestClient) -> None:
    response = client.get("/api/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "storage": "ok"}


def test_ready_is_503_when_storage_cannot_be_written(
    client: TestClient, settings: Settings
) -> None:
    tmp = settings.data_dir / "tmp"
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")  # even root cannot create files under a file
    response = client.get("/api/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["storage"].startswith("unavailable")


def test_metrics_count_requests_by_route_template(client: TestClient, alice: ApiClient) -> None:
    project = alice.project()
    alice.get(f"/api/projects/{project['id']}")
    alice.get("/api/projects/999999")
    text = client.get("/metrics").text
    assert (
        'oculab_http_requests_total{method="GET",route="/api/projects/{project_id}",status="200"}'
        in text
    )
    assert 'route="/api/projects/{project_id}",status="404"' in text
    assert "oculab_http_request_duration_seconds_bucket" in text
    assert "/api/projects/999999" not in text


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
