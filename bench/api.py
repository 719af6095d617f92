"""End-to-end API benchmark: a real ``oculab api`` process on a scratch PostgreSQL database.

Run from the repository root::

    .venv/bin/python bench/api.py [--images 2000 --rows 100000 --seconds 15 --clients 8]

``--database sqlite`` runs ``oculab standalone`` (SQLite, in-process workers, demo off)
instead; ``--only saves`` (repeatable) runs just the named phases, e.g. the save load::

    .venv/bin/python bench/api.py --only saves --images 400 --database sqlite

``--label-studio`` also runs the same save load (clients, seconds) on Label Studio 1.23.2
(bench/label_studio.py) after Oculab's server has stopped, and divides by that; without
it ``save_vs_label_studio`` divides by 10.4 saves/s, recorded for issue 13 on another day
and machine.

Progress goes to stderr. Stdout gets a human-readable summary and, as its last line,
one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import itertools
import json
import math
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import label_studio
import psycopg
from common import (
    DEFAULT_PG_ADMIN_URL,
    HOST,
    OCULAB,
    BenchError,
    cpu_seconds,
    die_with_parent,
    expect,
    free_port,
    healthy,
    memory_mib,
    oculab_env,
    percentile,
    progress,
    run_together,
    scratch_database,
    scratch_dir,
    stop,
)
from label_studio import RECORDED
from PIL import Image

# Cursors are opaque to clients; the bench builds one directly only to reach a deep page
# of the 100k-row project without walking a thousand pages first.
from server.kit.pagination import encode_cursor

REDIS_URL = "redis://127.0.0.1:6379/15"
ADMIN_USERNAME = "bench"
STANDALONE_ADMIN = "admin"  # the account `oculab standalone` creates at first start
PAGE_SIZE = 100
UPLOAD_BATCH = 100
IMAGE_SIZE = (128, 96)
BOXES = [
    {"class_id": 0, "x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2},
    {"class_id": 1, "x": 0.4, "y": 0.4, "w": 0.2, "h": 0.3},
    {"class_id": 2, "x": 0.6, "y": 0.1, "w": 0.3, "h": 0.25},
]
HTTP_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
WARMUP_REQUESTS = 5
# The deep page of the big project starts this many rows before its end.
DEEP_PAGE_TAIL = 150
# Label Studio 1.23.2 (SQLite) under the same save load, recorded for issue 13 on another
# day and machine; the reference for the goal of >= 15x when --label-studio is not given.
LABEL_STUDIO_SAVES_PER_S = 10.4
# Annotations the Label Studio save load cycles over, per client (seeding them is one
# request each, untimed; 8 clients at LS's rate never get round to a second pass).
LABEL_STUDIO_TASKS_PER_CLIENT = 25

Results = dict[str, float | int]


# Phases ``--only`` can pick; images are uploaded whichever are picked (the other phases
# need them), but timed against the disk baseline only in ``upload``.
PHASES = ("upload", "list", "saves", "rows")
# Phases whose baselines are PostgreSQL queries; a SQLite run skips them.
POSTGRES_PHASES = frozenset({"list", "rows"})


@dataclass(frozen=True)
class Options:
    images: int
    rows: int
    seconds: float
    clients: int
    repeats: int
    pg_admin_url: str
    database: str = "postgres"
    phases: frozenset[str] = frozenset(PHASES)
    label_studio: bool = False


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images to upload")
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the big project")
    parser.add_argument("--seconds", type=float, default=15.0, help="annotation load duration")
    parser.add_argument("--clients", type=int, default=8, help="concurrent annotation clients")
    parser.add_argument("--repeats", type=int, default=50, help="samples per latency figure")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    parser.add_argument(
        "--database",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="postgres: `oculab api` on a scratch database; sqlite: `oculab standalone`",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PHASES,
        help="run only this phase (repeatable); default: all",
    )
    parser.add_argument(
        "--label-studio",
        action="store_true",
        help="also run the save load on Label Studio 1.23.2 in this run (installs it into"
        " bench/.venvs/ the first time) and take the ratio against that",
    )
    args = parser.parse_args(argv)
    if args.images < 1 or args.rows < PAGE_SIZE * 3 or args.clients < 1 or args.repeats < 1:
        parser.error("need --images >= 1, --rows >= 300, --clients >= 1, --repeats >= 1")
    phases = frozenset(args.only or PHASES)
    if args.database == "sqlite":
        if args.only and phases & POSTGRES_PHASES:
            chosen = ", ".join(sorted(phases & POSTGRES_PHASES))
            parser.error(f"--only {chosen}: the phase's baseline needs --database postgres")
        phases -= POSTGRES_PHASES
    return Options(
        args.images,
        args.rows,
        args.seconds,
        args.clients,
        args.repeats,
        args.pg_admin_url,
        args.database,
        phases,
        args.label_studio,
    )


# --- statistics ------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        return cls(percentile_ms(seconds, 50), percentile_ms(seconds, 95))


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return percentile(seconds, q) * 1000


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def sample(action: Callable[[], object], repeats: int) -> list[float]:
    """Durations of ``repeats`` calls, after a few untimed warm-up calls."""
    for _ in range(WARMUP_REQUESTS):
        action()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        durations.append(time.perf_counter() - start)
    return durations


# --- environment: database, data dir, server ------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """``database_url`` None: standalone on SQLite in ``data_dir``, with its local admin
    created at first start with ``admin_password`` and no demo project."""

    database_url: str | None
    data_dir: Path
    secret_key: str
    admin_password: str | None = None
    # OCULAB_STORAGE_SYNC; None: the server's default (auto)
    storage_sync: str | None = None

    @property
    def standalone(self) -> bool:
        return self.database_url is None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "oculab.db"

    @property
    def admin_username(self) -> str:
        return STANDALONE_ADMIN if self.standalone else ADMIN_USERNAME

    def env(self) -> dict[str, str]:
        settings = {
            "data_dir": str(self.data_dir),
            "secret_key": self.secret_key,
            "redis_url": REDIS_URL,
            "login_rate_limit_per_minute": "1000",
            "token_rate_limit_per_minute": "1000",
        }
        if self.database_url is not None:
            settings["database_url"] = self.database_url
        else:
            settings["seed_demo"] = "false"
        if self.admin_password is not None:
            settings["admin_password"] = self.admin_password
        if self.storage_sync is not None:
            settings["storage_sync"] = self.storage_sync
        return oculab_env(**settings)


def run_oculab(deployment: Deployment, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [OCULAB, *args],
        env=deployment.env(),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"oculab {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def wait_healthy(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"the server exited with {server.process.returncode}")
        if healthy(server.port):
            return
        time.sleep(0.2)
    raise BenchError(f"the server did not become healthy within {timeout:.0f} s")


def print_log_tail(log_path: Path, lines: int = 40) -> None:
    with contextlib.suppress(OSError):
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
        print("--- server log (tail) ---", *tail, "---", sep="\n", file=sys.stderr)


@contextlib.contextmanager
def running_server(deployment: Deployment, log_path: Path) -> Iterator[Server]:
    port = free_port()
    command = "standalone" if deployment.standalone else "api"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [OCULAB, command, "--host", HOST, "--port", str(port)],
            env=deployment.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    server = Server(process, port, log_path)
    try:
        wait_healthy(server)
        progress(f"server pid {process.pid} healthy at {server.base_url}")
        yield server
    except Exception:
        stop(process)
        print_log_tail(log_path)
        raise
    finally:
        stop(process)


# --- HTTP helpers ------------------------------------------------------------------------


def http_client(base_url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=HTTP_TIMEOUT)


def create_api_token(base_url: str, password: str, username: str = ADMIN_USERNAME) -> str:
    with http_client(base_url) as session:
        me = expect(
            session.post(
                "/api/auth/local/login", json={"username": username, "password": password}
            ),
            200,
        )
        created = expect(
            session.post(
                "/api/tokens", json={"name": "bench"}, headers={"X-CSRF-Token": me["csrf_token"]}
            ),
            201,
        )
    token: str = created["token"]
    return token


def create_project(client: httpx.Client, name: str) -> int:
    body = expect(
        client.post("/api/projects", json={"name": name, "classes": ["a", "b", "c"]}), 201
    )
    project_id: int = body["id"]
    return project_id


def list_page(
    client: httpx.Client, project_id: int, cursor: str | None = None, **filters: str
) -> dict[str, Any]:
    params: dict[str, str | int] = {"limit": PAGE_SIZE, **filters}
    if cursor is not None:
        params["cursor"] = cursor
    page: dict[str, Any] = expect(
        client.get(f"/api/projects/{project_id}/images", params=params), 200
    )
    return page


# --- phase: upload -----------------------------------------------------------------------


def noise_jpegs(count: int) -> list[bytes]:
    width, height = IMAGE_SIZE
    images = []
    for _ in range(count):
        img = Image.frombytes("RGB", IMAGE_SIZE, os.urandom(width * height * 3))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=90)
        images.append(out.getvalue())
    return images


def raw_disk_seconds(images: Sequence[bytes], directory: Path) -> float:
    """What storing the bytes costs with no server: sha256, write, fsync per file, then
    the directory's fsync (what makes the new names durable, as the server does)."""
    directory.mkdir()
    start = time.perf_counter()
    for index, data in enumerate(images):
        hashlib.sha256(data).hexdigest()
        with open(directory / f"{index}.jpg", "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def upload_all(
    client: httpx.Client, project_id: int, images: Sequence[bytes]
) -> tuple[list[int], float]:
    """Uploads in batches; returns the created image ids and the wall time."""
    ids: list[int] = []
    start = time.perf_counter()
    for first in range(0, len(images), UPLOAD_BATCH):
        batch = images[first : first + UPLOAD_BATCH]
        files = [
            ("files", (f"noise_{first + i:06d}.jpg", data, "image/jpeg"))
            for i, data in enumerate(batch)
        ]
        result = expect(client.post(f"/api/projects/{project_id}/images", files=files), 201)
        if result["created"] != len(batch):
            raise BenchError(f"upload created {result['created']} of {len(batch)}: {result}")
        ids.extend(item["image_id"] for item in result["items"])
    return ids, time.perf_counter() - start


def bench_upload(
    client: httpx.Client, project_id: int, count: int, root: Path
) -> tuple[list[int], Results]:
    progress(f"generating {count} noise JPEGs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}")
    images = noise_jpegs(count)
    progress("raw disk baseline (sha256 + write + fsync per file)")
    raw_seconds = raw_disk_seconds(images, root / "raw-disk")
    progress(f"uploading {count} images in requests of {UPLOAD_BATCH}")
    ids, upload_seconds = upload_all(client, project_id, images)
    api_rate = count / upload_seconds
    raw_rate = count / raw_seconds
    return ids, {
        "upload_images": count,
        "upload_bytes_mean": sum(map(len, images)) // count,
        "upload_seconds": upload_seconds,
        "upload_images_per_s": api_rate,
        "upload_raw_disk_images_per_s": raw_rate,
        "upload_ratio": ratio(raw_rate, api_rate),
    }


# --- phase: annotations ----------------------------------------------------------------


def put_boxes(client: httpx.Client, image_id: int, base_revision: int) -> httpx.Response:
    return client.put(
        f"/api/images/{image_id}/annotations", json={"base_revision": base_revision, "boxes": BOXES}
    )


def seed_annotations(base_url: str, token: str, image_ids: Sequence[int], workers: int) -> Results:
    progress(f"saving {len(BOXES)} boxes on each of {len(image_ids)} images")

    # Leaving the pool waits for its workers, so on any failure they must stop early.
    stop = threading.Event()

    def save_all(chunk: Sequence[int]) -> None:
        with http_client(base_url, token) as client:
            for image_id in chunk:
                if stop.is_set():
                    return
                expect(put_boxes(client, image_id, 0), 200)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            list(pool.map(save_all, [image_ids[i::workers] for i in range(workers)]))
        except BaseException:
            stop.set()
            raise
    elapsed = time.perf_counter() - start
    return {"seed_annotations_seconds": elapsed, "seed_annotations_per_s": len(image_ids) / elapsed}


@dataclass
class SaveStats:
    put_seconds: list[float] = field(default_factory=list)
    get_seconds: list[float] = field(default_factory=list)
    saves: int = 0
    conflicts: int = 0
    errors: int = 0
    first_error: str | None = None

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


def read_then_save(client: httpx.Client, image_id: int, stats: SaveStats) -> None:
    started = time.perf_counter()
    current = client.get(f"/api/images/{image_id}/annotations")
    stats.get_seconds.append(time.perf_counter() - started)
    if current.status_code != 200:
        stats.error(f"GET {current.status_code}: {current.text[:300]}")
        return
    started = time.perf_counter()
    saved = put_boxes(client, image_id, current.json()["revision"])
    stats.put_seconds.append(time.perf_counter() - started)
    if saved.status_code == 200:
        stats.saves += 1
    elif saved.status_code == 409:
        stats.conflicts += 1
    else:
        stats.error(f"PUT {saved.status_code}: {saved.text[:300]}")


def save_loop(
    base_url: str,
    token: str,
    image_ids: Sequence[int],
    seconds: float,
    start_line: threading.Barrier,
    stats: SaveStats,
) -> None:
    """One annotator: read an image's annotations, save boxes on that revision, repeat."""
    with http_client(base_url, token) as client:
        start_line.wait()
        deadline = time.perf_counter() + seconds
        for image_id in itertools.cycle(image_ids):
            if time.perf_counter() >= deadline:
                return
            try:
                read_then_save(client, image_id, stats)
            except httpx.TransportError as exc:
                stats.error(f"{type(exc).__name__}: {exc}")


def bench_saves(
    base_url: str,
    token: str,
    image_ids: Sequence[int],
    clients: int,
    seconds: float,
    meter: CpuMeter,
) -> Results:
    progress(f"annotation saves: {clients} clients for {seconds:.0f} s")
    stats = [SaveStats() for _ in range(clients)]
    # Sampled before the clients start: the server does nothing until they are let go.
    cpu_before = meter.sample()
    elapsed = run_together(
        [
            partial(save_loop, base_url, token, image_ids[i::clients], seconds, stats=stats[i])
            for i in range(clients)
        ]
    )
    cpu = meter.sample() - cpu_before
    puts = [s for st in stats for s in st.put_seconds]
    gets = [s for st in stats for s in st.get_seconds]
    errors = sum(st.errors for st in stats)
    if errors:
        first = next(st.first_error for st in stats if st.first_error)
        progress(f"WARNING: {errors} failed requests during the save load; first: {first}")
    put_latency, get_latency = Latency.of(puts), Latency.of(gets)
    saves = sum(st.saves for st in stats)
    return {
        "save_clients": clients,
        "save_seconds": elapsed,
        "save_p50_ms": put_latency.p50_ms,
        "save_p95_ms": put_latency.p95_ms,
        "save_get_p50_ms": get_latency.p50_ms,
        "save_get_p95_ms": get_latency.p95_ms,
        "saves": saves,
        "saves_per_s": saves / elapsed,
        "save_conflicts": sum(st.conflicts for st in stats),
        "save_errors": errors,
        **cpu.per_save("save", saves),
    }


# --- CPU accounting ----------------------------------------------------------------------


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds over a phase: the server process, this bench process (the load
    generator, on the same cores), and PostgreSQL's backends for the database (zero on
    SQLite, which runs inside the server process)."""

    server: float
    client: float
    backends: dict[int, float] = field(default_factory=dict)

    @property
    def database(self) -> float:
        return sum(self.backends.values())

    def __sub__(self, before: CpuUse) -> CpuUse:
        # A backend that connected during the phase started from zero.
        backends = {pid: t - before.backends.get(pid, 0.0) for pid, t in self.backends.items()}
        return CpuUse(self.server - before.server, self.client - before.client, backends)

    def per_save(self, prefix: str, saves: int) -> Results:
        per = 1000 / saves if saves else math.nan
        return {
            f"{prefix}_server_cpu_s": self.server,
            f"{prefix}_server_cpu_ms_per_save": self.server * per,
            f"{prefix}_database_cpu_ms_per_save": self.database * per,
            f"{prefix}_client_cpu_ms_per_save": self.client * per,
        }


@dataclass(frozen=True)
class CpuMeter:
    server_pid: int
    # A connection to the bench's database (PostgreSQL), to find its backends.
    pg: psycopg.Connection[Any] | None

    def sample(self) -> CpuUse:
        return CpuUse(cpu_seconds(self.server_pid), time.process_time(), self._backends())

    def _backends(self) -> dict[int, float]:
        if self.pg is None:
            return {}
        rows = self.pg.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        found: dict[int, float] = {}
        for (pid,) in rows:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found[pid] = cpu_seconds(pid)
        return found


# --- baseline: the same saves as raw SQL -------------------------------------------------

RAW_UPDATE = (
    "UPDATE images SET revision = revision + 1, status = 'reviewed', annotated_by = {p},"
    " annotated_at = {p} WHERE id = {p} AND revision = {p}"
)
RAW_DELETE = "DELETE FROM annotations WHERE image_id = {p}"
RAW_INSERT = (
    "INSERT INTO annotations (image_id, position, class_id, x, y, w, h, source, confidence,"
    " status) VALUES "
)


class RawSaver:
    """One client of the raw SQL baseline: per save one transaction with the API's
    writes and nothing else: the revision compare-and-swap, the old boxes deleted and
    the new ones inserted in one statement, the commit. No HTTP, no ORM, no read: the
    client keeps the revisions of its own images."""

    placeholder = "%s"

    def __init__(self, user_id: int) -> None:
        p = self.placeholder
        self.user_id = user_id
        self.update = RAW_UPDATE.format(p=p)
        self.delete = RAW_DELETE.format(p=p)
        row = "(" + ", ".join([p] * 10) + ")"
        self.insert = RAW_INSERT + ", ".join([row] * len(BOXES))

    def params(self, image_id: int) -> list[Any]:
        values: list[Any] = []
        for position, box in enumerate(BOXES):
            values += [image_id, position, box["class_id"], box["x"], box["y"], box["w"]]
            values += [box["h"], "manual", None, "accepted"]
        return values

    def save(self, image_id: int, revision: int) -> bool:
        raise NotImplementedError

    def revisions(self, image_ids: Sequence[int]) -> dict[int, int]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class RawPostgresSaver(RawSaver):
    def __init__(self, database_url: str, user_id: int) -> None:
        super().__init__(user_id)
        self.conn = psycopg.connect(database_url)

    def save(self, image_id: int, revision: int) -> bool:
        now = dt.datetime.now(dt.UTC)
        with self.conn.cursor() as cur:
            cur.execute(self.update, (self.user_id, now, image_id, revision))
            if cur.rowcount != 1:
                self.conn.rollback()
                return False
            cur.execute(self.delete, (image_id,))
            cur.execute(self.insert, self.params(image_id))
        self.conn.commit()
        return True

    def revisions(self, image_ids: Sequence[int]) -> dict[int, int]:
        rows = self.conn.execute(
            "SELECT id, revision FROM images WHERE id = ANY(%s)", [list(image_ids)]
        ).fetchall()
        self.conn.commit()
        return dict(rows)

    def close(self) -> None:
        self.conn.close()


class RawSqliteSaver(RawSaver):
    placeholder = "?"

    def __init__(self, path: Path, user_id: int) -> None:
        super().__init__(user_id)
        # The server's own settings (server/kit/db.py): WAL, synchronous=NORMAL, foreign
        # keys on, and BEGIN IMMEDIATE so writers queue on the lock instead of failing.
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
            self.conn.execute(f"PRAGMA {pragma}")

    def save(self, image_id: int, revision: int) -> bool:
        # SQLAlchemy's SQLite format for a UTC timestamp.
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(" ")
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        cur.execute(self.update, (self.user_id, now, image_id, revision))
        if cur.rowcount != 1:
            cur.execute("ROLLBACK")
            return False
        cur.execute(self.delete, (image_id,))
        cur.execute(self.insert, self.params(image_id))
        cur.execute("COMMIT")
        return True

    def revisions(self, image_ids: Sequence[int]) -> dict[int, int]:
        marks = ", ".join("?" * len(image_ids))
        rows = self.conn.execute(
            f"SELECT id, revision FROM images WHERE id IN ({marks})",
            list(image_ids),
        ).fetchall()
        return dict(rows)

    def close(self) -> None:
        self.conn.close()


def raw_save_loop(
    saver: RawSaver,
    image_ids: Sequence[int],
    seconds: float,
    start_line: threading.Barrier,
    stats: SaveStats,
) -> None:
    try:
        revisions = saver.revisions(image_ids)
        start_line.wait()
        deadline = time.perf_counter() + seconds
        for image_id in itertools.cycle(image_ids):
            if time.perf_counter() >= deadline:
                return
            started = time.perf_counter()
            saved = saver.save(image_id, revisions[image_id])
            stats.put_seconds.append(time.perf_counter() - started)
            if saved:
                revisions[image_id] += 1
                stats.saves += 1
            else:
                stats.conflicts += 1
    except threading.BrokenBarrierError:
        return
    except Exception as exc:
        stats.error(f"{type(exc).__name__}: {exc}")
        start_line.abort()


def bench_raw_saves(
    make_saver: Callable[[], RawSaver],
    image_ids: Sequence[int],
    clients: int,
    seconds: float,
    meter: CpuMeter,
) -> Results:
    progress(f"raw SQL saves (baseline): {clients} clients for {seconds:.0f} s")
    stats = [SaveStats() for _ in range(clients)]
    start_line = threading.Barrier(clients + 1)
    with contextlib.ExitStack() as savers:
        threads = [
            threading.Thread(
                target=raw_save_loop,
                args=(
                    savers.enter_context(contextlib.closing(make_saver())),
                    image_ids[i::clients],
                    seconds,
                    start_line,
                    stats[i],
                ),
                daemon=True,
            )
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            start_line.wait()
        start = time.perf_counter()
        cpu_before = meter.sample()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        # Before the connections close: their backends' CPU goes with them.
        cpu = meter.sample() - cpu_before
    first_error = next((st.first_error for st in stats if st.first_error), None)
    if first_error is not None:
        raise BenchError(f"the raw SQL baseline failed: {first_error}")
    saves = sum(st.saves for st in stats)
    latency = Latency.of([s for st in stats for s in st.put_seconds])
    return {
        "save_raw_p50_ms": latency.p50_ms,
        "save_raw_p95_ms": latency.p95_ms,
        "save_raw_saves": saves,
        "saves_raw_per_s": saves / elapsed,
        "save_raw_conflicts": sum(st.conflicts for st in stats),
        **cpu.per_save("save_raw", saves),
    }


def saver_factory(deployment: Deployment) -> Callable[[], RawSaver]:
    """Raw SQL savers acting as the bench's admin (``annotated_by``), like the API load."""
    username = deployment.admin_username
    url, path = deployment.database_url, deployment.sqlite_path
    query = "SELECT id FROM users WHERE username = {p}"
    if url is None:
        with contextlib.closing(sqlite3.connect(path)) as lite:
            row = lite.execute(query.format(p="?"), [username]).fetchone()
    else:
        with psycopg.connect(url) as conn:
            row = conn.execute(query.format(p="%s"), [username]).fetchone()
    if row is None:
        raise BenchError(f"no user {username!r} for the raw SQL baseline")
    user_id: int = row[0]
    if url is None:
        return lambda: RawSqliteSaver(path, user_id)
    return lambda: RawPostgresSaver(url, user_id)


def save_ratios(results: Results) -> Results:
    return {"save_ratio": ratio(results["saves_per_s"], results["saves_raw_per_s"])}


def label_studio_saves(options: Options, results: Results) -> Results:
    """Label Studio's saves/s under the same load, measured now with --label-studio
    (after Oculab's server has gone: they would share the cores), else the record."""
    if options.label_studio:
        per_client = LABEL_STUDIO_TASKS_PER_CLIENT * options.clients
        tasks = max(options.clients, min(options.images, per_client))
        rate = label_studio.saves_per_second(options.clients, options.seconds, tasks)
    else:
        rate = LABEL_STUDIO_SAVES_PER_S
    return {
        "label_studio_saves_per_s": rate,
        "label_studio_measured": options.label_studio,
        "save_vs_label_studio": ratio(results["saves_per_s"], rate),
    }


# --- phase: listing ----------------------------------------------------------------------


def cursor_for_page(client: httpx.Client, project_id: int, page: int) -> str | None:
    cursor: str | None = None
    for _ in range(page - 1):
        cursor = list_page(client, project_id, cursor)["next_cursor"]
        if cursor is None:
            raise BenchError(f"the project has fewer than {page} pages")
    return cursor


def api_page_latency(
    client: httpx.Client, project_id: int, repeats: int, cursor: str | None = None, **filters: str
) -> list[float]:
    def fetch() -> None:
        if not list_page(client, project_id, cursor, **filters)["items"]:
            raise BenchError("an image page came back empty")

    return sample(fetch, repeats)


def sql_page_latency(
    conn: psycopg.Connection[Any],
    project_id: int,
    after_id: int,
    repeats: int,
    status: str | None = None,
) -> list[float]:
    """The floor under the list endpoint: the same keyset query, straight to PostgreSQL."""
    query = "SELECT * FROM images WHERE project_id = %s AND id > %s"
    params: list[Any] = [project_id, after_id]
    if status is not None:
        query += " AND status = %s"
        params.append(status)
    query += f" ORDER BY id LIMIT {PAGE_SIZE + 1}"

    def fetch() -> None:
        if not conn.execute(query, params).fetchall():
            raise BenchError("the SQL page came back empty")

    return sample(fetch, repeats)


def bench_list(
    client: httpx.Client,
    conn: psycopg.Connection[Any],
    project_id: int,
    image_ids: Sequence[int],
    repeats: int,
) -> Results:
    deep_page = min(20, math.ceil(len(image_ids) / PAGE_SIZE))
    progress(f"list latency: page 1 and page {deep_page}, {repeats} samples each")
    p1 = Latency.of(api_page_latency(client, project_id, repeats))
    cursor = cursor_for_page(client, project_id, deep_page)
    p20 = Latency.of(api_page_latency(client, project_id, repeats, cursor))
    after_deep = sorted(image_ids)[(deep_page - 1) * PAGE_SIZE - 1] if deep_page > 1 else 0
    sql_p1 = sql_page_latency(conn, project_id, 0, repeats)
    sql_p20 = sql_page_latency(conn, project_id, after_deep, repeats)
    sql_all = Latency.of(sql_p1 + sql_p20)
    return {
        "list_deep_page": deep_page,
        "list_p1_p50_ms": p1.p50_ms,
        "list_p1_p95_ms": p1.p95_ms,
        "list_p20_p50_ms": p20.p50_ms,
        "list_p20_p95_ms": p20.p95_ms,
        "list_sql_p1_p95_ms": Latency.of(sql_p1).p95_ms,
        "list_sql_p20_p95_ms": Latency.of(sql_p20).p95_ms,
        "list_sql_p50_ms": sql_all.p50_ms,
        "list_sql_p95_ms": sql_all.p95_ms,
        "list_p1_ratio": ratio(p1.p95_ms, Latency.of(sql_p1).p95_ms),
        "list_p20_ratio": ratio(p20.p95_ms, Latency.of(sql_p20).p95_ms),
    }


# --- phase: 100k rows --------------------------------------------------------------------

INSERT_ROWS = """
INSERT INTO images (project_id, sha256, filename, format, width, height, size_bytes,
                    status, split, revision, created_at)
SELECT %(project_id)s,
       md5(g::text) || md5('bench-' || g::text),
       'synthetic_' || g || '.jpg',
       'jpeg', 640, 480, 40000 + g %% 20000,
       (ARRAY['unlabeled', 'predicted', 'reviewed'])[1 + g %% 3],
       CASE g %% 5 WHEN 0 THEN NULL WHEN 1 THEN 'val' ELSE 'train' END,
       0, now()
FROM generate_series(1, %(rows)s) AS g
"""


def insert_rows(conn: psycopg.Connection[Any], project_id: int, rows: int) -> tuple[int, float]:
    """Fills the project with synthetic rows; returns its highest image id and the time."""
    start = time.perf_counter()
    with conn.transaction():
        conn.execute(INSERT_ROWS, {"project_id": project_id, "rows": rows})
    conn.execute("ANALYZE images")
    elapsed = time.perf_counter() - start
    row = conn.execute("SELECT max(id) FROM images WHERE project_id = %s", [project_id]).fetchone()
    assert row is not None
    return int(row[0]), elapsed


def bench_rows(
    client: httpx.Client, conn: psycopg.Connection[Any], rows: int, repeats: int
) -> Results:
    project_id = create_project(client, "bench-100k")
    progress(f"inserting {rows} image rows with SQL")
    max_id, insert_seconds = insert_rows(conn, project_id, rows)
    deep_after = max_id - DEEP_PAGE_TAIL
    progress(f"list latency at {rows} rows: page 1, deep page, status=reviewed")
    api = {
        "list": api_page_latency(client, project_id, repeats),
        "deep": api_page_latency(client, project_id, repeats, encode_cursor(deep_after)),
        "status": api_page_latency(client, project_id, repeats, status="reviewed"),
    }
    raw = {
        "list": sql_page_latency(conn, project_id, 0, repeats),
        "deep": sql_page_latency(conn, project_id, deep_after, repeats),
        "status": sql_page_latency(conn, project_id, 0, repeats, status="reviewed"),
    }
    results: Results = {"rows_100k_rows": rows, "rows_100k_insert_seconds": insert_seconds}
    for kind in api:
        api_latency, sql_latency = Latency.of(api[kind]), Latency.of(raw[kind])
        results[f"rows_100k_{kind}_p50_ms"] = api_latency.p50_ms
        results[f"rows_100k_{kind}_p95_ms"] = api_latency.p95_ms
        results[f"rows_100k_sql_{kind}_p95_ms"] = sql_latency.p95_ms
        results[f"rows_100k_{kind}_ratio"] = ratio(api_latency.p95_ms, sql_latency.p95_ms)
    pooled = Latency.of([s for samples in raw.values() for s in samples])
    results["rows_100k_sql_p50_ms"] = pooled.p50_ms
    results["rows_100k_sql_p95_ms"] = pooled.p95_ms
    return results


# --- orchestration ------------------------------------------------------------------------


def prepare(deployment: Deployment, password: str) -> None:
    progress("oculab migrate")
    run_oculab(deployment, "migrate")
    progress("oculab create-admin")
    run_oculab(
        deployment,
        "create-admin",
        "--username",
        ADMIN_USERNAME,
        "--password-stdin",
        stdin=password + "\n",
    )


def run_phases(
    options: Options, server: Server, deployment: Deployment, root: Path, password: str
) -> Results:
    idle = memory_mib(server.process.pid)
    results: Results = {
        "server_rss_mib_idle": idle["VmRSS"],
        "server_peak_rss_mib_idle": idle["VmHWM"],
    }
    token = create_api_token(server.base_url, password, deployment.admin_username)
    phases = options.phases
    with http_client(server.base_url, token) as client, contextlib.ExitStack() as stack:
        conn = None
        if deployment.database_url is not None:
            conn = stack.enter_context(psycopg.connect(deployment.database_url, autocommit=True))
        project_id = create_project(client, "bench")
        if "upload" in phases:
            image_ids, upload = bench_upload(client, project_id, options.images, root)
            results |= upload
        else:
            progress(f"uploading {options.images} images (untimed)")
            image_ids, _ = upload_all(client, project_id, noise_jpegs(options.images))
        results |= seed_annotations(server.base_url, token, image_ids, options.clients)
        if "list" in phases:
            assert conn is not None  # parse_options keeps PostgreSQL phases off SQLite
            results |= bench_list(client, conn, project_id, image_ids, options.repeats)
        if "saves" in phases:
            meter = CpuMeter(server.process.pid, conn)
            results |= bench_saves(
                server.base_url, token, image_ids, options.clients, options.seconds, meter
            )
            results |= bench_raw_saves(
                saver_factory(deployment), image_ids, options.clients, options.seconds, meter
            )
            results |= save_ratios(results)
        results["server_peak_rss_mib_before_rows"] = memory_mib(server.process.pid)["VmHWM"]
        if "rows" in phases:
            assert conn is not None
            results |= bench_rows(client, conn, options.rows, options.repeats)
    memory = memory_mib(server.process.pid)
    results["server_peak_rss_mib"] = memory["VmHWM"]
    results["server_rss_mib"] = memory["VmRSS"]
    return results


def run_benchmark(options: Options) -> Results:
    results = bench_oculab(options)
    if "saves" in options.phases:
        results |= label_studio_saves(options, results)
    return results


def bench_oculab(options: Options) -> Results:
    password = secrets.token_urlsafe(18)
    if options.database == "sqlite":
        with scratch_dir() as root:
            # Standalone migrates and creates its admin itself at start.
            deployment = Deployment(
                database_url=None,
                data_dir=root / "data",
                secret_key=secrets.token_urlsafe(48),
                admin_password=password,
            )
            with running_server(deployment, root / "server.log") as server:
                return run_phases(options, server, deployment, root, password)
    with scratch_database(options.pg_admin_url) as database_url, scratch_dir() as root:
        deployment = Deployment(
            database_url=database_url,
            data_dir=root / "data",
            secret_key=secrets.token_urlsafe(48),
        )
        deployment.data_dir.mkdir()
        prepare(deployment, password)
        with running_server(deployment, root / "server.log") as server:
            return run_phases(options, server, deployment, root, password)


SUMMARY = [
    ("Upload ({upload_images} JPEGs, ~{upload_bytes_mean} B each, requests of 100)", None),
    ("  API", "{upload_images_per_s:.1f} images/s ({upload_seconds:.2f} s)"),
    ("  raw disk (sha256 + write + fsync)", "{upload_raw_disk_images_per_s:.1f} images/s"),
    ("  raw disk / API", "{upload_ratio:.1f}x"),
    (
        "Seeding 3 boxes per image",
        "{seed_annotations_seconds:.2f} s ({seed_annotations_per_s:.1f} saves/s)",
    ),
    ("List, limit 100", None),
    ("  page 1", "p50 {list_p1_p50_ms:.2f} ms, p95 {list_p1_p95_ms:.2f} ms"),
    ("  page {list_deep_page}", "p50 {list_p20_p50_ms:.2f} ms, p95 {list_p20_p95_ms:.2f} ms"),
    ("  raw SQL keyset query", "p50 {list_sql_p50_ms:.2f} ms, p95 {list_sql_p95_ms:.2f} ms"),
    (
        "  API / SQL (p95)",
        "page 1 {list_p1_ratio:.1f}x, page {list_deep_page} {list_p20_ratio:.1f}x",
    ),
    ("Annotation saves ({save_clients} clients, {save_seconds:.1f} s)", None),
    ("  PUT latency", "p50 {save_p50_ms:.2f} ms, p95 {save_p95_ms:.2f} ms"),
    ("  GET latency", "p50 {save_get_p50_ms:.2f} ms, p95 {save_get_p95_ms:.2f} ms"),
    (
        "  throughput",
        "{saves_per_s:.1f} saves/s ({saves} saves, {save_conflicts} conflicts,"
        " {save_errors} errors)",
    ),
    (
        "  CPU per save (GET + PUT)",
        "server {save_server_cpu_ms_per_save:.2f} ms, database"
        " {save_database_cpu_ms_per_save:.2f} ms, bench client"
        " {save_client_cpu_ms_per_save:.2f} ms",
    ),
    (
        "  raw SQL (CAS UPDATE + boxes, no read)",
        "{saves_raw_per_s:.1f} saves/s, p50 {save_raw_p50_ms:.2f} ms; CPU per save:"
        " database {save_raw_database_cpu_ms_per_save:.2f} ms, client"
        " {save_raw_client_cpu_ms_per_save:.2f} ms",
    ),
    ("  API / raw SQL", "{save_ratio:.2f}"),
    (
        "  API / Label Studio ({label_studio_saves_per_s:.1f} saves/s)",
        "{save_vs_label_studio:.1f}x ({label_studio_note})",
    ),
    ("List at {rows_100k_rows} rows (inserted in {rows_100k_insert_seconds:.1f} s)", None),
    (
        "  page 1",
        "p50 {rows_100k_list_p50_ms:.2f} ms, p95 {rows_100k_list_p95_ms:.2f} ms"
        " ({rows_100k_list_ratio:.1f}x SQL)",
    ),
    (
        "  deep page",
        "p50 {rows_100k_deep_p50_ms:.2f} ms, p95 {rows_100k_deep_p95_ms:.2f} ms"
        " ({rows_100k_deep_ratio:.1f}x SQL)",
    ),
    (
        "  status=reviewed",
        "p50 {rows_100k_status_p50_ms:.2f} ms,"
        " p95 {rows_100k_status_p95_ms:.2f} ms ({rows_100k_status_ratio:.1f}x SQL)",
    ),
    (
        "  raw SQL keyset query",
        "p50 {rows_100k_sql_p50_ms:.2f} ms, p95 {rows_100k_sql_p95_ms:.2f} ms",
    ),
    ("Server memory (VmHWM = peak RSS)", None),
    (
        "  idle, before the first login",
        "RSS {server_rss_mib_idle:.1f} MiB, VmHWM {server_peak_rss_mib_idle:.1f} MiB",
    ),
    ("  VmHWM before the 100k rows", "{server_peak_rss_mib_before_rows:.1f} MiB"),
    (
        "  at the end",
        "RSS {server_rss_mib:.1f} MiB, VmHWM {server_peak_rss_mib:.1f} MiB",
    ),
]


def print_summary(results: Results) -> None:
    print("Oculab API benchmark")
    section: str | None = None  # printed before its first line, so only if that exists
    note = "measured in this run" if results.get("label_studio_measured") else RECORDED
    fields = {**results, "label_studio_note": note}
    for label, value in SUMMARY:
        try:
            heading = label.format(**fields)
            line = None if value is None else f"{heading + ':':<40} {value.format(**fields)}"
        except KeyError:
            # A phase that did not run (--only, or SQLite).
            section = None if value is None else section
            continue
        if line is None:
            section = heading
            continue
        if section is not None:
            print(section)
            section = None
        print(line)


def json_ready(results: Results) -> dict[str, float | int | None]:
    """Rounded figures; a ratio without a denominator becomes null rather than NaN."""
    return {
        k: (None if math.isnan(v) else round(v, 3)) if isinstance(v, float) else v
        for k, v in results.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    # Turn SIGTERM into an exception so the cleanup (server, database, temp dir) runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = parse_options(argv)
    try:
        results = run_benchmark(options)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print_summary(results)
    print(json.dumps(json_ready(results), allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
