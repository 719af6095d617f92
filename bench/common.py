"""What the benchmarks in bench/ share: scratch PostgreSQL databases and temp dirs, the
environment of the ``oculab`` processes they start, nearest-rank percentiles, readers
of ``/proc`` (memory, CPU, children), free ports and stopping children.

The scripts are run as ``.venv/bin/python bench/<name>.py`` from the repository root,
so Python puts bench/ first on ``sys.path`` and ``from common import ...`` (or
``from mlbench import ...``) needs no path set-up; ``server`` and ``workers`` come from
the project's editable install. Nothing here imports the server, so a script that
must not load it (startup.py's floor, export.py's raw child) can use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
OCULAB = str(Path(sys.executable).with_name("oculab"))
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A bench that cannot go on; scripts print it and exit 1 instead of a traceback."""


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100): a value that was measured, never an
    interpolation between two; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rounded(value: Any) -> Any:
    """Floats to 3 decimals, inside lists and dicts too, for the JSON line."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


# --- environment ---------------------------------------------------------------------------


def oculab_env(**settings: str) -> dict[str, str]:
    """This environment less its OCULAB_* variables (inherited ones would make a run
    depend on the caller's shell), plus ``settings`` by their lower-case names
    (``data_dir="/tmp/x"`` becomes ``OCULAB_DATA_DIR``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update({f"OCULAB_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.contextmanager
def scratch_database(
    admin_url: str = DEFAULT_PG_ADMIN_URL, prefix: str = "oculab_bench_"
) -> Iterator[str]:
    """A new, empty database ``<prefix><random>`` on the server of ``admin_url``; yields
    its URL and drops it at the end (also on errors), closing whatever still uses it."""
    import psycopg  # not every bench needs the driver (startup.py measures imports)
    from psycopg import sql

    name = f"{prefix}{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    progress(f"created database {name}")
    try:
        yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        progress(f"dropped database {name}")


@contextlib.contextmanager
def scratch_dir(prefix: str = "oculab-bench-") -> Iterator[Path]:
    """A new temp dir, removed at the end (also on errors)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- processes -----------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """``preexec_fn`` for servers: they still go away if the bench is SIGKILLed."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def healthy(port: int, host: str = HOST, path: str = "/api/health") -> bool:
    """Whether ``GET path`` answers 200 (http.client: polled often, kept light)."""
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def expect(response: httpx.Response, *statuses: int) -> Any:
    """The response's JSON (None when empty), or a BenchError naming the request."""
    if response.status_code not in statuses:
        raise BenchError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: "
            f"{response.text[:500]}"
        )
    return response.json() if response.content else None


def run_together(loops: Sequence[Callable[[threading.Barrier], object]]) -> float:
    """Runs each loop on a thread of its own, all let go at once (a loop waits on the
    barrier it is given before its first request); the seconds until the last ends."""
    start_line = threading.Barrier(len(loops) + 1)
    threads = [threading.Thread(target=loop, args=(start_line,), daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    start_line.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


# --- /proc (Linux) -------------------------------------------------------------------------


def memory_mib(pid: int | str = "self") -> dict[str, float]:
    """VmHWM (peak resident set) and VmRSS of a live process, in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024  # reported in kB
    return values


# Numbered as in proc(5).
_STAT_FIELDS = {"ppid": 4, "utime": 14, "stime": 15, "cutime": 16, "cstime": 17, "nice": 19}


def proc_stat(pid: int) -> dict[str, int]:
    """ppid, CPU times in clock ticks (``CLOCK_TICKS`` per second; ``c*``: reaped
    children) and nice of a process, from ``/proc/<pid>/stat``."""
    # The command name (field 2) may hold spaces; the fields after its ")" start at 3.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {name: int(fields[number - 3]) for name, number in _STAT_FIELDS.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    stat = proc_stat(pid)
    return (stat["utime"] + stat["stime"]) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (of any of its threads), by pid."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found.extend(map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split()))
    return sorted(found)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    found = [pid]
    for child in children(pid):
        found.extend(process_tree(child))
    return found


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
