"""Dataset export benchmark: the ``datasets.export`` job's own code on a scratch
PostgreSQL database, against plain ``zipfile`` writing the same blobs.

Run from the repository root::

    .venv/bin/python bench/export.py [--images 20000 --boxes 100000 --format yolo]

It creates a database, migrates it, writes ``--images`` distinct images straight
into content-addressed storage with their rows and ``--boxes`` boxes (COPY, no API),
then runs two child processes one after the other, so each one's peak RSS is its own:

- export: a real job row and ``JobContext``, then ``server.datasets.tasks.export_dataset``
  exactly as a worker calls it;
- raw: the same blob files, in the same order, into a zip with ``zipfile.write`` and
  no database; timed once without and once including an fsync of the zip (the export
  fsyncs its archive before it renames it into place).

Images are noise PNGs (64x48 by default: per-file overhead dominates) or, with
``--image-format jpeg --image-size 640x480``, smooth noise JPEGs of about 41 KB each,
the workload of issue 13 (2,000 of them make an 83 MB zip). ``--repeats N`` runs both
children N times, alternating, and reports the medians (the machine is shared).

Progress goes to stderr. Stdout gets a summary and, as its last line, one JSON object.
The database and the temp dir are removed at the end, also on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from common import (
    DEFAULT_PG_ADMIN_URL,
    OCULAB,
    BenchError,
    memory_mib,
    oculab_env,
    progress,
    rounded,
    scratch_database,
    scratch_dir,
)
from PIL import Image

from server.kit.storage import Storage

CLASSES = ["car", "person", "bicycle", "dog", "traffic light"]

Results = dict[str, Any]


@dataclass(frozen=True)
class Options:
    images: int
    boxes: int
    format: str
    width: int
    height: int
    pg_admin_url: str
    image_format: str = "png"
    repeats: int = 1


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="images in the project")
    parser.add_argument("--boxes", type=int, default=100_000, help="boxes, spread over images")
    parser.add_argument("--format", choices=["yolo", "coco"], default="yolo")
    parser.add_argument("--image-size", default="64x48", help="WIDTHxHEIGHT of each image")
    parser.add_argument("--image-format", choices=["png", "jpeg"], default="png")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each child (medians)")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args(argv)
    width, _, height = args.image_size.partition("x")
    if (
        args.images < 1
        or args.boxes < 0
        or args.repeats < 1
        or not (width.isdigit() and height.isdigit())
    ):
        parser.error("need --images >= 1, --boxes >= 0, --repeats >= 1, --image-size like 64x48")
    return Options(
        args.images,
        args.boxes,
        args.format,
        int(width),
        int(height),
        args.pg_admin_url,
        args.image_format,
        args.repeats,
    )


def ru_maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _status_mib(key: str) -> float:
    with contextlib.suppress(OSError):
        return memory_mib().get(key, math.nan)
    return math.nan


def peak_rss_mib() -> float:
    """This process's own peak RSS. ru_maxrss is max(VmHWM, a value inherited at exec:
    the parent's RSS when it forked, here the seeding script with its big lists), so
    VmHWM is the figure to read; ru_maxrss is reported next to it."""
    peak = _status_mib("VmHWM")
    return ru_maxrss_mib() if peak != peak else peak  # NaN: no /proc, use ru_maxrss


def start_measuring() -> dict[str, float]:
    """Resets the peak so that it covers the measured work only, not the imports
    before it (importing the server hashes a dummy Argon2 password, which alone peaks
    at 64 MiB). Linux: writing 5 to clear_refs resets the high-water mark."""
    before = {"import_peak_rss_mib": peak_rss_mib()}
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    before["rss_before_mib"] = _status_mib("VmRSS")
    return before


# --- environment ---------------------------------------------------------------------------


def export_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return oculab_env(database_url=database_url, data_dir=str(data_dir))


def migrate(database_url: str, data_dir: Path) -> None:
    progress("oculab migrate")
    done = subprocess.run(
        [OCULAB, "migrate"],
        env=export_env(database_url, data_dir),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"oculab migrate failed ({done.returncode}):\n{done.stderr}")


# --- seeding -------------------------------------------------------------------------------


def noise_png(rng: random.Random, width: int, height: int) -> bytes:
    img = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def smooth_jpeg(rng: random.Random, width: int, height: int) -> bytes:
    """Coarse noise scaled up: compresses like a photo (about 41 KB at 640x480)."""
    small = (max(width // 16, 1), max(height // 16, 1))
    img = Image.frombytes("RGB", small, rng.randbytes(small[0] * small[1] * 3))
    out = io.BytesIO()
    img.resize((width, height), Image.Resampling.BILINEAR).save(out, format="JPEG", quality=80)
    return out.getvalue()


def write_blobs(options: Options, data_dir: Path) -> list[tuple[str, int]]:
    """(sha256, size) of each distinct image, written where storage keeps blobs."""
    rng = random.Random(20_000)
    found: list[tuple[str, int]] = []
    seen: set[str] = set()
    storage = Storage(data_dir)
    while len(found) < options.images:
        make = smooth_jpeg if options.image_format == "jpeg" else noise_png
        data = make(rng, options.width, options.height)
        sha = hashlib.sha256(data).hexdigest()
        if sha in seen:
            continue
        seen.add(sha)
        path = storage.blob_path(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        found.append((sha, len(data)))
    return found


def boxes_for(image_index: int, total_images: int, total_boxes: int) -> int:
    share, extra = divmod(total_boxes, total_images)
    return share + (1 if image_index < extra else 0)


def returned_id(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise BenchError(f"no id returned by {query[:40]}...")
    return int(row[0])


def seed_rows(
    conn: psycopg.Connection[Any], options: Options, blobs: list[tuple[str, int]]
) -> tuple[int, int, Results]:
    """Returns the project id, the user id and what an export should contain."""
    rng = random.Random(7)
    user_id = returned_id(
        conn,
        "INSERT INTO users (issuer, subject, username, is_admin, is_active, groups, created_at)"
        " VALUES ('local', 'bench', 'bench', true, true, '[]', now()) RETURNING id",
    )
    project_id = returned_id(
        conn,
        "INSERT INTO projects (name, description, classes, created_by, created_at, updated_at)"
        " VALUES ('bench-export', '', %s, %s, now(), now()) RETURNING id",
        json.dumps(CLASSES),
        user_id,
    )
    statuses: list[str] = []
    box_rows: list[tuple[int, int, int, float, float, float, float, str]] = []
    exported_boxes = 0
    for index in range(options.images):
        n = boxes_for(index, options.images, options.boxes)
        kinds = rng.choices(["accepted", "predicted", "rejected"], [80, 15, 5], k=n)
        statuses.append("predicted" if "predicted" in kinds else "reviewed" if n else "unlabeled")
        exported_boxes += sum(kind != "rejected" for kind in kinds)
        for position, kind in enumerate(kinds):
            w, h = rng.uniform(0.01, 0.5), rng.uniform(0.01, 0.5)
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            box_rows.append((index, position, rng.randrange(len(CLASSES)), x, y, w, h, kind))
    suffix = "jpg" if options.image_format == "jpeg" else "png"
    with conn.cursor().copy(
        "COPY images (project_id, sha256, filename, format, width, height, size_bytes, status,"
        " split, revision, uploaded_by, created_at) FROM STDIN"
    ) as copy:
        for index, (sha, size) in enumerate(blobs):
            split = ("train", "val", None)[index % 3]
            copy.write_row(
                (
                    project_id,
                    sha,
                    # names repeat
                    f"frame_{index % (options.images // 2 or 1):06d}.{suffix}",
                    options.image_format,
                    options.width,
                    options.height,
                    size,
                    statuses[index],
                    split,
                    1,
                    user_id,
                    "2026-01-01T00:00:00Z",
                )
            )
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM images WHERE project_id = %s ORDER BY id", [project_id]
        )
    ]
    with conn.cursor().copy(
        "COPY annotations (image_id, position, class_id, x, y, w, h, source, status) FROM STDIN"
    ) as copy:
        for index, position, class_id, x, y, w, h, kind in box_rows:
            copy.write_row((ids[index], position, class_id, x, y, w, h, "manual", kind))
    conn.execute("ANALYZE images")
    conn.execute("ANALYZE annotations")
    expected = {"images": options.images, "boxes": exported_boxes}
    return project_id, user_id, expected


def insert_job(
    conn: psycopg.Connection[Any], project_id: int, user_id: int, params: dict[str, Any]
) -> int:
    """A job row as a worker leaves it after claiming it, so progress() accepts it."""
    return returned_id(
        conn,
        "INSERT INTO jobs (kind, project_id, created_by, pool, priority, state, progress,"
        " message, attempts, max_attempts, worker_id, heartbeat_at, cancel_requested,"
        " created_at, started_at, params)"
        " VALUES ('datasets.export', %s, %s, 'cpu', 0, 'running', 0, '', 1, 3, 'bench',"
        " now(), false, now(), now(), %s) RETURNING id",
        project_id,
        user_id,
        json.dumps(params),
    )


# --- the two measured children ------------------------------------------------------------


def child_export(args: dict[str, Any]) -> Results:
    from sqlalchemy import orm as sa_orm

    from server.datasets.tasks import export_dataset
    from server.jobs.context import JobContext
    from server.kit.db import make_engine, make_sessionmaker
    from server.settings import Settings

    settings = Settings(database_url=args["database_url"], data_dir=Path(args["data_dir"]))
    engine = make_engine(settings.resolved_database_url, pool_size=2)
    ctx = JobContext(
        job_id=args["job_id"],
        kind="datasets.export",
        params=args["params"],
        project_id=args["project_id"],
        created_by=args["user_id"],
        attempt=1,
        gpu_index=None,
        worker_id="bench",
        settings=settings,
        storage=Storage(settings.data_dir, fsync=settings.fsync),
        sessionmaker=make_sessionmaker(engine),
    )
    # A worker has claimed the job through its engine and the ORM before the kind runs:
    # its mappers are configured and its pool holds a connection. Here those one-off
    # costs (about 0.1 s) would be timed as the export's.
    sa_orm.configure_mappers()
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    measured = start_measuring()
    start = time.perf_counter()
    result = export_dataset(ctx)
    seconds = time.perf_counter() - start
    with engine.connect() as conn:
        artifact = conn.exec_driver_sql(
            f"SELECT artifact_path FROM jobs WHERE id = {int(args['job_id'])}"
        ).scalar()
    engine.dispose()
    return {
        **measured,
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "ru_maxrss_mib": ru_maxrss_mib(),
        "result": result,
        "artifact_path": artifact,
    }


def child_raw(args: dict[str, Any]) -> Results:
    """The floor: the same files into a zip with plain zipfile, no database at all;
    then the fsync that the export's durability adds on top."""
    paths = Path(args["list"]).read_text().split()
    target = Path(args["target"])
    suffix = args.get("suffix", "png")
    target.unlink(missing_ok=True)
    measured = start_measuring()
    start = time.perf_counter()
    with open(target, "wb") as fh:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as archive:
            for index, path in enumerate(paths):
                archive.write(path, f"images/{index}.{suffix}")
        seconds = time.perf_counter() - start
        fh.flush()
        os.fsync(fh.fileno())
        fsync_seconds = time.perf_counter() - start
    return {
        **measured,
        "seconds": seconds,
        "fsync_seconds": fsync_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "ru_maxrss_mib": ru_maxrss_mib(),
        "zip_bytes": target.stat().st_size,
    }


def run_child(mode: str, args: dict[str, Any], env: dict[str, str]) -> Results:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise BenchError(f"the {mode} child failed ({done.returncode}):\n{done.stderr}")
    result: Results = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- orchestration ---------------------------------------------------------------------------


def verify(archive_path: Path, options: Options, expected: Results, result: Results) -> None:
    if result["images"] != expected["images"] or result["boxes"] != expected["boxes"]:
        raise BenchError(f"export wrote {result}, expected {expected}")
    with zipfile.ZipFile(archive_path) as archive:
        images = sum(name.startswith("images/") for name in archive.namelist())
    if images != options.images:
        raise BenchError(f"the zip holds {images} images, expected {options.images}")


def median_run(runs: list[Results], key: str = "seconds") -> Results:
    """The run with the median time (the lower middle one for an even count), so its
    memory figures belong to the same run as its time."""
    return sorted(runs, key=lambda run: float(run[key]))[(len(runs) - 1) // 2]


def run_benchmark(options: Options) -> Results:
    with (
        scratch_database(options.pg_admin_url, "oculab_bench_export_") as database_url,
        scratch_dir("oculab-bench-export-") as root,
    ):
        data_dir = root / "data"
        data_dir.mkdir()
        migrate(database_url, data_dir)
        progress(
            f"writing {options.images} {options.image_format} images"
            f" {options.width}x{options.height}"
        )
        start = time.perf_counter()
        blobs = write_blobs(options, data_dir)
        progress(f"inserting rows and {options.boxes} boxes with COPY")
        params = {"format": options.format, "only_reviewed": False, "val_fraction": 0, "seed": 0}
        with psycopg.connect(database_url, autocommit=True) as conn:
            with conn.transaction():
                project_id, user_id, expected = seed_rows(conn, options, blobs)
            job_id = insert_job(conn, project_id, user_id, params)
        seed_seconds = time.perf_counter() - start
        progress(f"seeded in {seed_seconds:.1f} s")
        listing = root / "blobs.txt"
        storage = Storage(data_dir)
        listing.write_text("\n".join(str(storage.blob_path(sha)) for sha, _ in blobs))
        env = export_env(database_url, data_dir)
        export_args = {
            "database_url": database_url,
            "data_dir": str(data_dir),
            "job_id": job_id,
            "project_id": project_id,
            "user_id": user_id,
            "params": params,
        }
        raw_args = {
            "list": str(listing),
            "target": str(root / "raw.zip"),
            "suffix": "jpg" if options.image_format == "jpeg" else "png",
        }
        exports: list[Results] = []
        raws: list[Results] = []
        for repeat in range(options.repeats):
            progress(f"run {repeat + 1} of {options.repeats}: the export job's code")
            exported = run_child("export", export_args, env)
            if exported["artifact_path"] != f"exports/{job_id}.zip":
                raise BenchError(f"artifact_path is {exported['artifact_path']!r}")
            verify(data_dir / exported["artifact_path"], options, expected, exported["result"])
            # A real export writes a new file; replacing the last run's (freeing its
            # blocks) would be timed otherwise. The raw child also starts with no file.
            (data_dir / exported["artifact_path"]).unlink()
            exports.append(exported)
            progress(f"run {repeat + 1} of {options.repeats}: plain zipfile over the same blobs")
            raws.append(run_child("raw", raw_args, env))
    exported, raw = median_run(exports), median_run(raws)
    raw_fsync_seconds = float(median_run(raws, "fsync_seconds")["fsync_seconds"])
    blob_bytes = sum(size for _, size in blobs)
    return {
        "format": options.format,
        "image_format": options.image_format,
        "images": options.images,
        "repeats": options.repeats,
        "boxes_seeded": options.boxes,
        "boxes_exported": exported["result"]["boxes"],
        "image_bytes_total": blob_bytes,
        "seed_seconds": seed_seconds,
        "export_seconds": exported["seconds"],
        "export_seconds_all": [run["seconds"] for run in exports],
        "export_images_per_s": options.images / exported["seconds"],
        "export_zip_bytes": exported["result"]["zip_bytes"],
        "export_import_peak_rss_mib": exported["import_peak_rss_mib"],
        "export_rss_before_mib": exported["rss_before_mib"],
        "export_peak_rss_mib": exported["peak_rss_mib"],
        "export_rss_growth_mib": exported["peak_rss_mib"] - exported["rss_before_mib"],
        "export_ru_maxrss_mib": exported["ru_maxrss_mib"],
        "raw_seconds": raw["seconds"],
        "raw_seconds_all": [run["seconds"] for run in raws],
        "raw_fsync_seconds": raw_fsync_seconds,
        "raw_images_per_s": options.images / raw["seconds"],
        "raw_zip_bytes": raw["zip_bytes"],
        "raw_rss_before_mib": raw["rss_before_mib"],
        "raw_peak_rss_mib": raw["peak_rss_mib"],
        "raw_rss_growth_mib": raw["peak_rss_mib"] - raw["rss_before_mib"],
        "raw_ru_maxrss_mib": raw["ru_maxrss_mib"],
        "ratio": exported["seconds"] / raw["seconds"],
        "ratio_fsync": exported["seconds"] / raw_fsync_seconds,
    }


SUMMARY = [
    (
        "Export ({format}): {images} {image_format} images, {boxes_exported} of {boxes_seeded}"
        " boxes, median of {repeats}",
        None,
    ),
    ("  seeding (images + COPY)", "{seed_seconds:.1f} s"),
    ("  export job", "{export_seconds:.2f} s, {export_images_per_s:.0f} images/s"),
    ("  zip", "{export_zip_bytes} bytes ({image_bytes_total} bytes of images)"),
    (
        "  peak RSS during export",
        "{export_peak_rss_mib:.1f} MiB (RSS before {export_rss_before_mib:.1f} MiB,"
        " +{export_rss_growth_mib:.1f} MiB)",
    ),
    ("  peak RSS while importing", "{export_import_peak_rss_mib:.1f} MiB (server modules)"),
    ("  ru_maxrss", "{export_ru_maxrss_mib:.1f} MiB (includes the forking parent's RSS)"),
    ("Raw zipfile, same blobs, no DB", None),
    ("  write", "{raw_seconds:.2f} s, {raw_images_per_s:.0f} images/s"),
    ("  write + fsync", "{raw_fsync_seconds:.2f} s"),
    ("  zip", "{raw_zip_bytes} bytes"),
    (
        "  peak RSS while writing",
        "{raw_peak_rss_mib:.1f} MiB (RSS before {raw_rss_before_mib:.1f} MiB,"
        " +{raw_rss_growth_mib:.1f} MiB)",
    ),
    ("  ru_maxrss", "{raw_ru_maxrss_mib:.1f} MiB"),
    ("Export / raw (time)", "{ratio:.2f}x"),
    ("Export / raw with fsync", "{ratio_fsync:.2f}x"),
]


def print_summary(results: Results) -> None:
    print("Oculab export benchmark")
    for label, value in SUMMARY:
        heading = label.format(**results)
        print(heading if value is None else f"{heading + ':':<28} {value.format(**results)}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        mode, args = argv[1], json.loads(argv[2])
        result = child_export(args) if mode == "export" else child_raw(args)
        print(json.dumps(result))
        return 0
    options = parse_options(argv)
    try:
        results = run_benchmark(options)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    print_summary(results)
    print(json.dumps({key: rounded(value) for key, value in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
