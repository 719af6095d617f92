"""Keeping an auto-label job's inference process fed: rows read from the database and
sent a batch or two ahead, so the process (workers/ml/inference_child.py) decodes the
next batch on its threads while the model runs the current one, and the worker writes
the previous batch's boxes meanwhile."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

Row = tuple[int, str, int]  # image id, sha256, revision
H = TypeVar("H")
R = TypeVar("R")

# Decoded images waiting ahead of the model, at most: bounds the memory a large batch
# of large images can take while still keeping a fast GPU fed.
_MAX_IMAGES_AHEAD = 64


@dataclass(frozen=True)
class DecodePlan:
    threads: int
    batches_ahead: int


def plan(device: str, batch: int, usable_cpus: int, threads: int | None = None) -> DecodePlan:
    """How many decode threads, and how many batches ahead, for a job on ``device``.

    On a GPU the CPU only feeds it: several threads (one core left for the thread that
    preprocesses for ultralytics) and up to two batches ahead. On the CPU the decoders
    compete with torch for the same cores, so one thread (at the lowest priority, taking
    only the cycles torch leaves idle), one batch ahead. ``threads`` (a setting)
    overrides the count.
    """
    on_gpu = device.startswith("cuda")
    count = threads or (max(1, min(8, usable_cpus - 1)) if on_gpu else 1)
    ahead = max(1, min(2, _MAX_IMAGES_AHEAD // max(batch, 1))) if on_gpu else 1
    return DecodePlan(threads=count, batches_ahead=ahead)


def batches(
    fetch: Callable[[int], list[Row]],
    submit: Callable[[list[Row]], H],
    collect: Callable[[H], R],
    after: int,
    batches_ahead: int,
) -> Generator[tuple[list[Row], R], None, None]:
    """Yields (rows, collected result) batch by batch, in id order, from the first id
    after ``after``. Each batch is submitted as soon as it is read, up to
    ``batches_ahead`` beyond the one being collected; nothing more is read or submitted
    once the caller stops iterating."""
    queued: deque[tuple[list[Row], H]] = deque()
    last, exhausted = after, False
    while True:
        while not exhausted and len(queued) <= batches_ahead:
            rows = fetch(last)
            if not rows:
                exhausted = True
                break
            last = rows[-1][0]
            queued.append((rows, submit(rows)))
        if not queued:
            return
        rows, handle = queued.popleft()
        yield rows, collect(handle)
