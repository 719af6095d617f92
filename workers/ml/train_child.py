"""The training process a worker supervises: ``python -m workers.ml.train_child SPEC``.

It runs ultralytics training (or resumes it from the last checkpoint) and appends one
JSON line per event to the spec's events file: each finished epoch with its losses and
metrics, then ``done`` with the best weights. Ultralytics' own output goes to stdout.
Ultralytics saves ``last.pt`` after every epoch; the child then keeps a whole copy in
``resume-EEEE/``, the checkpoint a later attempt resumes from. It trains only while its
supervisor feeds its lease (stdin).

Every checkpoint (the base model, ``last.pt`` on resume, and whatever ultralytics loads
itself while training) is unpickled by the restricted loader of
workers/ml/checkpoints.py: a file on shared storage is not trusted because we wrote it.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any


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
    """Trains only while the supervisor feeds our stdin. A worker frozen by SIGSTOP or
    starved of CPU stops feeding it (and PDEATHSIG never fires for a frozen parent):
    stop well before the reconciler can give the job to another worker, so two
    processes never train the same job (server/training/tasks.py, ``lease_seconds``).
    EOF means the supervisor is gone."""
    if not seconds:
        return
    import select
    import threading

    def watch() -> None:
        fd = sys.stdin.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], seconds)
            if not ready or not os.read(fd, 4096):
                os._exit(LEASE_EXPIRED_EXIT)

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


def main(spec_path: str) -> int:
    _die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    _hold_lease(spec.get("lease_seconds"))
    events = open(spec["events"], "a", buffering=1)  # noqa: SIM115 - lives as long as we do

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    from workers.ml import checkpoints

    # Before ultralytics is imported: restricted mode and our torch.load.
    checkpoints.install()
    from ultralytics import YOLO
    from ultralytics.engine import trainer as trainer_module

    # The AMP self-test downloads reference weights; offline it would only fail. Modern
    # GPUs run AMP fine, so skip the test rather than reach for the network.
    trainer_module.check_amp = lambda model: next(model.parameters()).device.type == "cuda"

    reported: set[int] = set()

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

    def refuse(exc: Exception) -> int:
        emit({"type": "error", "message": str(exc)})
        return 2

    last = Path(spec["last"])
    if last.exists():
        try:
            checkpoint = checkpoints.load(last)
            model = checkpoints.load_yolo(last)
        except (ValueError, checkpoints.CheckpointRefused) as exc:
            return refuse(exc)
        if int(checkpoint.get("epoch", -1)) == -1:
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
        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
        emit({"type": "resume", "after_epoch": int(checkpoint.get("epoch", 0)) + 1})
        # The checkpoint names the folder it was trained in; this attempt has its own.
        model.train(resume=True, **({"save_dir": spec["save_dir"]} if "save_dir" in spec else {}))
    else:
        base = str(spec["base"])
        try:
            # A registered model's weights; or one of ultralytics' own configs by name.
            model = checkpoints.load_yolo(Path(base)) if base.endswith(".pt") else YOLO(base)
        except (ValueError, checkpoints.CheckpointRefused) as exc:
            return refuse(exc)
        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
        model.train(
            data=spec["data"],
            epochs=spec["epochs"],
            imgsz=spec["imgsz"],
            batch=spec["batch"],
            seed=spec["seed"],
            warmup_epochs=spec.get("warmup_epochs", 3.0),
            deterministic=True,
            project=spec["project"],
            name="train",
            exist_ok=True,
            plots=False,
            device=spec["device"],
            workers=spec["workers"],
            amp=spec["device"] != "cpu",
            verbose=False,
            patience=0,
        )
    trainer = model.trainer
    emit(
        {
            "type": "done",
            "best": str(trainer.best if Path(trainer.best).exists() else trainer.last),
            "metrics": _floats(trainer.metrics or {}),
            "parameters": int(sum(p.numel() for p in model.model.parameters())),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
