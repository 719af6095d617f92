"""Training benchmark: an Oculab training job against raw ``model.train``.

Run from the repository root (needs the ml extra)::

    .venv/bin/python bench/train.py [--images 64 --epochs 10 --imgsz 160 --batch 16]

The same synthetic "shapes" images and boxes, the same architecture (yolo11n.yaml),
epochs, image size, batch, seed and device on both sides. The raw side runs
``YOLO(...).train(...)`` in a fresh Python process on a YOLO folder written beforehand;
the Oculab side is the job, timed from start to finish: it snapshots the reviewed data
(hard links + label files), runs ultralytics in a supervised child process reporting
every epoch, and registers best.pt. Prints both wall times, the ratio (goal <= 1.05) and
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import REPO, oculab_env, progress
from mlbench import seconds, standalone

from server.demo import shapes
from server.models.annotation import Annotation, BoxStatus
from server.models.image import Image, ImageStatus

_RAW = """
import sys
from ultralytics import YOLO
from ultralytics.engine import trainer
trainer.check_amp = lambda model: next(model.parameters()).device.type == "cuda"
data, epochs, imgsz, batch, device, project = sys.argv[1:7]
YOLO("yolo11n.yaml").train(data=data, epochs=int(epochs), imgsz=int(imgsz),
    batch=int(batch), seed=0, deterministic=True, project=project, name="raw",
    exist_ok=True, plots=False, device=device, workers=0 if device == "cpu" else 4,
    amp=device != "cpu", verbose=False, patience=0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    with standalone(standalone_cpu_slots=1) as oculab:
        from workers.ml import yolo

        env = {**yolo.configure_offline(oculab.settings.data_dir)}
        project_id = oculab.project("bench", list(shapes.CLASSES))
        rendered = [shapes.render(i) for i in range(args.images)]
        oculab.add_images(project_id, [(f"s{i}.png", png) for i, (png, _) in enumerate(rendered)])
        truth = {i: boxes for i, (_, boxes) in enumerate(rendered)}
        with oculab.maker() as db, db.begin():
            for image in db.query(Image).order_by(Image.id):
                index = int(image.filename[1:-4])
                for position, b in enumerate(truth[index]):
                    db.add(
                        Annotation(
                            image_id=image.id,
                            position=position,
                            class_id=b.class_id,
                            x=b.x,
                            y=b.y,
                            w=b.w,
                            h=b.h,
                            source="manual",
                            status=BoxStatus.accepted,
                        )
                    )
                image.status = ImageStatus.reviewed
                image.revision = 1
        device = "0" if _cuda() else "cpu"

        progress(f"oculab: training job, {args.epochs} epochs on {args.images} images")
        job = oculab.wait(
            oculab.submit(
                "training.train",
                project_id,
                {
                    "base": "yolo11n.yaml",
                    "epochs": args.epochs,
                    "imgsz": args.imgsz,
                    "batch": args.batch,
                    "val_fraction": 0.2,
                    "seed": 0,
                    "only_reviewed": True,
                },
            )
        )
        oculab_seconds = seconds(job)
        assert job.result is not None
        snapshot = oculab.settings.data_dir / "snapshots" / job.result["snapshot"]

        progress("raw: model.train on the same snapshot folder")
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                _RAW,
                str(snapshot / "data.yaml"),
                str(args.epochs),
                str(args.imgsz),
                str(args.batch),
                "cpu" if device == "cpu" else "0",
                str(oculab.settings.data_dir / "raw-runs"),
            ],
            env={**oculab_env(), **env},
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        raw_seconds = time.perf_counter() - start

    ratio = oculab_seconds / raw_seconds
    print("Training: Oculab job vs raw ultralytics model.train, same data and settings")
    print(
        f"  {args.images} images, {args.epochs} epochs, imgsz {args.imgsz}, batch "
        f"{args.batch}, device {device}"
    )
    print(f"  oculab job  {oculab_seconds:8.2f} s")
    print(f"  raw train   {raw_seconds:8.2f} s")
    print(f"  ratio       {ratio:8.3f}   (goal <= 1.05)")
    print(
        json.dumps(
            {
                "images": args.images,
                "epochs": args.epochs,
                "imgsz": args.imgsz,
                "batch": args.batch,
                "device": device,
                "oculab_seconds": round(oculab_seconds, 2),
                "raw_seconds": round(raw_seconds, 2),
                "ratio": round(ratio, 3),
            }
        )
    )


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


if __name__ == "__main__":
    main()
