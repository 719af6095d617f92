"""Web app figures for uploads and the gallery (issue 10), in a real browser.

Run from the repository root after ``make frontend``::

    .venv/bin/python bench/ui_upload.py [--images 2000 --rows 100000 --rounds 3]

Starts ``oculab standalone`` (SQLite, a temp data dir) on a free port and measures:

1. **Upload**: ``--images`` 128x96 noise JPEGs, uploaded in the gallery by a drop of
   all of them on the grid (built in the page first; the clock starts at the drop) and
   through the folder picker (from the input's change event), in Chromium via
   Playwright (bench/ui_upload_browser.mjs), until the page says "Upload finished".
   Baseline in the same run, same server: a Python script (httpx) posting them to
   ``POST /api/projects/{id}/images`` with the web app's batching (``--batch`` files
   per request, ``--concurrency`` requests at once); a second reference posts batches
   of 100 from one thread. Every side uploads the same pictures: each timed upload gets
   its own copy of the one set of JPEGs, the same bytes but for a JPEG comment naming
   the copy (the server stores a blob and renders its thumbnail once per content: with
   identical files the first uploader of a round would pay for every later one), and a
   fresh project. ``--rounds`` rounds, the order of the sides rotating each round (so
   none is always first after a quiet moment). Printed: each side's median and spread
   (min..max), ``upload_ratio`` = median drop / median script (goal <= 1.2), the
   median and spread of the per-round ratios (a round's sides ran close together, so
   its ratio sees the same load), and the browser's own counts (requests, main-thread
   busy time) that do not depend on the load.
2. **Gallery**: a project of ``--rows`` image rows written straight into the database,
   whose thumbnails are hard links to a few shared JPEGs. The browser opens it:
   ``gallery_first_thumbnails_ms`` is the time from navigation start until the first
   row of thumbnails has loaded (goal <= 1000 ms); then it scrolls the grid to the end
   (every keyset page) and ``gallery_max_img_nodes`` is the most <img> elements the
   document ever held (goal <= 300).

Printed, not asserted. Progress on stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
OCULAB = str(Path(sys.executable).with_name("oculab"))
PASSWORD = "bench-admin-password-1"
IMAGE_SIZE = (128, 96)
DRIVER = ROOT / "bench" / "ui_upload_browser.mjs"
TIMEOUT = httpx.Timeout(600.0, connect=10.0)


def progress(message: str) -> None:
    print(f"[ui_upload] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    if sys.platform == "linux":  # PR_SET_PDEATHSIG: no orphan server if we are killed
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@contextlib.contextmanager
def standalone(data_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(
        OCULAB_DATA_DIR=str(data_dir),
        OCULAB_ADMIN_PASSWORD=PASSWORD,
        OCULAB_SEED_DEMO="false",
        OCULAB_STANDALONE_GPU_SLOTS="0",
        OCULAB_LOG_LEVEL="warning",
        # One browser sign-in per run: more than the default 10 a minute.
        OCULAB_LOGIN_RATE_LIMIT_PER_MINUTE="1000",
    )
    log = (data_dir.parent / "server.log").open("wb")
    process = subprocess.Popen(
        [OCULAB, "standalone", "--host", HOST, "--port", str(port)],
        cwd=data_dir.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"oculab standalone exited ({process.returncode})")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("oculab standalone did not start within 90 s")
            time.sleep(0.2)
        progress(f"oculab standalone (pid {process.pid}) at {url}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def signed_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=TIMEOUT)
    response = client.post(
        "/api/auth/local/login", json={"username": "admin", "password": PASSWORD}
    )
    response.raise_for_status()
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


def create_project(client: httpx.Client, name: str) -> int:
    response = client.post("/api/projects", json={"name": name, "classes": ["thing"]})
    response.raise_for_status()
    project_id: int = response.json()["id"]
    return project_id


def write_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    width, height = IMAGE_SIZE
    paths = []
    for i in range(count):
        img = PILImage.frombytes("RGB", IMAGE_SIZE, os.urandom(width * height * 3))
        path = folder / f"frame_{i:05d}.jpg"
        img.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def copy_images(originals: Sequence[Path], folder: Path, tag: str) -> list[Path]:
    """The same pictures with a JPEG comment (COM segment) naming the copy: identical
    pixels, sizes within a few bytes, a content hash of their own."""
    folder.mkdir(parents=True)
    comment = tag.encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    paths = []
    for original in originals:
        data = original.read_bytes()
        assert data[:2] == b"\xff\xd8", original  # SOI
        path = folder / original.name
        path.write_bytes(data[:2] + segment + data[2:])
        paths.append(path)
    return paths


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def api_upload(
    client: httpx.Client, project_id: int, paths: Sequence[Path], batch: int, threads: int
) -> float:
    """Seconds to post every file in batches, `threads` requests at once (one client:
    httpx pools a connection per request in flight)."""
    batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]

    def send(index: int) -> int:
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in batches[index]]
        response = client.post(f"/api/projects/{project_id}/images", files=files)
        response.raise_for_status()
        created: int = response.json()["created"]
        return created

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        created = sum(pool.map(send, range(len(batches))))
    seconds = time.perf_counter() - started
    if created != len(paths):
        raise RuntimeError(f"the API created {created} of {len(paths)} images")
    return seconds


def browser(options: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is required (the web app's Playwright drives Chromium)")
    done = subprocess.run(
        [node, str(DRIVER), json.dumps(options)],
        check=True,
        stdout=subprocess.PIPE,
        timeout=3600,
    )
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def seed_gallery(data_dir: Path, project_id: int, rows: int, blobs: int = 8) -> None:
    """`rows` images in one INSERT batch; thumbnails hard-linked to `blobs` shared JPEGs."""
    from server.kit.storage import Storage
    from server.models.image import Image

    storage = Storage(data_dir, fsync=False)
    shared = []
    for i in range(blobs):
        path = data_dir / "bench-thumbs" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        colour = tuple(random.Random(i).randrange(256) for _ in range(3))
        PILImage.new("RGB", (256, 192), colour).save(path, format="JPEG", quality=85)
        shared.append(path)
    now = dt.datetime.now(dt.UTC)
    statuses = ["unlabeled"] * 6 + ["predicted"] * 2 + ["reviewed"] * 2
    splits = ["train"] * 7 + ["val"] * 2 + [None]
    values = []
    for i in range(rows):
        sha = hashlib.sha256(f"gallery-bench-{i}".encode()).hexdigest()
        values.append(
            {
                "project_id": project_id,
                "sha256": sha,
                "filename": f"frame_{i:06d}.jpg",
                "format": "jpeg",
                "width": 1280,
                "height": 960,
                "size_bytes": 150_000,
                "status": statuses[i % len(statuses)],
                "split": splits[i % len(splits)],
                "revision": 0,
                "created_at": now,
            }
        )
        target = storage.thumbnail_path(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(shared[i % blobs], target)
    engine = sa.create_engine(f"sqlite:///{data_dir / 'oculab.db'}")
    with engine.begin() as connection:
        connection.execute(sa.insert(Image.__table__), values)  # type: ignore[arg-type]
    engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--batch",
        type=int,
        default=100,
        help="files per request: the web app's for 2,000 files (batchSizeFor in upload/batcher.ts)",
    )
    parser.add_argument("--concurrency", type=int, default=3, help="the web app's requests at once")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
    args = parser.parse_args(argv)
    if not (ROOT / "server" / "web" / "static" / "index.html").exists():
        progress("no web build: run `make frontend` first")
        return 1

    figures: dict[str, Any] = {"images": args.images, "rows": args.rows}
    with tempfile.TemporaryDirectory(prefix="oculab-ui-bench-") as tmp:
        base = Path(tmp)
        data_dir = base / "data"
        data_dir.mkdir()
        progress(f"writing {args.images} noise JPEGs per timed upload")
        warmup = write_images(base / "warm-up", 60)
        with standalone(data_dir) as url:
            client = signed_in(url)
            common = {"url": url, "username": "admin", "password": PASSWORD}
            common["chromium"] = args.chromium
            # Warm the server up (first requests, imports, caches) outside any timing.
            api_upload(client, create_project(client, "Warm-up"), warmup, args.batch, 1)
            originals = write_images(base / "originals", args.images)
            sides = ["script", "drop", "picker", "script-100"]
            seconds: dict[str, list[float]] = {side: [] for side in sides}
            ratios: dict[str, list[float]] = {"drop": [], "picker": []}
            browser_counts: dict[str, list[dict[str, Any]]] = {"drop": [], "picker": []}
            client_cpu: dict[str, list[float]] = {side: [] for side in sides}
            for round_ in range(1, args.rounds + 1):  # --rounds 0: gallery only
                # This round's copies, written before any timing.
                fresh = {
                    side: copy_images(
                        originals, base / f"upload-{round_}-{side}", f"{round_}-{side}"
                    )
                    for side in sides
                }
                turn = (round_ - 1) % len(sides)
                order = sides[turn:] + sides[:turn]
                for side in order:
                    pid = create_project(client, f"Upload {side} {round_}")
                    # The client's own CPU time, on the cores the server needs too: this
                    # process's for a script, every Chromium process's for the browser.
                    cpu = time.process_time()
                    if side == "script":
                        took = api_upload(client, pid, fresh[side], args.batch, args.concurrency)
                        used = time.process_time() - cpu
                    elif side == "script-100":
                        took = api_upload(client, pid, fresh[side], 100, 1)
                        used = time.process_time() - cpu
                    else:
                        upload = {
                            "project": pid,
                            "folder": str(base / f"upload-{round_}-{side}"),
                            "files": [str(p) for p in fresh[side]],
                            "mode": side,
                        }
                        ui = browser({**common, "upload": upload})
                        if f"{args.images:,} created" not in str(ui.get("upload_summary")):
                            raise RuntimeError(
                                f"the browser upload did not create every image: {ui}"
                            )
                        took = ui["upload_seconds"]
                        used = ui["upload_browser_cpu_s"]
                        browser_counts[side].append(ui)
                    client_cpu[side].append(used)
                    seconds[side].append(took)
                    progress(f"round {round_}: {side}: {took:.2f} s")
                for mode in ratios:
                    ratios[mode].append(seconds[mode][-1] / seconds["script"][-1])
                for side in sides:
                    shutil.rmtree(base / f"upload-{round_}-{side}", ignore_errors=True)
            if args.rounds > 0:
                medians = {side: statistics.median(values) for side, values in seconds.items()}
                figures.update(
                    upload_drop_seconds=round(medians["drop"], 2),
                    upload_picker_seconds=round(medians["picker"], 2),
                    upload_script_seconds=round(medians["script"], 2),
                    upload_script_100x1_seconds=round(medians["script-100"], 2),
                    upload_ratio=round(medians["drop"] / medians["script"], 3),
                    upload_ratio_picker=round(medians["picker"] / medians["script"], 3),
                    upload_ratio_vs_100x1=round(medians["drop"] / medians["script-100"], 3),
                    upload_seconds_spread={side: spread(v) for side, v in seconds.items()},
                    upload_round_ratio_spread={mode: spread(v) for mode, v in ratios.items()},
                    upload_browser_counts={
                        mode: {
                            "requests": runs[-1].get("upload_requests"),
                            "main_thread_busy_s": spread(
                                [r["upload_renderer_busy_s"]["TaskDuration"] for r in runs]
                            ),
                        }
                        for mode, runs in browser_counts.items()
                    },
                    upload_client_cpu_seconds={side: spread(v) for side, v in client_cpu.items()},
                    upload_batching=f"{args.batch} files x {args.concurrency} requests at once",
                )

            if args.rows <= 0:
                client.close()
                return report(figures)
            gallery = create_project(client, "Gallery 100k")
            progress(f"seeding {args.rows} rows and thumbnail links")
            started = time.perf_counter()
            seed_gallery(data_dir, gallery, args.rows)
            progress(f"seeded in {time.perf_counter() - started:.1f} s")
            counts = client.get(f"/api/projects/{gallery}").json()["images"]
            assert counts["total"] == args.rows, counts
            client.close()
            seen = browser({**common, "gallery": {"project": gallery, "rows": args.rows}})
            figures.update({k: v for k, v in seen.items() if k.startswith("gallery_")})
    return report(figures)


def report(figures: dict[str, Any]) -> int:
    rows = [
        ("upload, browser, dropped files, s", "upload_drop_seconds", ".2f", ""),
        ("upload, browser, folder picker, s", "upload_picker_seconds", ".2f", ""),
        ("upload, script (same batching), s", "upload_script_seconds", ".2f", ""),
        ("upload ratio drop / script (medians)", "upload_ratio", ".3f", "<= 1.2"),
        ("upload ratio folder picker / script", "upload_ratio_picker", ".3f", ""),
        ("upload, script (100 per request, 1 thread), s", "upload_script_100x1_seconds", ".2f", ""),
        ("upload ratio drop / that script", "upload_ratio_vs_100x1", ".3f", ""),
        ("gallery: first thumbnails visible, ms", "gallery_first_thumbnails_ms", ".0f", "<= 1000"),
        ("gallery: max <img> nodes scrolling to end", "gallery_max_img_nodes", "d", "<= 300"),
        ("gallery: scroll to the end, s", "gallery_scroll_seconds", ".1f", ""),
    ]
    print()
    print(f"{'figure':<48} {'value':>10}   goal")
    for label, key, fmt, goal in rows:
        if key in figures:
            print(f"{label:<48} {figures[key]:>10{fmt}}   {goal}")
    if "upload_seconds_spread" in figures:
        print(f"upload batching (browser and script): {figures['upload_batching']}")
        for side, row in figures["upload_seconds_spread"].items():
            print(
                f"  {side:<12} median {row['median']:.2f} s  ({row['min']:.2f} .. {row['max']:.2f})"
            )
        for mode, row in figures["upload_round_ratio_spread"].items():
            print(
                f"  per-round ratio {mode} / script: median {row['median']:.3f} "
                f"({row['min']:.3f} .. {row['max']:.3f})"
            )
        for side, row in figures["upload_client_cpu_seconds"].items():
            print(
                f"  client CPU {side:<12} median {row['median']:.2f} s  "
                f"({row['min']:.2f} .. {row['max']:.2f})"
            )
        for mode, row in figures["upload_browser_counts"].items():
            busy = row["main_thread_busy_s"]
            print(
                f"  browser ({mode}): requests {row['requests']}, page main thread busy "
                f"median {busy['median']:.2f} s ({busy['min']:.2f} .. {busy['max']:.2f})"
            )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
