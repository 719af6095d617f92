"""Decodes uploaded images in child processes, so validation uses every CPU the server
may use while the API process keeps receiving, hashing and writing rows.

Two pools per process, each started on first use with the ``spawn`` context (a fork of
a threaded server is unsafe); their children run Pillow and ``server.images.processing``
and nothing else: not the parent's ``__main__`` (see ``_BareSpawnContext``):

- the decode pool, sized to the usable CPUs (``workers.cpus.usable``, at most 8),
  validates the files of a request while the request waits. A child that dies (a decoder crash, the
  OOM killer) breaks the pool: the files it held are checked again one at a time in a
  fresh pool, so only a file that kills its decoder on its own is rejected for it;
- the thumbnail pool, as many children at the lowest CPU priority, renders the
  thumbnails of new blobs after the response: it takes only CPU time nothing else
  wants. Until it gets to one, the thumbnail endpoint renders it on demand.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import popen_spawn_posix
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

from server.images.processing import (
    Check,
    Checked,
    RejectedImage,
    check_files,
    render_thumbnails,
)
from workers.cpus import usable

log = logging.getLogger(__name__)

# Files per task: few enough that decoding starts while a request is still arriving
# and the last task of a request is short, enough to amortise the trip to a child.
CHUNK = 8

# Decoding at the smallest DCT scale takes about 0.5 ms per photo-sized JPEG: eight
# children outrun any request stream, and each costs some 60 MB.
MAX_DECODERS = 8
_PARENT_POLL_SECONDS = 1.0


def _one_per_cpu() -> int:
    """Children in a pool: one per usable CPU, at most ``MAX_DECODERS``."""
    return min(usable(), MAX_DECODERS)


_MAIN_SWAP = threading.Lock()


class _BareSpawnProcess(SpawnProcess):
    """A spawn child that does not import the parent's ``__main__``.

    A spawn child normally re-imports the parent's main module first: the ``oculab``
    command's (60 MB a child for nothing), or a script without an ``if __name__ ==
    "__main__"`` guard, which would then run again in every child, up to starting its
    own pools from inside a child's start-up (a RuntimeError, and every upload rejected
    as a crashed decode). The children need only importable modules, so the main
    module is hidden for the milliseconds the start takes; no code of ours looks it up
    meanwhile."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        with _MAIN_SWAP:
            main = sys.modules["__main__"]
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                return popen_spawn_posix.Popen(process_obj)
            finally:
                sys.modules["__main__"] = main


class _BareSpawnContext(SpawnContext):
    Process = _BareSpawnProcess


class _LazyPool:
    """A spawn process pool started on first use and replaced once broken: ``get`` the
    current one, ``discard`` one found broken (a later ``get`` starts a fresh one)."""

    def __init__(self, workers: Callable[[], int], initializer: Callable[[int], None]) -> None:
        self._workers = workers
        self._initializer = initializer
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self._workers(),
                    mp_context=_BareSpawnContext(),
                    initializer=self._initializer,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def current(self) -> ProcessPoolExecutor | None:
        with self._lock:
            return self._pool

    def discard(self, pool: ProcessPoolExecutor, *, wait: bool = False) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=wait, cancel_futures=True)


def _outlive_no_parent(parent: int) -> None:
    """A child's watch on its parent: a pool's children wait on a pipe whose writing
    end they hold themselves, so a parent that dies without shutting the pool down
    (SIGKILL, or SIGTERM re-raised by uvicorn) would leave them running forever.

    Ctrl-C in a terminal signals the whole process group: the parent stops the pool
    itself as it shuts down, so a child ignores SIGINT instead of dying mid-task with
    a KeyboardInterrupt traceback (and breaking the pool for uploads still in flight)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _decode_child(parent: int) -> None:
    _outlive_no_parent(parent)


_decoders = _LazyPool(_one_per_cpu, _decode_child)
shared_pool = _decoders.get
_discard = _decoders.discard


def shutdown() -> None:
    """Stops the pools' children (tests, and a server that stops)."""
    _backlog.forget()
    for lazy in (_decoders, _thumbnails):
        pool = lazy.current()
        if pool is not None:
            lazy.discard(pool, wait=True)


# --- thumbnails ------------------------------------------------------------------------

THUMBNAIL_CHUNK = 16


def _thumbnail_child(parent: int) -> None:
    _outlive_no_parent(parent)
    os.nice(19)
    if hasattr(os, "SCHED_IDLE"):
        # Linux: run only when a CPU would otherwise idle, and yield it at once when
        # anything else wakes up (nice 19 alone still cost uploads about a third).
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


# One child per usable CPU, as for decoding: at the idle priority they take only CPU
# nothing else wants, so once an upload's responses are out every idle core renders
# (a 2,000-image upload's thumbnails were done 4 s after its last response with one).
_thumbnails = _LazyPool(_one_per_cpu, _thumbnail_child)
_thumbnail_pool = _thumbnails.get


# How long this process must have received no upload before queued thumbnails go to
# the pool. Measured on the 2-core bench machine (bench/ingest.py), children at the idle
# priority still cost a 2,000-image upload about a fifth of its time when they rendered
# during it (2.6 s against 2.1 s): on a VM an idle-priority task on one vCPU is still
# a busy vCPU to the host, and it shares caches and memory bandwidth. Held back, they
# start once the upload is over; until then the thumbnail endpoint renders any asked for.
QUIET_SECONDS = 0.5
# ... but no thumbnail waits longer than this: uploads that never stop (a camera's
# trickle, a week-long import by script) must not hold them, and their backlog, forever.
MAX_HOLD_SECONDS = 30.0


class _Backlog:
    """Thumbnails queued by ``render_later``, handed to the thumbnail pool by a thread of
    their own once no upload has been in flight in this process for ``quiet`` seconds,
    or once the oldest has waited ``max_hold``. Uploads say they are in flight with
    ``receiving``."""

    def __init__(self, quiet: float, max_hold: float) -> None:
        self.quiet = quiet
        self.max_hold = max_hold
        self._cond = threading.Condition()
        self._pending: list[tuple[str, list[tuple[str, str]], int]] = []
        self._oldest = math.inf  # when the oldest pending thumbnail was queued
        self._receiving = 0
        self._last_received = -math.inf
        self._thread: threading.Thread | None = None
        # Held while pending thumbnails go to the pool, so that ``drained`` never shuts
        # the pool down between a hand-over and its submit.
        self._handing = threading.Lock()

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        with self._cond:
            self._receiving += 1
        try:
            yield
        finally:
            with self._cond:
                self._receiving -= 1
                self._last_received = time.monotonic()
                self._cond.notify_all()

    def add(self, root: str, jobs: list[tuple[str, str]], size: int) -> None:
        with self._cond:
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.append((root, jobs, size))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="thumbnail-backlog", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _wait(self) -> float:
        """Seconds until the pending thumbnails may go (0: now); under the lock."""
        now = time.monotonic()
        held = max(0.0, self._oldest + self.max_hold - now)
        if self._receiving:
            return min(self.quiet, held)
        return min(max(0.0, self._last_received + self.quiet - now), held)

    def _run(self) -> None:
        while True:
            with self._cond:
                while (wait := self._wait() if self._pending else None) != 0:
                    self._cond.wait(wait)
            with self._handing:
                self._hand_over()

    def _hand_over(self) -> None:
        """Hands what is pending to the pool; under ``_handing``."""
        with self._cond:
            pending, self._pending = self._pending, []
        _submit_thumbnails(pending)

    @contextlib.contextmanager
    def drained(self) -> Iterator[None]:
        """Everything pending handed to the pool now, and no hand-over until the block
        ends."""
        with self._handing:
            self._hand_over()
            yield

    def forget(self) -> None:
        """Drops what is pending (the process stops: the endpoint renders them later)."""
        with self._handing, self._cond:
            self._pending = []


def _submit_thumbnails(pending: Sequence[tuple[str, list[tuple[str, str]], int]]) -> None:
    for root, jobs, size in pending:
        for start in range(0, len(jobs), THUMBNAIL_CHUNK):
            chunk = jobs[start : start + THUMBNAIL_CHUNK]
            pool = _thumbnail_pool()
            try:
                pool.submit(render_thumbnails, root, chunk, size)
            except (BrokenProcessPool, RuntimeError):
                _thumbnails.discard(pool)
                _thumbnail_pool().submit(render_thumbnails, root, chunk, size)


_backlog = _Backlog(QUIET_SECONDS, MAX_HOLD_SECONDS)
receiving = _backlog.receiving


def render_later(root: Path, blobs: Sequence[tuple[Path, Path]], size: int) -> None:
    """Queues the thumbnails of (blob, thumbnail) pairs for the thumbnail pool, which
    gets them once this process's uploads have gone quiet."""
    if blobs:
        _backlog.add(str(root), [(str(blob), str(target)) for blob, target in blobs], size)


def drain_thumbnails() -> None:
    """Waits until the thumbnails queued so far are on disk, for tests that look at the
    storage folders (the pool starts afresh on its next use)."""
    with _backlog.drained():
        pool = _thumbnails.current()
        if pool is not None:
            with contextlib.suppress(BrokenProcessPool, RuntimeError):
                pool.shutdown(wait=True)
            _thumbnails.discard(pool)


_CRASHED = RejectedImage("the image could not be decoded (its decoder crashed)")


class Checker:
    """The checks of one request: ``add`` as files arrive (decoding starts at once, in
    chunks), ``results`` once they are all in, one ``Checked`` per ``add``, in order."""

    def __init__(self) -> None:
        self._pending: list[Check] = []
        self._submitted: list[_Task] = []

    def add(self, check: Check) -> None:
        self._pending.append(check)
        if len(self._pending) >= CHUNK:
            self._submit()

    def _submit(self) -> None:
        if self._pending:
            self._submitted.append(_Task.start(self._pending))
            self._pending = []

    def results(self) -> list[Checked]:
        self._submit()
        outcomes: list[Checked] = []
        for task in self._submitted:
            try:
                outcomes.extend(task.future.result())
            except (BrokenProcessPool, CancelledError):
                _discard(task.pool)
                outcomes.extend(_alone(check) for check in task.checks)
        self._submitted = []
        return outcomes

    def abandon(self) -> None:
        """For a request that failed midway: what has not started is not decoded."""
        self._pending = []
        for task in self._submitted:
            task.future.cancel()
        self._submitted = []


@dataclass(frozen=True)
class _Task:
    checks: list[Check]
    pool: ProcessPoolExecutor
    future: Future[list[Checked]]

    @classmethod
    def start(cls, checks: list[Check]) -> _Task:
        pool = shared_pool()
        try:
            return cls(checks, pool, pool.submit(check_files, checks))
        except (BrokenProcessPool, RuntimeError):
            # Broken (or shut down) since it was last used: a fresh pool takes it.
            _discard(pool)
            pool = shared_pool()
            return cls(checks, pool, pool.submit(check_files, checks))


def _alone(check: Check) -> Checked:
    """Re-checks one file of a chunk whose child died, alone in a fresh child: only the
    file that kills its decoder by itself is rejected for it."""
    for _ in range(2):
        pool = shared_pool()
        try:
            future = pool.submit(check_files, [check])
        except (BrokenProcessPool, RuntimeError):
            _discard(pool)
            continue
        try:
            return future.result()[0]
        except (BrokenProcessPool, CancelledError):
            _discard(pool)
            break
    log.warning("an image decoder died on %s", check.path)
    return Checked(None, _CRASHED)
