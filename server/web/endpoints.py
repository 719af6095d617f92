"""Serves the built SPA: hashed assets cached forever, ``index.html`` for client routes.

The build (``frontend/`` → ``vite build``) lands in ``server/web/static/`` so that an
editable install, the wheel (package data) and the ``api`` image all find it in one
place. Without a build, ``/`` answers 503 with how to make one, never a 500.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from server.kit.errors import NotFound

STATIC_DIR = Path(__file__).parent / "static"

# Applies to the HTML documents only; the API answers JSON and never renders markup.
# No inline script or style, no third-party origin, images only from our own endpoints.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HTML_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CONTENT_SECURITY_POLICY}
# Vite puts a content hash in every file name under assets/.
IMMUTABLE = "public, max-age=31536000, immutable"

# Paths the SPA never answers: the API, the login redirects, the API docs and metrics.
# Unknown paths under them keep the API's JSON 404 (and 405 for a wrong method).
_RESERVED = r"(?:api|auth|docs|redoc)(?:/|$)|openapi\.json$|metrics$|assets/"


class _ClientPath(Convertor[str]):
    regex = rf"(?!{_RESERVED}).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("oculab_client_path", _ClientPath())

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Oculab: web app not built</title></head>
<body>
<h1>The Oculab web app is not built</h1>
<p>The API is running; its documentation is at <a href="/docs">/docs</a>.</p>
<p>To build the web app from a source checkout run <code>make frontend</code>
(or <code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code>); <code>make run</code>
does it for you. Container images and wheels carry it already built.</p>
</body></html>
"""

_GZIP_TYPES = {".js", ".css", ".svg", ".json", ".html", ".map", ".txt"}
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}


def _web_dir(request: Request) -> Path:
    path: Path = request.app.state.web_dir
    return path


def _file_in(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it is a file inside ``root`` (no ``..``, no symlink escape)."""
    if not relative or "\x00" in relative:
        return None
    # Nothing hidden (the build's .vite/manifest.json): only what the app loads.
    if any(part.startswith(".") for part in relative.replace("\\", "/").split("/")):
        return None
    try:
        base = root.resolve(strict=True)
        candidate = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def _file_response(request: Request, path: Path, cache_control: str) -> Response:
    headers = {"Cache-Control": cache_control}
    media_type = _MEDIA_TYPES.get(path.suffix)
    if path.suffix in _GZIP_TYPES:
        headers["Vary"] = "Accept-Encoding"
        gz = path.with_name(path.name + ".gz")
        if "gzip" in request.headers.get("accept-encoding", "") and gz.is_file():
            headers["Content-Encoding"] = "gzip"
            return FileResponse(gz, media_type=media_type, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)


def _index(request: Request) -> Response:
    index = _file_in(_web_dir(request), "index.html")
    if index is None:
        return HTMLResponse(NOT_BUILT, status_code=503, headers=HTML_HEADERS)
    return HTMLResponse(index.read_bytes(), headers=HTML_HEADERS)


def install_web(app: FastAPI, web_dir: Path = STATIC_DIR) -> None:
    """Adds the SPA's routes. Call after every API router: they match what is left."""
    app.state.web_dir = web_dir

    @app.api_route("/assets/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    def web_asset(path: str, request: Request) -> Response:
        found = _file_in(_web_dir(request) / "assets", path)
        if found is None:
            raise NotFound("no such asset")
        return _file_response(request, found, IMMUTABLE)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def web_root(request: Request) -> Response:
        return _index(request)

    @app.api_route("/{path:oculab_client_path}", methods=["GET", "HEAD"], include_in_schema=False)
    def web_client_route(path: str, request: Request) -> Response:
        if path == "index.html":
            return _index(request)
        found = _file_in(_web_dir(request), path)
        if found is not None:
            # Top-level files (favicon, robots.txt) keep their names: revalidate them.
            return _file_response(request, found, "no-cache")
        if re.search(r"\.[A-Za-z0-9]{1,8}$", path.rsplit("/", 1)[-1]):
            raise NotFound("no such file")
        return _index(request)
