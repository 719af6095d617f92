"""The training process a worker supervises: ``python -m workers.ml.train_child SPEC``.

It runs ultralytics training (or resumes it from the last checkpoint) and appends one
JSON line per event to the spec's events file: each finished epoch with its losses and
metrics, then ``done`` with the best weights. Ultralytics' own output goes to stdout.
Ultralytics saves ``last.pt`` after every epoch, which is the checkpoint a redelivered
job resumes from.
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


def main(spec_path: str) -> int:
    _die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    events = open(spec["events"], "a", buffering=1)  # noqa: SIM115 - lives as long as we do

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    import torch
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

    last = Path(spec["last"])
    if last.exists():
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
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
        model = YOLO(str(last))
        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
        emit({"type": "resume", "after_epoch": int(checkpoint.get("epoch", 0)) + 1})
        model.train(resume=True)
    else:
        model = YOLO(spec["base"])
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
