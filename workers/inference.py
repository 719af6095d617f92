"""Inference for jobs, in child processes: the worker side of workers/ml/inference_child.py.

A worker (in standalone, the API process) never loads torch, ultralytics or OpenCV:
auto-label and predict hand their images to an inference process and write what comes
back. There is one such process per job running at once on a device, so one per GPU
slot and at most one per CPU slot; each is started on the first job that needs it
(a fresh interpreter, never a fork of this threaded process), sees only its slot's
device (``CUDA_VISIBLE_DEVICES`` by UUID, as training children do), keeps its models
and warmed-up batch shapes between jobs, and exits once idle for
``inference_idle_seconds``, handing its memory back.

A process that dies (killed for memory, a crash) fails what it was running with
``ChildDied``; one found dead when a job starts is replaced at once. A worker thread
waiting for its child wakes every half second, so a worker shutting down or a job's
time limit (raised in that thread) always gets through.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from workers.ml.inference_child import GPU_HEADROOM_ENV

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[1]
# How often a waiting worker thread wakes: to see the child die, and to let the job's
# check end the wait (a worker stopping, a time limit: JobContext.check_interrupted).
_POLL_SECONDS = 0.5
# A child that does not finish what it was asked within this long after a job ended
# (an abandoned batch still running) is stopped rather than waited for.
_DRAIN_SECONDS = 120.0
_STOP_SECONDS = 10.0
_tokens = itertools.count(1)


class InferenceError(Exception):
    """The job cannot go on; the message says why, for the user."""


class ModelRefused(InferenceError):
    """The weights could not be loaded (refused by the restricted loader, unreadable)."""


class OutOfGpuMemory(InferenceError):
    """The GPU ran out of memory even for one image (or for the model itself)."""


class ChildDied(InferenceError):
    """The inference process died: killed for memory, crashed."""


@dataclass(frozen=True)
class Request:
    """One job's model and settings."""

    weights: Path
    sha: str
    label: str  # how messages name the model, e.g. "model 7"
    conf: float
    iou: float
    imgsz: int | None
    batch: int
    decode_threads: int
    warm: bool  # warm up at the batch shape first (long jobs; not worth it for predict)


@dataclass(frozen=True)
class Ready:
    device: str  # in the child's numbering: "cpu" or "cuda:0"
    half: bool
    batch: int
    imgsz: int


@dataclass(frozen=True)
class Box:
    class_index: int
    confidence: float
    x: float  # top-left, normalised
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Decoded:
    width: int
    height: int
    boxes: list[Box]


@dataclass(frozen=True)
class BatchResult:
    images: list[Decoded | None]  # None: the file could not be decoded
    batch: int  # the batch the model runs at now (halved when the GPU ran out of memory)


def child_died_reason(code: int | None) -> str:
    if code is None:
        return "the inference process stopped answering"
    if code < 0:
        sig = -code
        if sig == signal.SIGKILL:
            return (
                "the inference process was killed (SIGKILL), e.g. by the kernel for "
                "running out of memory"
            )
        with contextlib.suppress(ValueError):
            return f"the inference process crashed ({signal.Signals(sig).name})"
        return f"the inference process crashed (signal {sig})"
    return f"the inference process exited unexpectedly (exit code {code})"


class Child:
    """One inference process and its pipes; used by one job at a time."""

    def __init__(self, key: tuple[str, str], env: dict[str, str], data_dir: Path) -> None:
        self.key = key
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own module, our own arguments
                [
                    sys.executable,
                    "-m",
                    "workers.ml.inference_child",
                    str(to_child_r),
                    str(from_child_w),
                    str(data_dir),
                    str(os.getpid()),
                ],
                env=env,
                cwd=_REPO_ROOT,
                stdin=subprocess.DEVNULL,
                # What the libraries print goes to this process's stderr (its log),
                # never into the pipe.
                stdout=2,
                pass_fds=(to_child_r, from_child_w),
                # Not in the terminal's process group: a Ctrl-C reaches the worker, which
                # stops its jobs; the child dies with it.
                start_new_session=True,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.outbox = Connection(to_child_w, readable=False, writable=True)
        self.inbox = Connection(from_child_r, readable=True, writable=False)
        self.last_used = time.monotonic()
        self.idle_seconds = 0.0
        self.models: set[str] = set()
        self.open_job: int | None = None  # ended, but its "ended" not read yet

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.outbox.send_bytes(json.dumps(message).encode())
        except OSError as exc:
            raise ChildDied(self._death()) from exc

    def receive(self, timeout: float | None = None, check: Callable[[], None] | None = None) -> Any:
        """The next message; ChildDied when the process is gone; None after ``timeout``
        seconds. ``check`` is called at every wake and may raise to end the wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if check is not None:
                check()
            try:
                if self.inbox.poll(_POLL_SECONDS):
                    return json.loads(self.inbox.recv_bytes())
            except (EOFError, OSError) as exc:
                raise ChildDied(self._death()) from exc
            if not self.alive():
                # Whatever it sent before dying is still in the pipe.
                with contextlib.suppress(EOFError, OSError):
                    if self.inbox.poll(0):
                        return json.loads(self.inbox.recv_bytes())
                raise ChildDied(self._death())
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _death(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return child_died_reason(code)

    def drain(self) -> bool:
        """Reads what an ended job left in the pipe, up to its ``ended``; False if the
        child is dead or stuck (then it is stopped)."""
        if self.open_job is None:
            return True
        deadline = time.monotonic() + _DRAIN_SECONDS
        try:
            while time.monotonic() < deadline:
                message = self.receive(timeout=max(0.0, deadline - time.monotonic()))
                if message is None:
                    break
                if message.get("op") == "ended" and message.get("job") == self.open_job:
                    self.open_job = None
                    return True
        except ChildDied:
            return False
        self.stop()
        return False

    def stats(self) -> dict[str, Any]:
        if not self.drain():
            raise ChildDied("the inference process is gone")
        self.send({"op": "stats"})
        while True:
            message = self.receive(timeout=30)
            if message is None:
                raise ChildDied("the inference process stopped answering")
            if message.get("op") == "stats":
                return dict(message)

    def stop(self) -> None:
        with contextlib.suppress(ChildDied, OSError):
            self.outbox.send_bytes(json.dumps({"op": "exit"}).encode())
        try:
            self.process.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for conn in (self.outbox, self.inbox):
            with contextlib.suppress(OSError):
                conn.close()


class Session:
    """One job's use of a child: batches go out ahead, results come back in order."""

    def __init__(
        self,
        child: Child,
        request: Request,
        on_log: Callable[[str], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self.child = child
        self.request = request
        self.check = check
        self.token = next(_tokens)
        self._seq = itertools.count()
        self.on_log = on_log
        self.ready: Ready | None = None

    def start(self) -> Ready:
        r = self.request
        headroom = os.environ.get(GPU_HEADROOM_ENV)
        self.child.send(
            {
                "op": "job",
                "job": self.token,
                "weights": str(r.weights),
                "sha": r.sha,
                "label": r.label,
                "conf": r.conf,
                "iou": r.iou,
                "imgsz": r.imgsz,
                "batch": r.batch,
                "decode_threads": r.decode_threads,
                "warm": r.warm,
                "gpu_headroom_mb": float(headroom) if headroom else None,
            }
        )
        self.child.open_job = self.token
        message = self._next("ready")
        self.child.models.add(r.sha)
        self.ready = Ready(
            device=str(message["device"]),
            half=bool(message["half"]),
            batch=int(message["batch"]),
            imgsz=int(message["imgsz"]),
        )
        return self.ready

    def submit(self, paths: list[Path]) -> int:
        seq = next(self._seq)
        self.child.send(
            {"op": "batch", "job": self.token, "seq": seq, "paths": [str(p) for p in paths]}
        )
        return seq

    def result(self, seq: int) -> BatchResult:
        message = self._next("result")
        if message.get("seq") != seq:
            raise InferenceError(f"the inference process answered batch {message.get('seq')}")
        images: list[Decoded | None] = []
        for item in message["images"]:
            if item is None:
                images.append(None)
                continue
            boxes = [
                Box(int(c), float(conf), float(x), float(y), float(w), float(h))
                for c, conf, x, y, w, h in item["boxes"]
            ]
            images.append(Decoded(int(item["width"]), int(item["height"]), boxes))
        return BatchResult(images, int(message["batch"]))

    def _next(self, op: str) -> dict[str, Any]:
        while True:
            message = self.child.receive(check=self.check)
            assert message is not None  # no timeout
            if message.get("job") != self.token:
                continue  # an earlier job's leftovers
            kind = message.get("op")
            if kind == "log":
                if self.on_log is not None:
                    self.on_log(str(message.get("line", "")))
                continue
            if kind == "error":
                text = str(message.get("message", "inference failed"))
                if message.get("kind") == "refused":
                    raise ModelRefused(text)
                if message.get("kind") == "oom":
                    raise OutOfGpuMemory(text)
                raise InferenceError(text)
            if kind == op:
                return dict(message)

    def end(self) -> None:
        """Drops whatever of this job the child still has queued (a cancel, a failure)."""
        with contextlib.suppress(ChildDied):
            self.child.send({"op": "end", "job": self.token})


class Children:
    """The inference processes of this worker process, per (data dir, device)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None
        self._idle: dict[tuple[str, str], list[Child]] = {}
        self._busy: set[Child] = set()
        self._visible: dict[int, str] = {}
        self._atexit = False

    def visible_devices(self, gpu_index: int | None) -> str:
        """The slot's ``CUDA_VISIBLE_DEVICES``, found once per slot (without NVML the
        lookup asks a torch child)."""
        if gpu_index is None:
            return ""
        with self._lock:
            known = self._visible.get(gpu_index)
        if known is None:
            from workers import gpus

            try:
                known = gpus.visible_devices_for(gpu_index)
            except gpus.GpuUnusable as exc:
                raise InferenceError(str(exc)) from exc
            with self._lock:
                self._visible[gpu_index] = known
        return known

    @contextlib.contextmanager
    def session(
        self,
        data_dir: Path,
        gpu_index: int | None,
        request: Request,
        idle_seconds: float,
        *,
        on_log: Callable[[str], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> Iterator[Session]:
        """A started session on a child for ``gpu_index`` (None: the CPU), warm if one
        is idle, preferably one that has the model loaded. ``check`` runs while the job
        waits for the child, and may raise to end the wait (``Child.receive``)."""
        visible = self.visible_devices(gpu_index)
        key = (str(data_dir), visible)
        child = self._take(key, request.sha)
        for fresh in (child is None, True):
            if child is None:
                child = self._start(key, data_dir, visible)
            session = Session(child, request, on_log, check)
            try:
                session.start()
            except ChildDied:
                self._give_back(child, idle_seconds)
                if fresh:
                    raise
                child = None  # it died while idle (killed for memory?): start a fresh one
                continue
            except BaseException:
                session.end()
                self._give_back(child, idle_seconds)
                raise
            break
        try:
            yield session
        finally:
            session.end()
            self._give_back(session.child, idle_seconds)

    def _start(self, key: tuple[str, str], data_dir: Path, visible: str) -> Child:
        child = Child(key, _child_env(data_dir, visible), data_dir)
        with self._lock:
            self._busy.add(child)
            if not self._atexit:
                atexit.register(self.stop_all)
                self._atexit = True
        return child

    def _take(self, key: tuple[str, str], sha: str) -> Child | None:
        while True:
            with self._lock:
                idle = self._idle.get(key, [])
                if not idle:
                    return None
                warm = [c for c in idle if sha in c.models]
                child = (warm or idle)[-1]
                idle.remove(child)
                self._busy.add(child)
            if child.alive() and child.drain():
                return child
            with self._lock:
                self._busy.discard(child)
            child.stop()

    def _give_back(self, child: Child, idle_seconds: float) -> None:
        child.last_used = time.monotonic()
        child.idle_seconds = idle_seconds
        with self._lock:
            self._busy.discard(child)
            alive = child.alive()
            if alive:
                self._idle.setdefault(child.key, []).append(child)
                if self._reaper is None:
                    self._reaper = threading.Thread(
                        target=self._reap, name="inference-reaper", daemon=True
                    )
                    self._reaper.start()
                self._changed.notify_all()
        if not alive:
            child.stop()

    def _reap(self) -> None:
        """Stops each idle child once idle for its ``idle_seconds`` (or dead); ends when
        no child is idle."""
        while True:
            stale: list[Child] = []
            with self._lock:
                idle = [c for i in self._idle.values() for c in i]
                if not idle:
                    self._reaper = None
                    return
                now = time.monotonic()
                for child in idle:
                    if now >= child.last_used + child.idle_seconds or not child.alive():
                        self._idle[child.key].remove(child)
                        stale.append(child)
                if not stale:
                    soonest = min(c.last_used + c.idle_seconds for c in idle)
                    self._changed.wait(timeout=max(0.01, soonest - now))
                    continue
            for child in stale:
                log.info("inference process %s idle; stopping it", child.pid)
                child.stop()

    def pids(self) -> list[int]:
        with self._lock:
            return [c.pid for c in [*self._busy, *(c for i in self._idle.values() for c in i)]]

    def stats(self) -> list[dict[str, Any]]:
        """Memory of each idle child (busy ones are not disturbed)."""
        with self._lock:
            idle = [c for i in self._idle.values() for c in i]
            for child in idle:
                self._idle[child.key].remove(child)
                self._busy.add(child)
        out = []
        try:
            for child in idle:
                with contextlib.suppress(ChildDied):
                    out.append({**child.stats(), "device": child.key[1] or "cpu"})
        finally:
            with self._lock:
                for child in idle:
                    self._busy.discard(child)
                    if child.alive():
                        self._idle.setdefault(child.key, []).append(child)
            for child in idle:
                if not child.alive():
                    child.stop()
        return out

    def stop_all(self) -> None:
        with self._lock:
            idle = [c for i in self._idle.values() for c in i]
            self._idle.clear()
        for child in idle:
            child.stop()


def _child_env(data_dir: Path, visible: str) -> dict[str, str]:
    from workers.ml import yolo

    # No OCULAB_ variables: the child needs neither the database nor the secret key.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(yolo.offline_env(data_dir))
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = visible
    env["PYTHONUNBUFFERED"] = "1"
    return env


# This worker process's inference processes.
CHILDREN = Children()


def device_name(ready: Ready, gpu_index: int | None) -> str:
    """Where the job ran, in this worker's numbering: the child sees its slot's GPU as
    ``cuda:0``, which is ``cuda:<slot>`` here."""
    if ready.device.startswith("cuda") and gpu_index is not None:
        return f"cuda:{gpu_index}"
    return ready.device
