"""The web app as the API serves it, and the typed client generated from the API."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.web.endpoints import STATIC_DIR
from server.web.openapi import openapi_document, render

ROOT = Path(__file__).resolve().parent.parent
API_DIR = ROOT / "frontend" / "src" / "api"
REGENERATE = "run `make openapi` (then commit frontend/src/api/openapi.json and schema.d.ts)"

INDEX = b'<!doctype html><html><head><script type="module" src="/assets/index-abc123.js"></script></head><body><div id="root"></div></body></html>'  # noqa: E501
SCRIPT = b"console.log('oculab');\n" * 50


@pytest.fixture
def web(app: FastAPI, tmp_path: Path) -> TestClient:
    build = tmp_path / "web"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_bytes(INDEX)
    (build / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (build / "assets" / "index-abc123.js").write_bytes(SCRIPT)
    (build / "assets" / "index-abc123.js.gz").write_bytes(gzip.compress(SCRIPT))
    (build / ".vite").mkdir()
    (build / ".vite" / "manifest.json").write_text('{"oculab": "not for the web"}')
    (tmp_path / "secret.txt").write_text("not for the web")
    app.state.web_dir = build
    return TestClient(app)


@pytest.mark.parametrize("path", ["/", "/projects", "/projects/12/images?status=reviewed"])
def test_client_routes_answer_index_html_uncached_with_a_strict_csp(
    web: TestClient, path: str
) -> None:
    response = web.get(path)
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    policy = response.headers["content-security-policy"]
    csp = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert csp["script-src"] == "'self'"  # no inline script, no CDN
    assert csp["connect-src"] == "'self'"
    assert csp["img-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy


def test_hashed_assets_are_cached_immutable_and_sent_gzipped_when_accepted(
    web: TestClient,
) -> None:
    plain = web.get("/assets/index-abc123.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.content == SCRIPT
    assert "immutable" in plain.headers["cache-control"]
    assert plain.headers["content-type"].startswith("text/javascript")
    zipped = web.get("/assets/index-abc123.js", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == SCRIPT  # httpx decodes it
    assert zipped.headers["vary"] == "Accept-Encoding"


def test_top_level_files_are_served_and_revalidated(web: TestClient) -> None:
    response = web.get("/favicon.svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/assets/index-old999.js",
        "/assets/%2e%2e/index.html",
        "/robots.txt",
        "/..%2Fsecret.txt",
        "/.vite/manifest.json",
    ],
)
def test_missing_files_and_escapes_are_404_not_the_app(web: TestClient, path: str) -> None:
    response = web.get(path)
    assert response.status_code == 404
    assert b"oculab" not in response.content
    assert b"not for the web" not in response.content


def test_api_paths_keep_their_json_errors(web: TestClient) -> None:
    for method, path in [("GET", "/api/nope"), ("POST", "/api/nope"), ("GET", "/auth/nope")]:
        response = web.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/json"
    assert web.get("/api/health").json()["status"] == "ok"
    assert web.get("/openapi.json").json()["info"]["title"] == "Oculab"
    assert web.post("/api/health").status_code == 405


def test_without_a_build_the_root_says_how_to_build_it(app: FastAPI, tmp_path: Path) -> None:
    app.state.web_dir = tmp_path / "nothing-here"
    client = TestClient(app)
    for path in ("/", "/projects"):
        response = client.get(path)
        assert response.status_code == 503
        assert "make frontend" in response.text
        assert "/docs" in response.text
        assert "content-security-policy" in response.headers
    assert client.get("/assets/index-abc123.js").status_code == 404


def test_the_app_serves_the_packaged_build_by_default(app: FastAPI) -> None:
    assert app.state.web_dir == STATIC_DIR


def test_generated_api_client_matches_the_current_api() -> None:
    """frontend/src/api/{openapi.json,schema.d.ts} must follow every endpoint change."""
    current = render(openapi_document())
    committed = (API_DIR / "openapi.json").read_text(encoding="utf-8")
    assert committed == current, f"frontend/src/api/openapi.json is stale: {REGENERATE}"
    header = (API_DIR / "schema.d.ts").read_text(encoding="utf-8")[:400]
    match = re.search(r"openapi-sha256: ([0-9a-f]{64})", header)
    assert match, f"frontend/src/api/schema.d.ts has no openapi-sha256 header: {REGENERATE}"
    digest = hashlib.sha256(committed.encode("utf-8")).hexdigest()
    assert match.group(1) == digest, f"frontend/src/api/schema.d.ts is stale: {REGENERATE}"


def test_the_web_app_palette_is_the_servers() -> None:
    """New classes get the same colour in the class editor as the server would give."""
    from server.projects.schemas import PALETTE

    source = (ROOT / "frontend" / "src" / "features" / "projects" / "palette.ts").read_text()
    array = source[source.index("PALETTE = [") : source.index("] as const")]
    assert re.findall(r'"(#[0-9a-f]{6})"', array) == list(PALETTE)


EDITOR_MANIFEST = {
    "index.html": {"file": "assets/index-abc123.js", "isEntry": True},
    "src/features/editor/EditorPage.tsx": {
        "file": "assets/EditorPage-def456.js",
        "isDynamicEntry": True,
        "imports": ["index.html", "_konva-789.js"],
        "css": ["assets/EditorPage-aaa.css"],
    },
    "_konva-789.js": {"file": "assets/konva-789.js", "imports": ["index.html"]},
}


def test_the_editor_page_names_its_code_data_and_thumbnail_up_front(
    web: TestClient, app: FastAPI
) -> None:
    (app.state.web_dir / ".vite" / "manifest.json").write_text(json.dumps(EDITOR_MANIFEST))
    html = web.get("/projects/3/images/42").text
    head = html.split("</head>")[0]
    assert '<link rel="preload" as="fetch" crossorigin href="/api/images/42/editor">' in head
    assert '<link rel="preload" as="image" href="/api/images/42/thumbnail">' in head
    assert 'rel="modulepreload" crossorigin href="/assets/EditorPage-def456.js"' in head
    assert 'rel="modulepreload" crossorigin href="/assets/konva-789.js"' in head
    assert 'href="/assets/EditorPage-aaa.css"' in head
    assert html.count("index-abc123.js") == 1  # the entry is not named twice


RUN_MANIFEST = {
    "index.html": {"file": "assets/index-abc123.js", "isEntry": True},
    "src/features/training/RunPage.tsx": {
        "file": "assets/RunPage-123.js",
        "isDynamicEntry": True,
        "imports": ["index.html", "_uplot-456.js"],
        "css": ["assets/uplot-aaa.css"],
    },
    "_uplot-456.js": {"file": "assets/uplot-456.js", "imports": ["index.html"]},
}


def test_a_training_run_page_names_its_code_and_data_up_front(
    web: TestClient, app: FastAPI
) -> None:
    (app.state.web_dir / ".vite" / "manifest.json").write_text(json.dumps(RUN_MANIFEST))
    head = web.get("/projects/3/training/77").text.split("</head>")[0]
    for data in ("/api/jobs/77", "/api/jobs/77/metrics", "/api/me"):
        assert f'<link rel="preload" as="fetch" crossorigin href="{data}">' in head
    assert 'rel="modulepreload" crossorigin href="/assets/RunPage-123.js"' in head
    assert 'rel="modulepreload" crossorigin href="/assets/uplot-456.js"' in head
    assert 'href="/assets/uplot-aaa.css"' in head
    assert "/api/images/" not in head


@pytest.mark.parametrize(
    "path",
    [
        "/projects/3/images",
        "/projects/3/images/0",
        "/projects/3/images/abc",
        "/projects/3/images/42/extra",
        "/projects/3/images/42%22%3E%3Cscript%3E",
        "/projects/3/images/" + "9" * 30,
        "/projects/3/training",
        "/projects/3/training/0",
        "/projects/3/training/77/extra",
    ],
)
def test_other_addresses_get_the_plain_page(web: TestClient, path: str) -> None:
    response = web.get(path)
    assert response.status_code == 200
    assert response.content == INDEX


def test_without_a_usable_manifest_the_editor_page_names_its_data_only(web: TestClient) -> None:
    html = web.get("/projects/3/images/42").text
    assert "/api/images/42/editor" in html
    assert "modulepreload" not in html
