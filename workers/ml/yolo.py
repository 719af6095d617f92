"""Loading, inspecting and running YOLO models inside a worker process, offline.

Weights are pickles: they are loaded only in workers (never in the API), and only
through the restricted loader in workers/ml/checkpoints.py, which
``configure_offline`` installs for the whole process.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_configured = threading.Lock()
_CONFIGURED_FOR: list[str] = []


def configure_offline(data_dir: Path) -> dict[str, str]:
    """Points ultralytics at a settings dir inside the data dir and forbids downloads.

    Must run before ultralytics is imported; returns the variables for child processes.
    """
    env = {
        "YOLO_CONFIG_DIR": str((data_dir / "ultralytics").resolve()),
        "YOLO_OFFLINE": "1",
        # Never pip-install anything at run time (ultralytics would, for missing extras).
        "YOLO_AUTOINSTALL": "False",
        "YOLO_VERBOSE": "False",
        # ultralytics' restricted mode: weights_only loads and no eval() of model configs.
        "ULTRALYTICS_SAFE_LOAD": "1",
    }
    with _configured:
        if not _CONFIGURED_FOR:
            Path(env["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
            for key, value in env.items():
                os.environ.setdefault(key, value)
            _CONFIGURED_FOR.append(env["YOLO_CONFIG_DIR"])
            from workers.ml import checkpoints

            # Before anything here can load weights; it also sets ULTRALYTICS_SAFE_LOAD
            # for good, whatever the environment said.
            checkpoints.install()
            from ultralytics import settings

            # No telemetry, no hub, no experiment trackers: whichever of these keys this
            # ultralytics version knows.
            off = {
                "sync": False,
                "hub": False,
                "clearml": False,
                "comet": False,
                "dvc": False,
                "mlflow": False,
                "neptune": False,
                "raytune": False,
                "tensorboard": False,
                "wandb": False,
            }
            settings.update({k: v for k, v in off.items() if k in settings})
    return env


def device_for(gpu_index: int | None) -> str:
    return f"cuda:{gpu_index}" if gpu_index is not None else "cpu"


@dataclass(frozen=True)
class ModelInfo:
    task: str
    class_names: list[str]
    imgsz: int | None
    parameters: int
    architecture: str | None


def inspect(path: Path) -> ModelInfo:
    """Loads weights (restricted) and describes them; ValueError for anything unusable.

    Runs in the confined inspection child (workers/ml/sandbox.py), not in the worker.
    """
    from workers.ml import checkpoints

    model = checkpoints.load_yolo(path)
    if model.task == "detect":
        # What training would rebuild from the checkpoint's config must build, restricted.
        checkpoints.check_architecture(model.model, rebuild=True)
    names = model.names
    if isinstance(names, dict):
        class_names = [str(names[k]) for k in sorted(names)]
    else:
        class_names = [str(n) for n in names]
    args: dict[str, Any] = dict(getattr(model.model, "args", {}) or {})
    imgsz = args.get("imgsz")
    yaml = getattr(model.model, "yaml", {}) or {}
    architecture = Path(str(yaml.get("yaml_file", ""))).stem or None
    return ModelInfo(
        task=str(model.task),
        class_names=class_names,
        imgsz=int(imgsz) if isinstance(imgsz, int) else None,
        parameters=int(sum(p.numel() for p in model.model.parameters())),
        architecture=architecture,
    )


class ModelCache:
    """A few loaded models per worker process, least recently used dropped first."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, path: Path, key: str, device: str) -> Any:
        from workers.ml import checkpoints

        with self._lock:
            cached = self._models.get((key, device))
            if cached is not None:
                self._models.move_to_end((key, device))
                return cached
        model = checkpoints.load_yolo(path)
        model.to(device)
        # Warm up once so the first real batch does not pay for lazy initialisation.
        import numpy as np

        model.predict(np.zeros((64, 64, 3), dtype=np.uint8), device=device, verbose=False)
        with self._lock:
            self._models[(key, device)] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return model


# The worker process's loaded models: each is loaded and warmed up once.
MODELS = ModelCache(size=2)


@dataclass(frozen=True)
class Detection:
    class_index: int  # the model's class index
    confidence: float
    x: float  # top-left, normalised
    y: float
    w: float
    h: float


def predict(
    model: Any,
    images: Sequence[Any],
    *,
    conf: float,
    iou: float,
    imgsz: int | None,
    device: str,
) -> list[list[Detection]]:
    """Batched inference on decoded images (BGR arrays); boxes normalised, top-left."""
    kwargs: dict[str, Any] = {"conf": conf, "iou": iou, "device": device, "verbose": False}
    if imgsz:
        kwargs["imgsz"] = imgsz
    results = model.predict(list(images), **kwargs)
    out: list[list[Detection]] = []
    for result in results:
        detections: list[Detection] = []
        boxes = result.boxes
        if boxes is not None and len(boxes):
            xyxyn = boxes.xyxyn.cpu().numpy()
            classes = boxes.cls.cpu().numpy()
            confidences = boxes.conf.cpu().numpy()
            for (x1, y1, x2, y2), cls, score in zip(xyxyn, classes, confidences, strict=True):
                x1, y1 = max(float(x1), 0.0), max(float(y1), 0.0)
                x2, y2 = min(float(x2), 1.0), min(float(y2), 1.0)
                if x2 <= x1 or y2 <= y1:
                    continue
                detections.append(Detection(int(cls), float(score), x1, y1, x2 - x1, y2 - y1))
        out.append(detections)
    return out
