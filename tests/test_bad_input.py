"""Bad input that no single domain owns: body size, encodings, ids, methods."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import FastAPI

from server.models.project import Project
from tests.factories import ApiClient, Factory


def test_oversized_json_body_is_413_before_parsing(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(max_json_bytes=1024)
    f = factory_for(app)
    alice = f.client(f.user("alice"))
    response = alice.post("/api/projects", json={"name": "x", "description": "y" * 2000})
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert f.count(Project) == 0


def test_oversized_chunked_json_body_is_413(
    make_app: Callable[..., FastAPI], factory_for: Callable[[FastAPI], Factory]
) -> None:
    app = make_app(max_json_bytes=1024)
    f = factory_for(app)
    alice = f.client(f.user("alice"))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while streaming
        yield b'{"name": "x", "description": "'
        for _ in range(100):
            yield b"y" * 100
        yield b'"}'

    response = alice.post(
        "/api/projects", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert f.count(Project) == 0


def test_nul_bytes_in_text_are_422_on_every_backend(alice: ApiClient, factory: Factory) -> None:
    response = alice.post("/api/projects", json={"name": "ok", "description": "a\x00b"})
    assert response.status_code == 422
    assert "NUL" in response.json()["detail"]
    response = alice.post("/api/projects", json={"name": "ok", "classes": ["c\x00"]})
    assert response.status_code == 422
    assert factory.count(Project) == 0


def test_non_utf8_json_is_400(alice: ApiClient) -> None:
    response = alice.post(
        "/api/projects",
        content=b'{"name": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400


def test_wrong_json_types_are_422(alice: ApiClient) -> None:
    bodies: tuple[object, ...] = ([], "name", 42, None, {"name": 5}, {"name": ["a"]})
    for body in bodies:
        response = alice.post("/api/projects", json=body)
        assert response.status_code == 422, body


def test_wrong_method_is_405_json(alice: ApiClient) -> None:
    response = alice.put("/api/projects", json={})
    assert response.status_code == 405
    assert "detail" in response.json()


def test_errors_never_leak_tracebacks(alice: ApiClient) -> None:
    response = alice.get("/api/images/1/annotations")
    assert response.status_code == 404
    assert "Traceback" not in response.text
