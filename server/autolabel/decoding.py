"""Reading auto-label batches ahead of the model: rows from the database, JPEGs decoded
on a few threads (OpenCV releases the GIL while it decodes) while the current batch runs
through the model."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

Row = tuple[int, str, int]  # image id, sha256, revision

# Decoded images waiting ahead of the model, at most: bounds the memory a large batch
# of large images can take while still keeping a fast GPU fed.
_MAX_IMAGES_AHEAD = 64


@dataclass(frozen=True)
class DecodePlan:
    threads: int
    batches_ahead: int


def plan(device: str, batch: int, usable_cpus: int, threads: int | None = None) -> DecodePlan:
    """How many decode threads, and how many batches ahead, for a job on ``device``.

    On a GPU the CPU only feeds it: several threads (one core left for the job's own
    thread, which preprocesses for ultralytics) and up to two batches ahead. On the CPU
    the decoders compete with torch for the same cores, so one thread, one batch ahead.
    ``threads`` (a setting) overrides the count.
    """
    on_gpu = device.startswith("cuda")
    count = threads or (max(1, min(8, usable_cpus - 1)) if on_gpu else 1)
    ahead = max(1, min(2, _MAX_IMAGES_AHEAD // max(batch, 1))) if on_gpu else 1
    return DecodePlan(threads=count, batches_ahead=ahead)


def batches(
    fetch: Callable[[int], list[Row]],
    decode: Callable[[Row], Any],
    after: int,
    decode_plan: DecodePlan,
) -> Generator[tuple[list[Row], list[Any]], None, None]:
    """Yields (rows, decoded images) batch by batch, in id order, from the first id after
    ``after``. While the caller works on one batch, the next ``batches_ahead`` decode.
    Close the iterator (``contextlib.closing``) to stop the decoders early."""
    pool = ThreadPoolExecutor(max_workers=decode_plan.threads, thread_name_prefix="decode")
    queued: deque[tuple[list[Row], list[Future[Any]]]] = deque()
    last, exhausted = after, False
    try:
        while True:
            while not exhausted and len(queued) <= decode_plan.batches_ahead:
                rows = fetch(last)
                if not rows:
                    exhausted = True
                    break
                last = rows[-1][0]
                queued.append((rows, [pool.submit(decode, row) for row in rows]))
            if not queued:
                return
            rows, pending = queued.popleft()
            yield rows, [future.result() for future in pending]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
