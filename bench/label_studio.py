"""Label Studio 1.23.2, measured in the same run as the bench that compares against it.

The benches (ingest.py, api.py, startup.py, inference_memory.py) used to divide by
figures recorded on another day and another machine; with ``--label-studio`` they call
this module instead. It installs Label Studio into its own virtualenv
(``bench/.venvs/label-studio``, reused once there), starts it on a free loopback port
with SQLite in a temp data dir, offline (no version check, no Sentry, no analytics,
feature flags from the package), and measures what the Oculab benches measure:

- ``startup_seconds()``: launch to the first ``GET /health/`` 200 on an empty data dir
  (migrations and the first user included, as Oculab's first start creates its admin);
- ``upload_seconds(files, batch)``: ``files`` posted to ``/api/projects/{id}/import`` in
  multipart requests of ``batch``, one after the other;
- ``saves_per_second(clients, seconds)``: each client loops GET an annotation, PATCH its
  result with three rectangles (api.py's GET-then-PUT of three boxes);
- ``memory_mib(files)``: RSS of the server's process tree idle after start, and its peak
  (VmHWM) after an upload and a few saves.

Progress goes to stderr. Nothing here imports the server; httpx comes from the bench's
venv, Label Studio runs only in its own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from common import (
    BENCH,
    HOST,
    BenchError,
    die_with_parent,
    expect,
    free_port,
    healthy,
    memory_mib,
    process_tree,
    progress,
    run_together,
    scratch_dir,
)

VERSION = "1.23.2"
# How the benches label the constants they fall back on without --label-studio; the
# repository does not keep the date of that measurement.
RECORDED = "recorded for issue 13 on another day and machine, not this run"
VENV = BENCH / ".venvs" / "label-studio"
USERNAME = "bench@example.com"  # LS users are e-mail addresses
START_TIMEOUT = 300.0  # seconds; a first start migrates ~200 Django migrations
POLL_SECONDS = 0.02
HTTP_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
IDLE_SETTLE_SECONDS = 2.0  # as inference_memory.py waits before reading Oculab's idle RSS
LABELS = ("a", "b", "c")
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{label}"/>' for label in LABELS)
    + "</RectangleLabels></View>"
)
# api.py's BOXES (normalised 0-1) as LS rectangles (percent of the image).
RECTANGLES = [
    {
        "id": f"r{index}",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 640,
        "original_height": 480,
        "image_rotation": 0,
        "value": {
            "x": x * 100,
            "y": y * 100,
            "width": w * 100,
            "height": h * 100,
            "rotation": 0,
            "rectanglelabels": [LABELS[index]],
        },
    }
    for index, (x, y, w, h) in enumerate(
        [(0.1, 0.1, 0.2, 0.2), (0.4, 0.4, 0.2, 0.3), (0.6, 0.1, 0.3, 0.25)]
    )
]
# Settings LS reads from its environment (bare or LABEL_STUDIO_-prefixed): whatever the
# caller's shell has set must not reach it, so these prefixes are stripped first.
_INHERITED = ("LABEL_STUDIO_", "HEARTEX_", "DJANGO_", "POSTGRE_", "OCULAB_")
_OFFLINE_ENV = {
    "DJANGO_DB": "sqlite",
    "LATEST_VERSION_CHECK": "false",  # else a pypi.org request at start
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",  # empty = off; the defaults point at Heartex's Sentry
    "FRONTEND_SENTRY_DSN": "",
    "FEATURE_FLAGS_OFFLINE": "true",
    # Anything left that reaches out (requests, urllib, httpx honour these) fails at once
    # on a closed local port instead of waiting on the network; loopback stays direct.
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


# --- installation --------------------------------------------------------------------------


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    found = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def ensure_installed() -> Path:
    """The ``label-studio`` command of ``bench/.venvs/label-studio``, created and filled
    by pip from the configured index the first time (a few minutes), reused after."""
    python = VENV / "bin" / "python"
    command = VENV / "bin" / "label-studio"
    if _installed_version(python) == VERSION and command.exists():
        return command
    if not python.exists():
        progress(f"creating {VENV}")
        # LS 1.23.2 wants Python >= 3.10; the bench's own interpreter (3.11+) fits.
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    progress(f"installing label-studio=={VERSION} into {VENV} (pip, a few minutes)")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"label-studio=={VERSION}"],
        stdout=sys.stderr,
    )
    if installed.returncode != 0 or _installed_version(python) != VERSION:
        raise BenchError(f"pip could not install label-studio=={VERSION} into {VENV}")
    return command


# --- a running server ----------------------------------------------------------------------


@dataclass
class LabelStudio:
    url: str
    token: str
    pid: int
    start_seconds: float  # launch to the first healthy answer
    log_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Token {self.token}"},
            timeout=HTTP_TIMEOUT,
        )

    def tree_memory_mib(self) -> dict[str, float]:
        """VmRSS and VmHWM summed over the server and its live children."""
        total = {"VmRSS": 0.0, "VmHWM": 0.0}
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError):
                for key, value in memory_mib(pid).items():
                    total[key] += value
        return total


def _environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED)}
    env.pop("PYTHONPATH", None)  # bench/ on it would shadow the package with this module
    for name in _OFFLINE_ENV:  # the bare names LS also reads; proxies in either case
        env.pop(name, None)
        env.pop(name.lower(), None)
    env.update(_OFFLINE_ENV)
    env["LABEL_STUDIO_BASE_DATA_DIR"] = str(data_dir)
    return env


def _stop_tree(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM the server and whatever it started, then SIGKILL what is left."""
    members = process_tree(process.pid) if process.poll() is None else []
    for pid in reversed(members):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid in members[1:]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(timeout: float = START_TIMEOUT, max_files: int = 100) -> Iterator[LabelStudio]:
    """Label Studio on a free loopback port with an empty SQLite database in a temp dir,
    an admin with a legacy API token (``Authorization: Token``, enabled for its
    organisation by ``--enable-legacy-api-token``); stopped and removed at exit.
    ``max_files``: files per request it accepts (LS's default is 100)."""
    command = ensure_installed()
    with scratch_dir("oculab-bench-label-studio-") as root:
        data_dir = root / "data"
        port = free_port()
        token = secrets.token_hex(20)
        log_path = root / "label-studio.log"
        argv = [
            str(command),
            "start",
            "--no-browser",
            "--internal-host",
            HOST,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--username",
            USERNAME,
            # One argument: a password starting with "-" would read as an option.
            f"--password={secrets.token_urlsafe(18)}",
            "--user-token",
            token,
            "--enable-legacy-api-token",
        ]
        with log_path.open("wb") as log:
            start = time.perf_counter()
            process = subprocess.Popen(
                argv,
                env=_environment(data_dir) | {"DATA_UPLOAD_MAX_NUMBER_FILES": str(max_files)},
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        try:
            while not healthy(port, HOST, "/health/"):
                if process.poll() is not None:
                    raise BenchError(
                        f"label-studio exited with {process.returncode}:\n"
                        + log_path.read_text(errors="replace")[-3000:]
                    )
                if time.perf_counter() - start > timeout:
                    raise BenchError(f"label-studio not healthy within {timeout:.0f} s")
                time.sleep(POLL_SECONDS)
            elapsed = time.perf_counter() - start
            progress(f"label studio {VERSION} healthy after {elapsed:.1f} s on port {port}")
            yield LabelStudio(f"http://{HOST}:{port}", token, process.pid, elapsed, log_path)
        finally:
            _stop_tree(process)


# --- HTTP helpers --------------------------------------------------------------------------


def create_project(client: httpx.Client, title: str) -> int:
    body = {"title": title, "label_config": LABEL_CONFIG}
    project_id: int = expect(client.post("/api/projects/", json=body), 201)["id"]
    return project_id


def task_count(client: httpx.Client, project_id: int) -> int:
    count: int = expect(client.get(f"/api/projects/{project_id}/"), 200)["task_number"]
    return count


def import_files(
    client: httpx.Client, project_id: int, files: Sequence[tuple[str, bytes]], batch: int
) -> None:
    for first in range(0, len(files), batch):
        # LS reads request.FILES by field name, so every part needs its own.
        parts = [(name, (name, data, "image/jpeg")) for name, data in files[first : first + batch]]
        expect(client.post(f"/api/projects/{project_id}/import", files=parts), 201)


# --- measurements --------------------------------------------------------------------------


def startup_seconds() -> float:
    """Launch to the first healthy answer, on an empty data dir."""
    with running() as ls:
        return ls.start_seconds


def upload_seconds(files: Sequence[tuple[str, bytes]], batch: int) -> float:
    """Wall time of posting ``files`` (name, JPEG bytes) to a new project's import in
    requests of ``batch``, one after the other."""
    with running(max_files=max(100, batch)) as ls, ls.client() as client:
        project_id = create_project(client, "upload")
        progress(f"label studio: uploading {len(files)} files in requests of {batch}")
        start = time.perf_counter()
        import_files(client, project_id, files, batch)
        elapsed = time.perf_counter() - start
        if (count := task_count(client, project_id)) != len(files):
            raise BenchError(f"label studio made {count} tasks of {len(files)} files")
        progress(f"label studio: upload took {elapsed:.2f} s")
        return elapsed


def _seed_annotations(client: httpx.Client, tasks: int) -> list[int]:
    """A project of ``tasks`` tasks (image URLs only: saves never fetch the image) with
    one annotation each; returns the annotation ids."""
    project_id = create_project(client, "saves")
    body = [{"data": {"image": f"/static/bench/{index}.jpg"}} for index in range(tasks)]
    expect(client.post(f"/api/projects/{project_id}/import", json=body), 201)
    task_ids: list[int] = []
    page = 1
    while len(task_ids) < tasks:
        found = expect(
            client.get(
                "/api/tasks/", params={"project": project_id, "page": page, "page_size": 100}
            ),
            200,
        )
        chunk = found["tasks"] if isinstance(found, dict) else found
        if not chunk:
            break
        task_ids.extend(task["id"] for task in chunk)
        page += 1
    if len(task_ids) != tasks:
        raise BenchError(f"label studio listed {len(task_ids)} of {tasks} tasks")
    return [
        expect(
            client.post(f"/api/tasks/{task_id}/annotations/", json={"result": RECTANGLES}),
            201,
        )["id"]
        for task_id in task_ids
    ]


@dataclass
class _Saves:
    saves: int = 0
    errors: int = 0
    first_error: str | None = None
    patch_seconds: list[float] = field(default_factory=list)


def _save_loop(
    ls: LabelStudio,
    annotation_ids: Sequence[int],
    seconds: float,
    start_line: threading.Barrier,
    stats: _Saves,
) -> None:
    """One annotator, as api.py's: read an annotation, write three rectangles, repeat."""
    with ls.client() as client:
        start_line.wait()
        deadline = time.perf_counter() + seconds
        for annotation_id in itertools.cycle(annotation_ids):
            if time.perf_counter() >= deadline:
                return
            try:
                current = client.get(f"/api/annotations/{annotation_id}/")
                if current.status_code != 200:
                    raise BenchError(f"GET {current.status_code}: {current.text[:300]}")
                started = time.perf_counter()
                saved = client.patch(
                    f"/api/annotations/{annotation_id}/", json={"result": RECTANGLES}
                )
                stats.patch_seconds.append(time.perf_counter() - started)
                if saved.status_code != 200:
                    raise BenchError(f"PATCH {saved.status_code}: {saved.text[:300]}")
                stats.saves += 1
            except (httpx.TransportError, BenchError) as exc:
                stats.errors += 1
                stats.first_error = stats.first_error or f"{type(exc).__name__}: {exc}"


def saves_per_second(clients: int = 8, seconds: float = 15.0, tasks: int = 400) -> float:
    """Successful annotation saves per second of ``clients`` threads for ``seconds``,
    each on its own annotations (no two clients write the same one)."""
    with running() as ls:
        progress(f"label studio: {tasks} tasks with an annotation each (untimed)")
        with ls.client() as client:
            annotation_ids = _seed_annotations(client, tasks)
        progress(f"label studio: annotation saves, {clients} clients for {seconds:.0f} s")
        stats = [_Saves() for _ in range(clients)]
        elapsed = run_together(
            [
                partial(_save_loop, ls, annotation_ids[i::clients], seconds, stats=stats[i])
                for i in range(clients)
            ]
        )
        saves = sum(s.saves for s in stats)
        if errors := sum(s.errors for s in stats):
            first = next(s.first_error for s in stats if s.first_error)
            progress(f"WARNING: label studio: {errors} failed requests; first: {first}")
        if not saves:
            raise BenchError("label studio saved nothing")
        rate = saves / elapsed
        progress(f"label studio: {saves} saves in {elapsed:.1f} s = {rate:.1f}/s")
        return rate


def memory(files: Sequence[tuple[str, bytes]]) -> dict[str, float]:
    """RSS (MiB) of the server's process tree idle ``IDLE_SETTLE_SECONDS`` after it is
    healthy, and its peak (VmHWM) after importing ``files`` in one request and saving
    an annotation on each of their tasks."""
    with running(max_files=max(100, len(files))) as ls:
        time.sleep(IDLE_SETTLE_SECONDS)
        idle = ls.tree_memory_mib()
        with ls.client() as client:
            project_id = create_project(client, "memory")
            import_files(client, project_id, files, max(1, len(files)))
            found = expect(
                client.get("/api/tasks/", params={"project": project_id, "page_size": 100}), 200
            )
            for task in found["tasks"] if isinstance(found, dict) else found:
                expect(
                    client.post(
                        f"/api/tasks/{task['id']}/annotations/", json={"result": RECTANGLES}
                    ),
                    201,
                )
        after = ls.tree_memory_mib()
        progress(f"label studio: idle RSS {idle['VmRSS']:.0f} MiB, peak {after['VmHWM']:.0f} MiB")
        return {"idle_rss_mib": idle["VmRSS"], "peak_rss_mib": after["VmHWM"]}
