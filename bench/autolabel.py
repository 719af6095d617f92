"""Auto-label benchmark: an Oculab auto-label job against raw ultralytics batched predict.

Run from the repository root (needs the ml extra)::

    .venv/bin/python bench/autolabel.py [--images 256 --imgsz 640 --batch 16]

Both sides use the same weights (yolo11n from its YAML, saved once; inference cost does
not depend on training), the same JPEGs, the same batch size, confidence and precision
(FP16 on a GPU that has tensor cores, as the job runs), and are measured warm (model
loaded and run once at the batch shape before the clock starts; for the job, in its
warm inference process). The raw side runs
``model.predict`` on images decoded beforehand (the bar: ratio >= 0.9 on a GPU), and
also reads each batch with cv2 before predicting it (ratio_serial_decode). The Oculab
side is the job: it selects images in the database and sends them ahead to the slot's
inference process (workers/inference.py), which decodes them on its decode threads while
the previous batch runs, runs the same predict and answers boxes, which the job writes
back. Raw runs and job runs
alternate (``--repeats``) and each side keeps its best. Prints images/s for each, the
ratios and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from common import progress
from mlbench import jpeg, seconds, standalone
from PIL import Image

from server.models.annotation import Annotation
from server.models.image import Image as ImageRow
from server.models.image import ImageStatus
from server.models.registered_model import ModelState, RegisteredModel


def make_images(n: int, size: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        out.append(jpeg(Image.fromarray(pixels)))
    return out


def raw_model(weights: Path, device: str, batch: int, imgsz: int, sample: list[Any]) -> Any:
    from ultralytics import YOLO

    from workers.ml import yolo

    model = YOLO(str(weights))
    if yolo.use_half(device):
        model.overrides.update(yolo.half_args())
    # Warm up on a full batch: the first call at a new batch shape builds kernels.
    model.predict(sample[:batch], imgsz=imgsz, conf=0.25, iou=0.7, device=device, verbose=False)
    return model


def raw_predict(model: Any, images: list[Any], batch: int, imgsz: int, device: str) -> float:
    """Images per second of batched predict alone, on images decoded beforehand."""
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        model.predict(
            images[i : i + batch], imgsz=imgsz, conf=0.25, iou=0.7, device=device, verbose=False
        )
    return len(images) / (time.perf_counter() - start)


def raw_decode_and_predict(
    model: Any, files: list[Path], batch: int, imgsz: int, device: str
) -> float:
    """Images per second reading each batch with cv2, then predicting it, one thread."""
    import cv2

    start = time.perf_counter()
    for i in range(0, len(files), batch):
        images = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files[i : i + batch]]
        model.predict(images, imgsz=imgsz, conf=0.25, iou=0.7, device=device, verbose=False)
    return len(files) / (time.perf_counter() - start)


def reset_to_unlabeled(oculab: Any, project_id: int) -> None:
    """Undo the previous run's predictions so the next job labels the same images."""
    with oculab.maker() as db, db.begin():
        ids = sa.select(ImageRow.id).where(
            ImageRow.project_id == project_id, ImageRow.filename.like("img%")
        )
        db.execute(sa.delete(Annotation).where(Annotation.image_id.in_(ids)))
        db.execute(
            sa.update(ImageRow).where(ImageRow.id.in_(ids)).values(status=ImageStatus.unlabeled)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with standalone(standalone_cpu_slots=1) as oculab:
        from workers.ml import yolo

        yolo.configure_offline(oculab.settings.data_dir)
        from ultralytics import YOLO

        weights = oculab.settings.data_dir / "bench-yolo11n.pt"
        YOLO("yolo11n.yaml").save(str(weights))
        data = weights.read_bytes()
        received = oculab.received(data, "bench.pt")
        oculab.storage.commit_file(received.path, oculab.storage.blob_path(received.sha256))
        project_id = oculab.project("bench", ["a", "b"])
        with oculab.maker() as db, db.begin():
            model = RegisteredModel(
                project_id=project_id,
                name="bench",
                state=ModelState.ready,
                source="upload",
                sha256=received.sha256,
                size_bytes=len(data),
                class_names=["a", "b"],
                hyperparams={},
                metrics={},
            )
            db.add(model)
            db.flush()
            model_id = model.id
        gpus = oculab.settings.standalone_gpu_slots
        device = "cuda:0" if (gpus is None and yolo_device_available()) else "cpu"

        progress(f"{args.images} random JPEGs at {args.imgsz} px (warm-up batch first)")
        warm = make_images(args.batch, args.imgsz, seed=1)
        oculab.add_images(project_id, [(f"warm{i}.jpg", b) for i, b in enumerate(warm)])
        params = {
            "model_id": model_id,
            "conf": 0.25,
            "iou": 0.7,
            "statuses": ["unlabeled"],
            "batch": args.batch,
            "imgsz": args.imgsz,
        }
        oculab.wait(oculab.submit("autolabel.run", project_id, params))
        files = make_images(args.images, args.imgsz, seed=2)
        oculab.add_images(project_id, [(f"img{i}.jpg", b) for i, b in enumerate(files)])

        with oculab.maker() as db:
            rows = db.execute(
                sa.select(ImageRow.sha256)
                .where(ImageRow.filename.like("img%"))
                .order_by(ImageRow.id)
            )
            blobs = [oculab.storage.blob_path(sha) for (sha,) in rows]
        # The same bytes under .jpg names for cv2 and ultralytics.
        links = []
        for index, blob in enumerate(blobs):
            link = oculab.settings.data_dir / "raw" / f"{index}.jpg"
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(blob)
            links.append(link)

        import cv2

        decoded = [cv2.imread(str(link), cv2.IMREAD_COLOR) for link in links]
        raw = raw_model(weights, device, args.batch, args.imgsz, decoded)
        # Alternate raw and job runs and keep each side's best: the speed of this kind
        # of machine drifts by more than the difference being measured.
        raw_rates: list[float] = []
        serial_rates: list[float] = []
        job_rates: list[float] = []
        result: dict[str, Any] = {}
        for attempt in range(args.repeats):
            step = f"({attempt + 1}/{args.repeats})"
            progress(f"raw ultralytics: batched predict, decoded images {step}")
            raw_rates.append(raw_predict(raw, decoded, args.batch, args.imgsz, device))
            progress(f"raw ultralytics: decode, then predict {step}")
            serial_rates.append(raw_decode_and_predict(raw, links, args.batch, args.imgsz, device))
            progress(f"oculab: auto-label job {step}")
            reset_to_unlabeled(oculab, project_id)
            job = oculab.wait(oculab.submit("autolabel.run", project_id, params))
            assert job.result is not None
            assert job.result["images"] == args.images, job.result
            result = job.result
            job_rates.append(args.images / seconds(job))
        raw_rate, serial_rate, oculab_rate = max(raw_rates), max(serial_rates), max(job_rates)
        from workers import inference

        children = inference.CHILDREN.stats()

    figures = {
        "images": args.images,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "device": device,
        "job_device": result.get("device"),
        "job_half": result.get("half"),
        "job_batch": result.get("batch"),
        "job_decode_threads": result.get("decode_threads"),
        "oculab_images_per_s": round(oculab_rate, 2),
        "raw_images_per_s": round(raw_rate, 2),
        "raw_serial_decode_images_per_s": round(serial_rate, 2),
        "raw_runs": [round(r, 2) for r in raw_rates],
        "raw_serial_decode_runs": [round(r, 2) for r in serial_rates],
        "oculab_runs": [round(r, 2) for r in job_rates],
        "ratio": round(oculab_rate / raw_rate, 3),
        "ratio_serial_decode": round(oculab_rate / serial_rate, 3),
        "inference_process_rss_mib": [round(c["rss"] / 2**20) for c in children],
    }
    print("Auto-label: Oculab job vs raw ultralytics predict, same model, images and batch")
    print(f"  device {device}, {args.images} images at {args.imgsz} px, batch {args.batch}")
    print(
        f"  job ran on {result.get('device')}, half {result.get('half')}, batch "
        f"{result.get('batch')}, {result.get('decode_threads')} decode thread(s)"
    )
    print(f"  oculab job              {oculab_rate:8.2f} images/s")
    print(f"  raw predict (decoded)   {raw_rate:8.2f} images/s")
    print(f"  raw decode + predict    {serial_rate:8.2f} images/s")
    print(f"  ratio                   {oculab_rate / raw_rate:8.3f}   (goal on a GPU >= 0.9)")
    print(f"  ratio vs serial decode  {oculab_rate / serial_rate:8.3f}   (goal >= 0.95)")
    for child in children:
        rss = child["rss"] / 2**20
        print(f"  inference process {child['pid']} ({child['device']}): {rss:.0f} MiB")
    print(json.dumps(figures))


def yolo_device_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


if __name__ == "__main__":
    main()
