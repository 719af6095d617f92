"""Serves the built SPA: hashed assets cached forever, ``index.html`` for client routes.

The build (``frontend/`` → ``vite build``) lands in ``server/web/static/`` so that an
editable install, the wheel (package data) and the ``api`` image all find it in one
place. Without a build, ``/`` answers 503 with how to make one, never a 500.
"""

from __future__ import annotations

import functools
import json
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


# The build's files are small (the largest script is ~120 KB gzipped) and a hashed
# asset never changes: kept in memory, a page's scripts cost the server no file reads.
_CACHED_BYTES = 4 * 1024 * 1024


@functools.lru_cache(maxsize=512)
def _read(path: Path, mtime_ns: int, size: int) -> bytes:
    return path.read_bytes()


def _bytes(path: Path) -> bytes | None:
    stat = path.stat()
    return _read(path, stat.st_mtime_ns, stat.st_size) if stat.st_size <= _CACHED_BYTES else None


def _file_response(request: Request, path: Path, cache_control: str) -> Response:
    headers = {"Cache-Control": cache_control}
    media_type = _MEDIA_TYPES.get(path.suffix)
    if path.suffix in _GZIP_TYPES:
        headers["Vary"] = "Accept-Encoding"
        gz = path.with_name(path.name + ".gz")
        if "gzip" in request.headers.get("accept-encoding", "") and gz.is_file():
            headers["Content-Encoding"] = "gzip"
            path = gz
    content = _bytes(path)
    if content is None:
        return FileResponse(path, media_type=media_type, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


# Deep links to the editor and to a training run: the page each opens needs its code,
# its data (and, for the editor, the image's thumbnail), which the HTML names up front
# so that the browser fetches them while the app's own script downloads and runs (else
# they wait for it to load, run and route). Each data hint is the very GET the page
# makes, so the browser hands the page the preloaded answer; the session (GET /api/me),
# which a signed-in page is rendered after, is one of them.
_EDITOR_ROUTE = re.compile(r"projects/[1-9][0-9]{0,17}/images/([1-9][0-9]{0,17})")
_EDITOR_CHUNK = "src/features/editor/EditorPage.tsx"
_RUN_ROUTE = re.compile(r"projects/[1-9][0-9]{0,17}/training/([1-9][0-9]{0,17})")
_RUN_CHUNK = "src/features/training/RunPage.tsx"
_SESSION = "/api/me"


@functools.lru_cache(maxsize=4)
def _chunk_files(manifest: Path, mtime_ns: int, entry: str) -> tuple[list[str], list[str]]:
    """The scripts and style sheets a lazy chunk loads (the entry's own excepted)."""
    chunks = json.loads(manifest.read_text(encoding="utf-8"))
    scripts: list[str] = []
    styles: list[str] = []
    todo = [entry]
    while todo:
        chunk = chunks.get(todo.pop())
        if not isinstance(chunk, dict) or chunk.get("isEntry"):
            continue
        if chunk["file"] not in scripts:
            scripts.append(chunk["file"])
            styles.extend(css for css in chunk.get("css", []) if css not in styles)
            todo.extend(chunk.get("imports", []))
    return scripts, styles


def _hints(root: Path, chunk: str, data: list[str], images: list[str]) -> bytes:
    links = [f'<link rel="preload" as="fetch" crossorigin href="{path}">' for path in data]
    links += [f'<link rel="preload" as="image" href="{path}">' for path in images]
    manifest = root / ".vite" / "manifest.json"
    try:
        scripts, styles = _chunk_files(manifest, manifest.stat().st_mtime_ns, chunk)
    except (OSError, ValueError, KeyError, TypeError):
        scripts, styles = [], []  # a build without a manifest: the data hints only
    links += [f'<link rel="modulepreload" crossorigin href="/{file}">' for file in scripts]
    links += [f'<link rel="stylesheet" crossorigin href="/{file}">' for file in styles]
    return "".join(links).encode()


def _route_hints(root: Path, client_path: str) -> bytes | None:
    editor = _EDITOR_ROUTE.fullmatch(client_path)
    if editor is not None:
        image = editor.group(1)
        return _hints(
            root,
            _EDITOR_CHUNK,
            [f"/api/images/{image}/editor", _SESSION],
            [f"/api/images/{image}/thumbnail"],
        )
    run = _RUN_ROUTE.fullmatch(client_path)
    if run is not None:
        job = run.group(1)
        data = [f"/api/jobs/{job}", f"/api/jobs/{job}/metrics", _SESSION]
        return _hints(root, _RUN_CHUNK, data, [])
    return None


def _index(request: Request, client_path: str = "") -> Response:
    root = _web_dir(request)
    index = _file_in(root, "index.html")
    if index is None:
        return HTMLResponse(NOT_BUILT, status_code=503, headers=HTML_HEADERS)
    # Read through the same mtime-keyed cache as the assets: every client route is
    # answered with it, on the event loop.
    html = _bytes(index) or index.read_bytes()
    hints = _route_hints(root, client_path)
    if hints is not None and b"</head>" in html:
        html = html.replace(b"</head>", hints + b"</head>", 1)
    return HTMLResponse(html, headers=HTML_HEADERS)


def install_web(app: FastAPI, web_dir: Path = STATIC_DIR) -> None:
    """Adds the SPA's routes. Call after every API router: they match what is left."""
    app.state.web_dir = web_dir

    # These three are async: what they read is in memory or a small file, and on the
    # event loop they are not queued behind the API's threadpool requests (a page's
    # script and its data are asked for at once; measured on a cold open, an asset
    # took ~24 ms of server time from the threadpool, ~2 ms here).
    @app.api_route("/assets/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_asset(path: str, request: Request) -> Response:
        found = _file_in(_web_dir(request) / "assets", path)
        if found is None:
            raise NotFound("no such asset")
        return _file_response(request, found, IMMUTABLE)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_root(request: Request) -> Response:
        return _index(request)

    @app.api_route("/{path:oculab_client_path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_client_route(path: str, request: Request) -> Response:
        if path == "index.html":
            return _index(request)
        found = _file_in(_web_dir(request), path)
        if found is not None:
            # Top-level files (favicon, robots.txt) keep their names: revalidate them.
            return _file_response(request, found, "no-cache")
        if re.search(r"\.[A-Za-z0-9]{1,8}$", path.rsplit("/", 1)[-1]):
            raise NotFound("no such file")
        return _index(request, path)
