"""The confined process that inspects uploaded weights (see workers/ml/sandbox.py).

``python -m workers.ml.inspect_child WORKDIR LIMITS_JSON PARENT_PID`` with the weights
on stdin. Writes one JSON line to stdout: ``{"info": ...}`` (exit 0) or ``{"error": ...}``
(exit 3), each with ``isolation``, what confinement it got.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any


def _preload() -> None:
    """Imports what loading and inspecting will need, while the files are readable.

    After the switch to an unprivileged user the interpreter's own directories may be
    out of reach (e.g. a Python installed under /root), and ultralytics imports some
    modules only on first use.
    """
    import ast  # noqa: F401 - used lazily by ultralytics' restricted activation parser
    import encodings.cp437  # noqa: F401 - zipfile decodes entry names with it
    import io

    import ultralytics.nn.tasks
    import ultralytics.utils.downloads
    import ultralytics.utils.loss  # noqa: F401
    from ultralytics import YOLO  # noqa: F401

    from workers.ml import checkpoints

    checkpoints.resolve_allowlist()
    # A rehearsal of the load path (zip layout, torch's reader, the restricted unpickler).
    import torch

    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(1)}, buffer)
    checkpoints.load(buffer.getvalue())


def main(argv: list[str]) -> int:
    # Whatever the libraries print goes to stderr; stdout carries only the result.
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    workdir, limits_json, parent = Path(argv[1]), argv[2], int(argv[3])
    isolation: list[str] = []

    def finish(code: int, **body: Any) -> int:
        result.write(json.dumps({**body, "isolation": isolation}) + "\n")
        result.flush()
        return code

    from workers.ml import sandbox

    limits = sandbox.Limits(**json.loads(limits_json))
    try:
        sandbox.die_with_parent(parent)
        isolation.append(sandbox.set_limits(limits))
        netns, why = sandbox.isolate_network_as_root()
        if netns:
            isolation.append(why)
        elif os.geteuid() != 0:
            # Not root: a user namespace is the only way, and only while single-threaded.
            isolation.append(sandbox.isolate_network_unprivileged(why))
            netns = True

        from workers.ml import yolo

        _preload()
        isolation.append(sandbox.drop_privileges(limits.user, workdir))
        if not netns:
            isolation.append(sandbox.isolate_network_unprivileged(why))
        if any("NOT isolated" in line for line in isolation):
            print("warning: inspecting without network isolation", file=sys.stderr)
        weights = sandbox.receive_weights(workdir)
        info = yolo.inspect(weights)
    except MemoryError:
        return finish(
            sandbox.REFUSED_EXIT,
            error=f"inspection ran out of memory (limit {limits.memory_mb} MiB)",
        )
    except ValueError as exc:
        return finish(sandbox.REFUSED_EXIT, error=str(exc))
    except Exception as exc:
        text = str(exc).strip().split("\n", 1)[0][:300]
        # How running out of address space shows: torch's allocator, or the dynamic
        # loader unable to map torch's libraries at all.
        out_of_memory = ("can't allocate memory", "Cannot allocate memory", "failed to map segment")
        if any(sign in text for sign in out_of_memory):
            text = f"ran out of memory (limit {limits.memory_mb} MiB)"
        return finish(
            sandbox.REFUSED_EXIT, error=f"inspection failed: {exc.__class__.__name__}: {text}"
        )
    return finish(0, info=asdict(info))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
