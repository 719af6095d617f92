"""The inference process of a worker slot: ``python -m workers.ml.inference_child``.

Started by workers/inference.py, which keeps it warm between jobs and stops it when
idle. It sees one device only (its slot's ``CUDA_VISIBLE_DEVICES``, or none for the
CPU), loads models through the restricted loader (workers/ml/yolo.py's cache), decodes
the images it is sent on a few threads as soon as they arrive, so decoding overlaps the
batch the model is running, and answers with normalised boxes. It touches no database:
the worker writes the results.

The pipe carries JSON messages (never pickles: what a model could make this process
say must not become code in the worker). From the worker:

- ``job``: ``{job, weights, sha, label, conf, iou, imgsz, batch, decode_threads, warm}``
  loads the model (cached) and, on a GPU, warms it up at the job's batch shape;
  answered by ``ready`` ``{job, device, half, batch, imgsz}`` or ``error``;
- ``batch``: ``{job, seq, paths}``, answered in order by ``result`` ``{job, seq, batch,
  images}``, each image ``null`` (unreadable) or ``{width, height, boxes}`` with boxes
  ``[class, confidence, x, y, w, h]``;
- ``end``: ``{job}`` drops whatever of that job is still queued, answered by ``ended``;
- ``stats``, answered by ``stats`` (memory, for tests and benches); ``exit``.

A job that fails says ``error`` ``{job, kind, message}`` once (``kind``: ``refused`` for
weights the loader refuses, ``oom`` for a batch of one that does not fit, ``failed``) and
its later batches are dropped. Progress and job logs (a halved batch) are ``log`` lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# A test and operations knob, read per job from the worker's environment and passed on:
# the GPU memory this process may reserve beyond what it holds once the model is loaded.
GPU_HEADROOM_ENV = "OCULAB_INFERENCE_GPU_HEADROOM_MB"
_MiB = 1 << 20
_DECODE_NICE = 10


@dataclass
class _Job:
    token: int
    spec: dict[str, Any]
    decoders: ThreadPoolExecutor
    model: Any = None
    batch: int = 1
    failed: bool = False
    ended: bool = False
    pending: list[list[Future[Any]]] = field(default_factory=list)


def _lower_priority() -> None:
    """Runs this (decode) thread at a low CPU priority: on the CPU it then takes mostly
    the cycles torch leaves idle (its single-threaded pre- and post-processing) instead
    of taking cores from the model. Not the lowest: on a busy machine other processes
    would starve it. Linux nice values are per thread."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _DECODE_NICE)


def _decode(path: str) -> Any:
    import cv2

    return cv2.imread(path, cv2.IMREAD_COLOR)


class Child:
    def __init__(self, inbox: Connection, outbox: Connection) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.work: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lock = threading.Lock()
        self.job: _Job | None = None

    # --- the reader thread: takes messages as they come, starts decoding at once -----

    def read(self) -> None:
        while True:
            try:
                message = json.loads(self.inbox.recv_bytes())
            except (EOFError, OSError):
                message = {"op": "exit"}  # the worker is gone
            op = message.get("op")
            if op == "job":
                spec = message
                on_gpu = bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
                decoders = ThreadPoolExecutor(
                    max_workers=max(1, int(spec.get("decode_threads") or 1)),
                    thread_name_prefix="decode",
                    initializer=None if on_gpu else _lower_priority,
                )
                with self.lock:
                    if self.job is not None:  # never ended: the worker moved on
                        self.job.decoders.shutdown(wait=False, cancel_futures=True)
                    self.job = _Job(int(spec["job"]), spec, decoders)
            elif op == "batch":
                with self.lock:
                    job = self.job
                    if job is not None and job.token == message.get("job") and not job.failed:
                        futures = [job.decoders.submit(_decode, p) for p in message["paths"]]
                        job.pending.append(futures)
                        message["futures"] = futures
            elif op == "end":
                with self.lock:
                    job = self.job
                    if job is not None and job.token == message.get("job"):
                        job.ended = True
                        for futures in job.pending:
                            for future in futures:
                                future.cancel()
            self.work.put(message)
            if op == "exit":
                return

    # --- the main thread: loads, runs, answers ----------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.send_bytes(json.dumps(message).encode())

    def serve(self) -> None:
        while True:
            message = self.work.get()
            op = message.get("op")
            if op == "exit":
                return
            with self.lock:
                job = self.job
            token = message.get("job")
            current = job is not None and job.token == token
            if op == "job" and current:
                assert job is not None
                self._start(job)
            elif op == "batch" and current:
                assert job is not None
                self._batch(job, message)
            elif op == "end":
                self._end(job if current else None, token)
            elif op == "stats":
                self.send({"op": "stats", **_stats()})

    def _fail(self, job: _Job, kind: str, message: str) -> None:
        job.failed = True
        self.send({"op": "error", "job": job.token, "kind": kind, "message": message[:2000]})

    def _start(self, job: _Job) -> None:
        from workers.ml import yolo

        spec = job.spec
        device = "cuda:0" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu"
        try:
            job.model = yolo.MODELS.get(Path(spec["weights"]), str(spec["sha"]), device)
        except ValueError as exc:  # refused by the restricted loader, or unreadable
            self._fail(job, "refused", f"the model could not be loaded: {exc}")
            return
        except yolo.GpuOutOfMemory as exc:
            self._fail(job, "oom", f"{spec['label']}: {exc}")
            return
        except Exception as exc:
            self._fail(job, "failed", f"the model could not be loaded: {_describe(exc)}")
            return
        _cap_gpu_memory(device, spec.get("gpu_headroom_mb"))
        size = yolo.image_size(job.model, spec.get("imgsz"))
        job.batch = int(spec["batch"])
        if spec.get("warm"):
            try:
                job.batch = yolo.warm_up(
                    job.model,
                    batch=job.batch,
                    imgsz=spec.get("imgsz"),
                    what=f"{spec['label']} at image size {size}",
                    log=lambda line: self.send({"op": "log", "job": job.token, "line": line}),
                )
            except yolo.GpuOutOfMemory as exc:
                self._fail(job, "oom", str(exc))
                return
            except Exception as exc:
                self._fail(job, "failed", _describe(exc))
                return
        ran_on, half = yolo.placement(job.model)
        self.send(
            {
                "op": "ready",
                "job": job.token,
                "device": ran_on,
                "half": half,
                "batch": job.batch,
                "imgsz": size,
            }
        )

    def _batch(self, job: _Job, message: dict[str, Any]) -> None:
        from workers.ml import yolo

        futures: list[Future[Any]] = message.get("futures", [])
        with self.lock:
            if futures in job.pending:
                job.pending.remove(futures)
        if job.failed or job.ended or job.model is None:
            return
        try:
            images = [_decoded(f, p) for f, p in zip(futures, message["paths"], strict=True)]
        except CancelledError:
            return  # the job ended while this batch waited for its images
        usable = [img for img in images if img is not None]
        spec = job.spec
        size = yolo.image_size(job.model, spec.get("imgsz"))

        def run(chunk: Any) -> list[list[yolo.Detection]]:
            return yolo.predict(
                job.model,
                chunk,
                conf=float(spec["conf"]),
                iou=float(spec["iou"]),
                imgsz=spec.get("imgsz"),
                device=yolo.placement(job.model)[0],
            )

        try:
            found, job.batch = yolo.run_in_batches(
                run,
                usable,
                job.batch,
                what=f"{spec['label']} at image size {size}",
                log=lambda line: self.send({"op": "log", "job": job.token, "line": line}),
            )
        except yolo.GpuOutOfMemory as exc:
            self._fail(job, "oom", str(exc))
            return
        except Exception as exc:
            self._fail(job, "failed", _describe(exc))
            return
        detections = iter(found)
        out: list[dict[str, Any] | None] = []
        for img in images:
            if img is None:
                out.append(None)
                continue
            boxes = [[d.class_index, d.confidence, d.x, d.y, d.w, d.h] for d in next(detections)]
            out.append({"width": int(img.shape[1]), "height": int(img.shape[0]), "boxes": boxes})
        self.send(
            {
                "op": "result",
                "job": job.token,
                "seq": message["seq"],
                "batch": job.batch,
                "images": out,
            }
        )

    def _end(self, job: _Job | None, token: Any) -> None:
        from workers.ml import yolo

        if job is not None:
            job.decoders.shutdown(wait=False, cancel_futures=True)
            with self.lock:
                if self.job is job:
                    self.job = None
        # The batches' activations would stay reserved by this process otherwise, out
        # of reach of a training child on the same GPU.
        yolo.release_cuda_memory()
        self.send({"op": "ended", "job": token})


def _decoded(future: Future[Any], path: str) -> Any:
    """The decoded image, or None for a file that cannot be read as one. One that no
    decoder has started yet is decoded here: the model would only wait for it, and a
    low-priority decoder may be starved by other processes."""
    if future.cancelled():  # the job ended
        raise CancelledError
    try:
        if future.cancel():
            return _decode(path)
        return future.result()
    except CancelledError:
        raise
    except Exception:
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().split("\n", 1)[0][:500]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _cap_gpu_memory(device: str, headroom_mb: Any) -> None:
    """Applies the headroom knob (or lifts an earlier job's cap)."""
    if not device.startswith("cuda"):
        return
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    if headroom_mb is None:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        return
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    allowed = torch.cuda.memory_reserved(0) + float(headroom_mb) * _MiB
    torch.cuda.set_per_process_memory_fraction(min(1.0, allowed / total), 0)


def _stats() -> dict[str, Any]:
    from workers.ml import yolo

    rss = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    out: dict[str, Any] = {"pid": os.getpid(), "rss": rss, "models": len(yolo.MODELS._models)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        out["cuda_reserved"] = int(torch.cuda.memory_reserved(0))
        out["cuda_allocated"] = int(torch.cuda.memory_allocated(0))
    return out


def main(argv: list[str]) -> int:
    inbox_fd, outbox_fd, data_dir, parent = int(argv[1]), int(argv[2]), Path(argv[3]), int(argv[4])
    from workers.ml import sandbox

    sandbox.die_with_parent(parent)
    inbox = Connection(inbox_fd, readable=True, writable=False)
    outbox = Connection(outbox_fd, readable=False, writable=True)
    from workers.ml import yolo

    yolo.configure_offline(data_dir)
    child = Child(inbox, outbox)
    reader = threading.Thread(target=child.read, name="inference-reader", daemon=True)
    reader.start()
    try:
        child.serve()
    except (BrokenPipeError, EOFError):
        return 0  # the worker is gone
    return 0


if __name__ == "__main__":
    # Whatever the libraries print goes to stderr (the worker's log), never the pipe.
    sys.exit(main(sys.argv))
