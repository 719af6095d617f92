"""Loading, inspecting and running YOLO models inside a worker process, offline.

Weights are pickles: they are loaded only in workers (never in the API), and only
through the restricted loader in workers/ml/checkpoints.py, which
``configure_offline`` installs for the whole process.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_configured = threading.Lock()
_CONFIGURED_FOR: list[str] = []


def offline_env(data_dir: Path) -> dict[str, str]:
    """The variables that keep ultralytics offline, with its settings dir inside the data
    dir (created here): for the environment of a child process. Imports nothing, so a
    worker (in standalone, the API process) can start ML children without loading torch.
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
    Path(env["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    return env


def configure_offline(data_dir: Path) -> dict[str, str]:
    """Points ultralytics at a settings dir inside the data dir and forbids downloads,
    in this process (which then loads ultralytics and torch: ML children only).

    Must run before ultralytics is imported; returns the variables for child processes.
    """
    env = offline_env(data_dir)
    with _configured:
        if not _CONFIGURED_FOR:
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


@dataclass
class Runtime:
    """How a cached model runs: its device, its precision, and what it has warmed up."""

    device: str
    half: bool
    # One caller at a time: ultralytics sets a call's arguments (conf, iou, imgsz) on the
    # shared predictor before its own lock, so two threads on one model (CPU pool slots)
    # could otherwise run with each other's thresholds.
    lock: threading.Lock = field(default_factory=threading.Lock)
    warmed: set[tuple[int, int]] = field(default_factory=set)


# Keyed by the YOLO object, so an evicted model's entry goes with it.
_RUNTIMES: weakref.WeakKeyDictionary[Any, Runtime] = weakref.WeakKeyDictionary()


class GpuOutOfMemory(RuntimeError):
    """The GPU ran out of memory and a smaller batch cannot help."""


def runtime(model: Any) -> Runtime | None:
    return _RUNTIMES.get(model)


def placement(model: Any) -> tuple[str, bool]:
    """Where the model's weights are and whether they are FP16: what inference runs on."""
    import torch

    param = next(model.model.parameters())
    return str(param.device), param.dtype == torch.float16


def release_cuda_memory() -> None:
    """Hands the allocator's unused blocks back to the driver, so a training child on the
    same GPU can have them; nothing to do (and no CUDA start-up) when CUDA was never used."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or other device) allocation failure, however torch or ultralytics wrapped
    it; the same tests as ultralytics' own batch halving."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "OutOfMemoryError" or isinstance(current, MemoryError):
            return True
        text = str(current)
        if "out of memory" in text.lower() or "CUBLAS_STATUS_ALLOC_FAILED" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def run_in_batches(
    run: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    batch: int,
    *,
    what: str,
    log: Callable[[str], None] | None = None,
) -> tuple[list[R], int]:
    """Runs ``run`` over ``items``, ``batch`` at a time, results in order. When the GPU
    runs out of memory it halves the batch and runs the same items again, down to one at
    a time; returns the results and the batch that ran (the next call's starting point).
    """
    out: list[R] = []
    start = 0
    while start < len(items):
        chunk = items[start : start + batch]
        try:
            out.extend(run(chunk))
            start += len(chunk)
            continue
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        # Out of the handler: the traceback no longer holds the failed batch's tensors.
        release_cuda_memory()
        if len(chunk) == 1:
            raise GpuOutOfMemory(
                f"the GPU ran out of memory running {what} even one image at a time"
            )
        batch = len(chunk) // 2
        if log is not None:
            log(f"the GPU ran out of memory at batch {len(chunk)}; retrying with batch {batch}")
    return out, batch


def image_size(model: Any, imgsz: int | None) -> int:
    """The square size ultralytics resizes to: the given one, else the model's own."""
    own = model.overrides.get("imgsz")
    return imgsz or (own if isinstance(own, int) else 640)


def use_half(device: str) -> bool:
    if not device.startswith("cuda"):
        return False  # ultralytics runs PyTorch models in FP32 on the CPU anyway
    import torch

    # Tensor cores (Volta, 7.0) make FP16 faster; before them it is no faster.
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return (major, minor) >= (7, 0)


def half_args() -> dict[str, Any]:
    """The ultralytics predict argument for FP16."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    # ultralytics 8.4 folded `half` into `quantize` (16: FP16) and warns on `half`.
    return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


def _load(path: Path, device: str) -> Any:
    """Loads weights (restricted) with exactly one copy of them on ``device``.

    Neither ``YOLO.to(device)`` nor a later ``.to()``: the predictor deep-copies the
    model and its AutoBackend moves, fuses and (FP16) casts that copy, so the copy is
    made on the CPU and the cached model then points at the predictor's module.
    """
    import numpy as np

    from workers.ml import checkpoints

    model = checkpoints.load_yolo(path)
    half = use_half(device)
    if half:
        # Model-level, so every predict on this model (ours or anyone's) runs FP16.
        model.overrides.update(half_args())
    if device.startswith("cuda"):
        import torch

        # Fixed input shapes (a job's batch and size): let cuDNN time its kernels once.
        torch.backends.cudnn.benchmark = True
    try:
        model.predict(np.zeros((32, 32, 3), dtype=np.uint8), device=device, verbose=False)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        failed = True
    else:
        failed = False
    if failed:
        release_cuda_memory()
        raise GpuOutOfMemory(f"the GPU ran out of memory loading the model on {device}")
    model.model = _predictor_module(model.predictor)
    _RUNTIMES[model] = Runtime(device=device, half=half)
    return model


def _predictor_module(predictor: Any) -> Any:
    backend = predictor.model  # AutoBackend
    inner = getattr(getattr(backend, "backend", None), "model", None)  # ultralytics >= 8.4
    return inner if inner is not None else backend.model


def victims(keys: Iterable[tuple[str, str]], device: str, size: int) -> list[tuple[str, str]]:
    """The (key, device) entries to drop, oldest first, so ``device`` keeps ``size``:
    models on other devices (other slots' GPUs) are not this device's to evict."""
    on_device = [k for k in keys if k[1] == device]
    return on_device[: max(len(on_device) - size, 0)]


class ModelCache:
    """Loaded models of a worker process: up to ``size`` per device, least recently used
    dropped first, each with one copy of its weights on its device."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, str], Any] = OrderedDict()
        # One load at a time per entry: two CPU slots asking for one model load it once.
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    def get(self, path: Path, key: str, device: str) -> Any:
        entry = (key, device)
        with self._lock:
            loading = self._loading.setdefault(entry, threading.Lock())
        with loading:
            with self._lock:
                cached = self._models.get(entry)
                if cached is not None:
                    self._models.move_to_end(entry)
                    return cached
            model = _load(path, device)
            with self._lock:
                self._models[entry] = model
                evicted = [self._models.pop(k) for k in victims(self._models, device, self.size)]
                self._loading.pop(entry, None)
        if evicted and device.startswith("cuda"):
            del evicted
            gc.collect()  # in case anything cyclic still holds the evicted weights
            release_cuda_memory()
        return model


# The worker process's loaded models: each is loaded once per device.
MODELS = ModelCache(size=2)


def warm_up(
    model: Any,
    *,
    batch: int,
    imgsz: int | None,
    what: str,
    log: Callable[[str], None] | None = None,
) -> int:
    """On a GPU, runs a cached model once on ``batch`` blank images at the job's size
    (once per shape), so cuDNN picks its kernels and the allocator grows before real
    data arrives. Returns the batch to start with: smaller if ``batch`` did not fit."""
    rt = runtime(model)
    if rt is None or not rt.device.startswith("cuda"):
        return batch  # nothing to tune on the CPU, and a blank batch costs a real one
    size = image_size(model, imgsz)
    if (batch, size) in rt.warmed:
        return batch
    import numpy as np

    blank = [np.zeros((size, size, 3), dtype=np.uint8)] * batch

    def run(images: Sequence[Any]) -> list[list[Detection]]:
        return predict(model, images, conf=0.25, iou=0.7, imgsz=imgsz, device=rt.device)

    _, fits = run_in_batches(run, blank, batch, what=what, log=log)
    rt.warmed.add((batch, size))
    return fits


@dataclass(frozen=True)
class Detection:
    class_index: int  # the model's class index
    confidence: float
    x: float  # top-left, normalised
    y: float
    w: float
    h: float


def pin_thread(device: str) -> None:
    """Makes ``device`` this thread's current CUDA device. ultralytics does so only when a
    predictor is set up, in whichever thread that was; a worker's other slot threads
    would otherwise put index-less ``cuda`` tensors on GPU 0."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(torch.device(device))


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
    import numpy as np

    kwargs: dict[str, Any] = {"conf": conf, "iou": iou, "device": device, "verbose": False}
    if imgsz:
        kwargs["imgsz"] = imgsz
    rt = runtime(model)
    with rt.lock if rt is not None else contextlib.nullcontext():
        pin_thread(device)
        results = model.predict(list(images), **kwargs)
    out: list[list[Detection]] = []
    for result in results:
        detections: list[Detection] = []
        boxes = result.boxes
        if boxes is not None and len(boxes):
            # float32 whatever precision the model ran in; one copy to the host per image.
            data = boxes.data.float().cpu().numpy()  # x1 y1 x2 y2 [track] conf cls
            height, width = result.orig_shape
            scale = np.array([width, height, width, height], dtype=np.float32)
            for row in data:
                x1, y1, x2, y2 = (float(v) for v in row[:4] / scale)
                x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0)
                if x2 <= x1 or y2 <= y1:
                    continue
                detections.append(Detection(int(row[-1]), float(row[-2]), x1, y1, x2 - x1, y2 - y1))
        out.append(detections)
    return out
