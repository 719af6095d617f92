"""Upload benchmark, the workload of issue 13: 2,000 synthetic 640x480 JPEGs (about
43 KB each, 2-5 boxes drawn on each) uploaded over HTTP in 20 requests of 100, on
``oculab standalone`` (SQLite) and on ``oculab api`` with a scratch PostgreSQL database.

Run from the repository root::

    .venv/bin/python bench/ingest.py [--images 2000 --batch 100 --repeats 3 --database both]

Each repeat uploads its own images (so nothing is a duplicate, and no blob or thumbnail
exists before) into a fresh project of the same server and, right before, writes the
same bytes with no server: sha256, write and fsync per file into a directory on the
same filesystem (the in-run baseline). With ``--label-studio`` Label Studio 1.23.2
(bench/label_studio.py, SQLite) is started after Oculab and gets the first repeat's very
bytes, in requests of the same size; without it the ratio is against 8.5 s, recorded
for issue 13 on another day and machine, not in this run.

Each database is measured with both ways the server can make an upload durable
(``--storage-sync both``): ``file`` (an fsync per file and per folder that gained an
entry; what ``auto`` picks for a data directory on a shared filesystem, as here) and
``filesystem`` (two syncfs per request, the setup named ``<database>+syncfs``; what
``auto`` picks when the data directory is a local filesystem of its own, e.g. a
Kubernetes or compose volume). Here both sync the same root filesystem.
Figures are medians over the repeats, because the 2-core machine is shared:

- ``upload_seconds``: wall time of the 20 requests, one after the other;
- ``upload_ratio``: upload_seconds / raw disk seconds (how many times the raw copy);
- ``upload_vs_label_studio``: upload_seconds / Label Studio's seconds for the same
  images (``label_studio_upload_seconds``; ``label_studio_measured`` says whether it was
  measured in this run); issue 13's goal: <= 0.3;
- ``thumbnails_seconds``: from the first request until every thumbnail is on disk
  (they are rendered after the response, once uploads have gone quiet);
- ``api_cpu_ms_per_image``, ``decode_cpu_ms_per_image``, ``thumbnails_cpu_ms_per_image``:
  CPU per image of the API process, its decode pool and its thumbnail renderer up to the
  last response (steadier than wall time on a busy machine); ``total_cpu_ms_per_image``:
  all of them until the last thumbnail is on disk.

Progress goes to stderr. Stdout gets a summary and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import random
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import label_studio
from api import (
    Deployment,
    Server,
    create_api_token,
    create_project,
    http_client,
    prepare,
    raw_disk_seconds,
    running_server,
)
from common import (
    CLOCK_TICKS,
    DEFAULT_PG_ADMIN_URL,
    BenchError,
    expect,
    memory_mib,
    proc_stat,
    process_tree,
    progress,
    rounded,
    scratch_database,
    scratch_dir,
)
from label_studio import RECORDED
from PIL import Image, ImageDraw

from server.kit.storage import SYNC_DESCRIPTIONS, SyncMode

# Issue 13: the same workload on another machine and day; used only without
# --label-studio, and printed as such.
LABEL_STUDIO_UPLOAD_SECONDS = 8.5
WIDTH, HEIGHT = 640, 480

Results = dict[str, Any]


@dataclass(frozen=True)
class Options:
    images: int
    batch: int
    repeats: int
    databases: tuple[str, ...]
    pg_admin_url: str
    label_studio: bool = False
    storage_syncs: tuple[SyncMode, ...] = ("file",)


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="images per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    parser.add_argument(
        "--label-studio",
        action="store_true",
        help="also upload the same images to Label Studio 1.23.2 in this run (installs it"
        " into bench/.venvs/ the first time) and take the ratio against that",
    )
    parser.add_argument(
        "--storage-sync",
        choices=("file", "filesystem", "both"),
        default="both",
        help="OCULAB_STORAGE_SYNC of the servers measured: an fsync per file and folder,"
        " two syncfs per request (what auto picks for a data directory that is a local"
        " filesystem of its own), or a server of each, one after the other",
    )
    args = parser.parse_args(argv)
    if args.images < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("need --images, --batch and --repeats >= 1")
    databases = ("sqlite", "postgres") if args.database == "both" else (args.database,)
    syncs: tuple[SyncMode, ...] = (
        ("file", "filesystem") if args.storage_sync == "both" else (args.storage_sync,)
    )
    return Options(
        args.images,
        args.batch,
        args.repeats,
        databases,
        args.pg_admin_url,
        args.label_studio,
        syncs,
    )


def setup_name(database: str, sync: SyncMode) -> str:
    """A measured setup's key in the results: the database, with ``+syncfs`` when the
    server made uploads durable by syncfs."""
    return database if sync == "file" else f"{database}+syncfs"


# --- workload ----------------------------------------------------------------------------


def dataset_jpeg(rng: random.Random) -> bytes:
    """Coarse noise scaled up (compresses like a photo) with 2-5 filled boxes on it."""
    small = (WIDTH // 16, HEIGHT // 16)
    img = Image.frombytes("RGB", small, rng.randbytes(small[0] * small[1] * 3))
    img = img.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 5)):
        w, h = rng.randint(40, 200), rng.randint(40, 200)
        x, y = rng.randint(0, WIDTH - w), rng.randint(0, HEIGHT - h)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.rectangle((x, y, x + w, y + h), fill=colour, outline=(0, 0, 0), width=3)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


def make_images(count: int, seed: int, seen: set[bytes]) -> list[bytes]:
    """``count`` images none of which is in ``seen`` (which gains them)."""
    rng = random.Random(seed)
    images: list[bytes] = []
    while len(images) < count:
        data = dataset_jpeg(rng)
        digest = hashlib.sha256(data).digest()
        if digest not in seen:
            seen.add(digest)
            images.append(data)
    return images


# --- measurements ------------------------------------------------------------------------


def cpu_by_role(pid: int) -> dict[str, float]:
    """CPU seconds (user + system, reaped children included) of the server process
    ("api"), its decode pool ("decode": children at normal priority) and its thumbnail
    renderer ("thumbnails": the child at nice 19)."""
    roles = {"api": 0.0, "decode": 0.0, "thumbnails": 0.0}
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            stat = proc_stat(member)
            ticks = stat["utime"] + stat["stime"] + stat["cutime"] + stat["cstime"]
            seconds = ticks / CLOCK_TICKS
            if member == pid:
                roles["api"] += seconds
            elif stat["nice"] > 0:
                roles["thumbnails"] += seconds
            else:
                roles["decode"] += seconds
    return roles


def cpu_ms_per_image(before: dict[str, float], after: dict[str, float], n: int) -> Results:
    return {f"{role}_cpu_ms_per_image": (after[role] - before[role]) * 1000 / n for role in before}


def children_rss_mib(pid: int) -> float:
    return sum(memory_mib(child).get("VmRSS", 0.0) for child in process_tree(pid) if child != pid)


def count_thumbnails(data_dir: Path) -> int:
    thumbs = data_dir / "thumbs"
    if not thumbs.exists():
        return 0
    return sum(1 for sub in thumbs.iterdir() for _ in sub.glob("*.jpg"))


def upload(client: httpx.Client, project_id: int, images: Sequence[bytes], batch: int) -> list[int]:
    ids: list[int] = []
    for first in range(0, len(images), batch):
        chunk = images[first : first + batch]
        files = [
            ("files", (file_name(first + i), data, "image/jpeg")) for i, data in enumerate(chunk)
        ]
        result = expect(client.post(f"/api/projects/{project_id}/images", files=files), 201)
        if result["created"] != len(chunk):
            raise BenchError(f"upload created {result['created']} of {len(chunk)}")
        ids.extend(item["image_id"] for item in result["items"])
    return ids


def wait_thumbnails(data_dir: Path, expected: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while count_thumbnails(data_dir) < expected:
        if time.monotonic() > deadline:
            raise BenchError(f"thumbnails: {count_thumbnails(data_dir)} of {expected}")
        time.sleep(0.02)


def one_repeat(
    options: Options,
    server: Server,
    client: httpx.Client,
    data_dir: Path,
    root: Path,
    images: Sequence[bytes],
    index: int,
) -> Results:
    """One timed upload of ``images`` (never uploaded to this server before)."""
    raw = raw_disk_seconds(images, root / f"raw-{index}")
    project_id = create_project(client, f"ingest-{index}")
    thumbs_before = count_thumbnails(data_dir)
    cpu_before = cpu_by_role(server.process.pid)
    start = time.perf_counter()
    ids = upload(client, project_id, images, options.batch)
    elapsed = time.perf_counter() - start
    cpu_uploaded = cpu_by_role(server.process.pid)
    wait_thumbnails(data_dir, thumbs_before + len(images))
    thumbs_elapsed = time.perf_counter() - start
    cpu_thumbnailed = cpu_by_role(server.process.pid)
    if len(set(ids)) != len(images):
        raise BenchError("image ids are not distinct")
    during = cpu_ms_per_image(cpu_before, cpu_uploaded, len(images))
    total = cpu_ms_per_image(cpu_before, cpu_thumbnailed, len(images))
    return {
        "upload_seconds": elapsed,
        "raw_disk_seconds": raw,
        "upload_ratio": elapsed / raw,
        "thumbnails_seconds": thumbs_elapsed,
        # Up to the last response, by process:
        **during,
        # Until the last thumbnail, all processes together:
        "total_cpu_ms_per_image": sum(total.values()),
    }


def bench_database(
    options: Options,
    database: str,
    sync: SyncMode,
    image_sets: Sequence[Sequence[bytes]],
    root: Path,
) -> Results:
    """``root``: an empty folder, left in place (see ``main``)."""
    password = secrets.token_urlsafe(18)
    name = setup_name(database, sync)
    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            deployment = Deployment(
                database_url=None,
                data_dir=root / "data",
                secret_key=secrets.token_urlsafe(48),
                admin_password=password,
                storage_sync=sync,
            )
        else:
            url = stack.enter_context(scratch_database(options.pg_admin_url))
            deployment = Deployment(
                database_url=url,
                data_dir=root / "data",
                secret_key=secrets.token_urlsafe(48),
                storage_sync=sync,
            )
            deployment.data_dir.mkdir()
            prepare(deployment, password)
        server = stack.enter_context(running_server(deployment, root / "server.log"))
        check_sync_mode(server.log_path, sync)
        token = create_api_token(server.base_url, password, deployment.admin_username)
        runs: list[Results] = []
        with http_client(server.base_url, token) as client:
            for index, images in enumerate(image_sets):
                progress(f"{name}: repeat {index + 1} of {options.repeats}")
                runs.append(
                    one_repeat(options, server, client, deployment.data_dir, root, images, index)
                )
                progress(f"{name}: {json.dumps(rounded(runs[-1]))}")
        memory = memory_mib(server.process.pid)
        results: Results = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        results["runs"] = runs
        results["server_rss_mib"] = memory["VmRSS"]
        results["server_peak_rss_mib"] = memory["VmHWM"]
        results["children_rss_mib"] = children_rss_mib(server.process.pid)
        return results


def check_sync_mode(log_path: Path, sync: SyncMode) -> None:
    """The server says, as it starts, how it makes files durable: the setup measured is
    the one named."""
    said = f"durable by {SYNC_DESCRIPTIONS[sync]}"
    if said not in log_path.read_text(errors="replace"):
        raise BenchError(f"the server's log does not say {said!r}")


def file_name(index: int) -> str:
    return f"img_{index:06d}.jpg"


def label_studio_seconds(options: Options, images: Sequence[bytes]) -> tuple[float, bool]:
    """Label Studio's upload time for ``images`` and whether it was measured now."""
    if not options.label_studio:
        return LABEL_STUDIO_UPLOAD_SECONDS, False
    files = [(file_name(index), data) for index, data in enumerate(images)]
    return label_studio.upload_seconds(files, options.batch), True


def add_label_studio_ratios(results: Results, seconds: float) -> None:
    for run in results["runs"]:
        run["upload_vs_label_studio"] = run["upload_seconds"] / seconds
    results["upload_vs_label_studio"] = results["upload_seconds"] / seconds


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = parse_options(argv)
    progress(
        f"generating {options.repeats} x {options.images} JPEGs {WIDTH}x{HEIGHT} with 2-5 boxes"
    )
    seen: set[bytes] = set()
    image_sets = [make_images(options.images, 13 + index, seen) for index in range(options.repeats)]
    images = image_sets[0]
    mean = sum(map(len, images)) // len(images)
    results: Results = {"images": len(images), "bytes_mean": mean, "batch": options.batch}
    try:
        # Every server's files stay until the end: deleting thousands of files slows the
        # next minutes' file creation on this machine's ext4, which has no journal (the
        # inode allocator skips inodes freed in the last 60 s, or 6 min while their inode
        # table block is dirty, testing them one by one), and the next side measured
        # (the other database, Label Studio) would pay for the previous one's clean-up.
        with scratch_dir() as root:
            for database in options.databases:
                for sync in options.storage_syncs:
                    name = setup_name(database, sync)
                    (root / name).mkdir()
                    results[name] = bench_database(options, database, sync, image_sets, root / name)
            # After Oculab, so its start and upload do not share the cores with Oculab's.
            ls_seconds, measured = label_studio_seconds(options, images)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    results["label_studio_upload_seconds"] = ls_seconds
    results["label_studio_measured"] = measured
    names = [setup_name(d, sync) for d in options.databases for sync in options.storage_syncs]
    for name in names:
        add_label_studio_ratios(results[name], ls_seconds)
    ls_label = (
        f"Label Studio's {ls_seconds:.2f} s measured in this run"
        if measured
        else f"Label Studio's {ls_seconds:.1f} s {RECORDED}"
    )
    print(
        f"Upload {len(images)} JPEGs {WIDTH}x{HEIGHT} (~{mean // 1000} KB) in requests of "
        f"{options.batch}; medians of {options.repeats}"
    )
    for name in names:
        r = results[name]
        print(
            f"  {name:<15} upload {r['upload_seconds']:.2f} s, raw disk "
            f"{r['raw_disk_seconds']:.2f} s ({r['upload_ratio']:.2f}x raw), "
            f"{r['upload_vs_label_studio']:.2f}x {ls_label}; thumbnails done at "
            f"{r['thumbnails_seconds']:.2f} s"
        )
        print(
            f"  {'':<15} CPU ms/image until the last response: API process "
            f"{r['api_cpu_ms_per_image']:.2f}, decode pool {r['decode_cpu_ms_per_image']:.2f}, "
            f"thumbnails {r['thumbnails_cpu_ms_per_image']:.2f}; all until the last "
            f"thumbnail {r['total_cpu_ms_per_image']:.2f}; RSS API {r['server_rss_mib']:.0f} "
            f"MiB, children {r['children_rss_mib']:.0f} MiB"
        )
    print(json.dumps(rounded(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
