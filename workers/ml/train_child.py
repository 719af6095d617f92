"""The training process a worker supervises: ``python -m workers.ml.train_child SPEC``.

It runs ultralytics training (or resumes it from the last checkpoint) and appends one
JSON line per event to the spec's events file: each finished epoch with its losses and
metrics, then ``done`` with the best weights. Ultralytics' own output goes to stdout.
Ultralytics saves ``last.pt`` after every epoch; the child then keeps a whole copy in
``resume-EEEE/``, the checkpoint a later attempt resumes from. It trains only while its
supervisor keeps extending its lease (stdin).

Every checkpoint (the base model, ``last.pt`` on resume, and whatever ultralytics loads
itself while training) is unpickled by the restricted loader of
workers/ml/checkpoints.py: a file on shared storage is not trusted because we wrote it.

Once ultralytics has put the model on its device, the child reports what it really
trains on (a ``device`` event: ``CUDA_VISIBLE_DEVICES``, the device's name and UUID, the
model's device and dtype, AMP, batch, loader workers), so that a job on a GPU slot can
be shown to have used that GPU. A resumed run trains on this attempt's device, batch and
loader workers, not the checkpoint's. Running out of memory ends with an ``error`` event
that says so (device, batch, image size), and nothing here tries the network.

``OCULAB_CUDA_MEMORY_FRACTION`` (a test and operations knob, passed through by the
supervisor): caps this process's share of its GPU's memory
(``torch.cuda.set_per_process_memory_fraction``), e.g. to check how a job that runs out
of memory ends, or to leave room on a GPU shared with other work.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

MEMORY_FRACTION_ENV = "OCULAB_CUDA_MEMORY_FRACTION"
_GIB = 1 << 30


def _floats(values: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[str(key)] = number
    return out


def _die_with_parent() -> None:
    """If the worker is SIGKILLed, this process must not train on as an orphan and race
    the next attempt for the checkpoint (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        parent = int(sys.argv[2]) if len(sys.argv) > 2 else None
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != parent:
            sys.exit(3)  # the parent died before we could ask to follow it


def _hold_lease(seconds: float | None) -> None:
    """Trains only until the deadline its supervisor last sent on stdin (one line each, on
    the ``time.monotonic()`` clock of this host), counted from the attempt's newest
    heartbeat. A worker frozen by SIGSTOP, starved or stuck stops extending it (and
    PDEATHSIG never fires for a frozen parent): stop before the reconciler can give the
    job to another worker, so two processes never train the same job
    (server/training/tasks.py, ``_Lease``). EOF means the supervisor is gone. Until the
    first line, ``seconds`` from now."""
    if not seconds:
        return
    import select
    import threading
    import time

    def watch() -> None:
        fd = sys.stdin.fileno()
        deadline = time.monotonic() + seconds
        pending = b""
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                if time.monotonic() >= deadline:
                    os._exit(LEASE_EXPIRED_EXIT)
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                os._exit(LEASE_EXPIRED_EXIT)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                try:
                    deadline = float(line)
                except ValueError:
                    continue

    threading.Thread(target=watch, name="lease", daemon=True).start()


def _keep_resume(trainer: Any, epoch: int, folder: Path) -> None:
    """Copies this epoch's checkpoint to ``resume-EEEE/`` in one rename. Ultralytics
    rewrites last.pt in place, so a process stopped mid-write leaves it torn; the next
    attempt resumes from the newest folder here, which is always whole. Runs after the
    epoch's event is written: a kept checkpoint is never ahead of the reported epochs."""
    import shutil

    last, best = Path(trainer.last), Path(trainer.best)
    if not last.is_file():
        return
    previous = sorted(folder.glob("resume-[0-9]*"))
    tmp = folder / f".resume-{epoch:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copyfile(last, tmp / "last.pt")
    kept_best = previous[-1] / "best.pt" if previous else None
    if best.is_file() and (trainer.best_fitness == trainer.fitness or kept_best is None):
        shutil.copyfile(best, tmp / "best.pt")  # best.pt was (re)written this epoch
    elif kept_best is not None and kept_best.is_file():
        try:
            os.link(kept_best, tmp / "best.pt")  # our own copy, never rewritten
        except OSError:
            shutil.copyfile(kept_best, tmp / "best.pt")
    tmp.rename(folder / f"resume-{epoch:04d}")
    for old in previous:
        shutil.rmtree(old, ignore_errors=True)


LEASE_EXPIRED_EXIT = 75  # server/training/tasks.py re-queues the job on this status


def oom_message(
    gpu: bool, name: str | None, memory_bytes: int | None, batch: int, requested: int, imgsz: int
) -> str:
    """What ran out and what to change, for the job's error."""
    where = "the GPU" if gpu else "the CPU"
    device = ""
    if name and memory_bytes:
        device = f" ({name}, {memory_bytes / _GIB:.3g} GiB)"
    elif name:
        device = f" ({name})"
    lowered = f" (lowered from {requested})" if requested > 0 and batch != requested else ""
    return (
        f"{where} ran out of memory{device} at batch {batch}{lowered}, image size {imgsz}: "
        "lower the batch or the image size"
    )


def _memory_fraction() -> float | None:
    value = os.environ.get(MEMORY_FRACTION_ENV, "").strip()
    if not value:
        return None
    fraction = float(value)
    if not 0 < fraction <= 1:
        raise ValueError(f"{MEMORY_FRACTION_ENV} must be in (0, 1], not {value}")
    return fraction


def _cap_memory(fraction: float | None) -> None:
    import torch

    if fraction is not None and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction, 0)


def _usable_memory(device: Any, fraction: float | None) -> tuple[str | None, int | None]:
    """The device's name and the memory this process may use on it (None: unknown)."""
    import torch

    if getattr(device, "type", "cpu") != "cuda":
        return None, None
    try:
        props = torch.cuda.get_device_properties(device)
    except Exception:  # only for a message: a broken CUDA context tells us nothing more
        return None, None
    return str(props.name), int(props.total_memory * (fraction or 1.0))


def _device_event(trainer: Any) -> dict[str, Any]:
    """What the trainer really trains on, read back from torch once the model is there."""
    import torch

    parameter = next(trainer.model.parameters())
    cuda = trainer.device.type == "cuda"
    props = torch.cuda.get_device_properties(trainer.device) if cuda else None
    loader = getattr(trainer, "train_loader", None)
    return {
        "type": "device",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_count": torch.cuda.device_count(),
        "device": str(trainer.device),
        "uuid": str(props.uuid) if props is not None else None,
        "name": str(props.name) if props is not None else "cpu",
        "memory_bytes": int(props.total_memory) if props is not None else None,
        "model_device": str(parameter.device),
        "dtype": str(parameter.dtype).removeprefix("torch."),
        "amp": bool(trainer.amp),
        "batch": int(trainer.batch_size),
        "workers": int(loader.num_workers) if loader is not None else int(trainer.args.workers),
        "imgsz": int(trainer.args.imgsz),
        "deterministic": bool(trainer.args.deterministic),
    }


def _local_font(font: str = "Arial.ttf") -> Path | str | None:
    """ultralytics' check_font without its download: a font already in its config dir or
    known to matplotlib, else None (its callers then draw with PIL's default font)."""
    from ultralytics.utils import USER_CONFIG_DIR

    name = Path(font).name
    local = Path(USER_CONFIG_DIR) / name
    if local.exists():
        return local
    try:
        from matplotlib import font_manager
    except ImportError:
        return None
    for entry in font_manager.fontManager.ttflist:
        if font in entry.fname and os.path.exists(entry.fname):
            return str(entry.fname)
    return None


def _local_only_download(url: Any = "", *args: Any, **kwargs: Any) -> Path:
    """ultralytics' safe_download without the network: a local file is itself (as there),
    anything else is missing, as it would be on an air-gapped network."""
    text = str(url)
    if "://" not in text and Path(text).is_file():
        return Path(text)
    raise ConnectionError(f"{text} is not available here, and training never downloads")


def _no_release_assets(*args: Any, **kwargs: Any) -> tuple[str, list[str]]:
    return "", []  # what ultralytics answers itself when GitHub cannot be reached


def _replace_everywhere(original: Callable[..., Any], replacement: Callable[..., Any]) -> None:
    """Rebinds ``original`` in every loaded ultralytics module that imported it by name."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("ultralytics") or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            if value is original:
                setattr(module, attribute, replacement)


def _offline() -> None:
    """Nothing in this process may try the network, YOLO_OFFLINE or not: ultralytics'
    check_font (every dataset check) asks its server whether a font exists, and its
    download helpers would be tried for anything missing. Patched where imported."""
    # Every module the training path imports, so that their by-name imports are rebound.
    import ultralytics.data.utils
    import ultralytics.engine.model
    import ultralytics.engine.trainer
    import ultralytics.models.yolo.detect
    import ultralytics.utils.plotting  # noqa: F401
    from ultralytics.utils import checks, downloads

    _replace_everywhere(checks.check_font, _local_font)
    _replace_everywhere(checks.check_pip_update_available, lambda: False)
    # Every download (attempt_download_asset, download, check_file...) ends in these.
    _replace_everywhere(downloads.safe_download, _local_only_download)
    _replace_everywhere(downloads.get_github_assets, _no_release_assets)
    original_is_url = downloads.is_url

    def is_url(url: Any, check: bool = False) -> bool:
        # Whether a string is a URL, never whether it answers.
        return bool(original_is_url(url, check=False)) and not check

    _replace_everywhere(original_is_url, is_url)


def _resume_on_this_attempt(overrides: dict[str, Any]) -> None:
    """ultralytics resumes with the checkpoint's arguments, device, batch and loader
    workers included (a run started on another GPU slot, or on a GPU and resumed on a
    CPU slot, would fail). This attempt's values replace them once the checkpoint's are
    read, before the trainer picks its device, seeds and AMP."""
    from ultralytics.engine import trainer as trainer_module

    base = trainer_module.BaseTrainer
    original = base.check_resume

    def check_resume(self: Any, given: dict[str, Any]) -> None:
        original(self, given)
        if self.resume:
            for key, value in overrides.items():
                setattr(self.args, key, value)

    base.check_resume = check_resume


def main(spec_path: str) -> int:
    _die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    _hold_lease(spec.get("lease_seconds"))
    events = open(spec["events"], "a", buffering=1)  # noqa: SIM115 - lives as long as we do

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    def refuse(exc: Exception) -> int:
        emit({"type": "error", "message": str(exc)})
        return 2

    try:
        fraction = _memory_fraction()
    except ValueError as exc:
        return refuse(exc)
    from workers.ml import checkpoints

    # Before ultralytics is imported: restricted mode and our torch.load.
    checkpoints.install()
    _cap_memory(fraction)
    from ultralytics.engine import trainer as trainer_module

    _offline()
    # The AMP self-test downloads reference weights; offline it would only fail. Modern
    # GPUs run AMP fine, so skip the test rather than reach for the network.
    trainer_module.check_amp = lambda model: next(model.parameters()).device.type == "cuda"

    last = Path(spec["last"])
    try:
        checkpoint = checkpoints.load(last) if last.exists() else None
        model = _load_model(spec, last if checkpoint is not None else None)
    except (ValueError, checkpoints.CheckpointRefused) as exc:
        return refuse(exc)
    if checkpoint is not None and int(checkpoint.get("epoch", -1)) == -1:
        # The previous attempt finished training but died before reporting it.
        best = last.with_name("best.pt")
        emit(
            {
                "type": "done",
                "best": str(best if best.exists() else last),
                "metrics": {},
                "resumed": True,
            }
        )
        return 0
    for event, callback in _callbacks(spec, emit).items():
        model.add_callback(event, callback)
    try:
        if checkpoint is not None:
            emit({"type": "resume", "after_epoch": int(checkpoint.get("epoch", 0)) + 1})
            _resume(model, spec)
        else:
            _train(model, spec)
    except Exception as exc:
        from workers.ml.yolo import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        emit({"type": "error", "message": _oom_text(model, spec, fraction), "out_of_memory": True})
        raise  # its traceback goes to train.log, the supervisor's job log
    trainer = model.trainer
    emit(
        {
            "type": "done",
            "best": str(trainer.best if Path(trainer.best).exists() else trainer.last),
            "metrics": _floats(trainer.metrics or {}),
            "parameters": int(sum(p.numel() for p in model.model.parameters())),
            "batch": int(trainer.batch_size),
        }
    )
    return 0


def _load_model(spec: dict[str, Any], last: Path | None) -> Any:
    from ultralytics import YOLO

    from workers.ml import checkpoints

    if last is not None:
        return checkpoints.load_yolo(last)
    base = str(spec["base"])
    # A registered model's weights; or one of ultralytics' own configs by name.
    return checkpoints.load_yolo(Path(base)) if base.endswith(".pt") else YOLO(base)


def _callbacks(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    reported: set[int] = set()
    batch: list[int] = []

    def on_train_start(trainer: Any) -> None:
        emit(_device_event(trainer))
        batch.append(int(trainer.batch_size))

    def on_train_epoch_start(trainer: Any) -> None:
        # ultralytics restarts the first epoch with half the batch after an OOM.
        if batch and int(trainer.batch_size) != batch[-1]:
            emit({"type": "batch", "batch": int(trainer.batch_size), "was": batch[-1]})
            batch.append(int(trainer.batch_size))

    def on_fit_epoch_end(trainer: Any) -> None:
        epoch = int(trainer.epoch) + 1
        # The final validation of best.pt fires this callback again: that is "done".
        if epoch > int(trainer.epochs) or epoch in reported:
            return
        reported.add(epoch)
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        emit(
            {
                "type": "epoch",
                "epoch": epoch,
                "epochs": int(trainer.epochs),
                "metrics": _floats({**losses, **(trainer.metrics or {})}),
                "fitness": float(trainer.fitness or 0.0),
            }
        )
        if spec.get("resume_dir"):
            _keep_resume(trainer, epoch, Path(spec["resume_dir"]))

    return {
        "on_train_start": on_train_start,
        "on_train_epoch_start": on_train_epoch_start,
        "on_fit_epoch_end": on_fit_epoch_end,
    }


def _hardware_args(spec: dict[str, Any]) -> dict[str, Any]:
    """This attempt's own choices, which a resumed run takes over the checkpoint's."""
    return {
        "device": spec["device"],
        "batch": spec["batch"],
        "workers": spec["workers"],
        "amp": spec["device"] != "cpu",
        "deterministic": bool(spec.get("deterministic", True)),
    }


def _resume(model: Any, spec: dict[str, Any]) -> None:
    _resume_on_this_attempt(_hardware_args(spec))
    # The checkpoint names the folder it was trained in; this attempt has its own.
    model.train(resume=True, **({"save_dir": spec["save_dir"]} if "save_dir" in spec else {}))


def _train(model: Any, spec: dict[str, Any]) -> None:
    model.train(
        data=spec["data"],
        epochs=spec["epochs"],
        imgsz=spec["imgsz"],
        seed=spec["seed"],
        warmup_epochs=spec.get("warmup_epochs", 3.0),
        project=spec["project"],
        name="train",
        exist_ok=True,
        plots=False,
        verbose=False,
        patience=0,
        **_hardware_args(spec),
    )


def _oom_text(model: Any, spec: dict[str, Any], fraction: float | None) -> str:
    trainer = getattr(model, "trainer", None)
    requested = int(spec["batch"])
    if trainer is None:  # out of memory before the trainer was built
        gpu = spec["device"] != "cpu"
        return oom_message(gpu, None, None, requested, requested, int(spec["imgsz"]))
    name, memory = _usable_memory(trainer.device, fraction)
    return oom_message(
        trainer.device.type != "cpu",
        name,
        memory,
        int(trainer.batch_size),
        requested,
        int(trainer.args.imgsz),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
