"""Start-to-healthy benchmark: ``oculab standalone`` (demo off) on a fresh, empty data
dir, from launching the command until ``GET /api/health`` answers 200.

Run from the repository root::

    .venv/bin/python bench/startup.py [--runs 7]

Each run gets a new temp data dir (so an empty SQLite database, migrations, the first
admin and the storage layout are all part of the time) and a free port; the server is
stopped once healthy. Runs alternate with the in-run floor: the same interpreter doing
``import fastapi, sqlalchemy, uvicorn`` and nothing else, which no start can beat. The
ratio of the medians is how far from that floor the start is.

``--label-studio`` then starts Label Studio 1.23.2 (bench/label_studio.py: SQLite, empty
data dir, its first user created at start as Oculab's admin is) ``--label-studio-runs``
times and compares with its median; without it the comparison is with 36.9 s, recorded
for issue 13 on another day and machine, not in this run.

Progress goes to stderr. Stdout gets a summary and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import label_studio
from common import (
    HOST,
    OCULAB,
    BenchError,
    die_with_parent,
    free_port,
    healthy,
    oculab_env,
    progress,
    rounded,
    scratch_dir,
    stop,
)
from label_studio import RECORDED

FLOOR_IMPORTS = "import fastapi, sqlalchemy, uvicorn"
# Label Studio 1.23.2 (SQLite), recorded for issue 13 on another day and machine; used
# only without --label-studio.
LABEL_STUDIO_SECONDS = 36.9
GOAL_FRACTION = 0.1
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class Options:
    runs: int
    timeout: float
    label_studio_runs: int = 0  # 0: use the recorded figure


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="starts to time (median)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait per start")
    parser.add_argument(
        "--label-studio",
        action="store_true",
        help="also time Label Studio 1.23.2's start in this run (installs it into"
        " bench/.venvs/ the first time) and compare with that",
    )
    parser.add_argument(
        "--label-studio-runs",
        type=int,
        default=1,
        help="Label Studio starts to time with --label-studio (median; ~40-80 s each)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.timeout <= 0 or args.label_studio_runs < 1:
        parser.error("need --runs >= 1, --timeout > 0 and --label-studio-runs >= 1")
    return Options(args.runs, args.timeout, args.label_studio_runs if args.label_studio else 0)


def time_start(options: Options) -> float:
    """Seconds from launching ``oculab standalone`` on an empty data dir to health."""
    with scratch_dir("oculab-bench-startup-") as root:
        port = free_port()
        log_path = root / "server.log"
        env = oculab_env(data_dir=str(root / "data"), seed_demo="false")
        with log_path.open("wb") as log:
            start = time.perf_counter()
            process = subprocess.Popen(
                [OCULAB, "standalone", "--host", HOST, "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        try:
            while not healthy(port):
                if process.poll() is not None:
                    raise BenchError(
                        f"oculab standalone exited with {process.returncode}:\n"
                        + log_path.read_text(errors="replace")[-3000:]
                    )
                if time.perf_counter() - start > options.timeout:
                    raise BenchError(f"not healthy within {options.timeout:.0f} s")
                time.sleep(POLL_SECONDS)
            return time.perf_counter() - start
        finally:
            stop(process)


def time_floor() -> float:
    """The interpreter and the web framework's imports, nothing of ours."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR_IMPORTS], check=True)
    return time.perf_counter() - start


def run_benchmark(options: Options) -> dict[str, Any]:
    starts: list[float] = []
    floors: list[float] = []
    time_floor()  # warm the page cache for both
    for run in range(options.runs):
        starts.append(time_start(options))
        floors.append(time_floor())
        progress(f"run {run + 1}: healthy after {starts[-1]:.2f} s (floor {floors[-1]:.2f} s)")
    start, floor = statistics.median(starts), statistics.median(floors)
    ls_starts = [LABEL_STUDIO_SECONDS]
    if options.label_studio_runs:
        ls_starts = [label_studio.startup_seconds() for _ in range(options.label_studio_runs)]
    ls_start = statistics.median(ls_starts)
    goal = GOAL_FRACTION * ls_start
    return {
        "runs": options.runs,
        "start_seconds": start,
        "start_seconds_all": starts,
        "floor_seconds": floor,
        "floor_seconds_all": floors,
        "ratio_to_floor": start / floor,
        "label_studio_seconds": ls_start,
        "label_studio_seconds_all": ls_starts,
        "label_studio_measured": bool(options.label_studio_runs),
        "ratio_to_label_studio": start / ls_start,
        "goal_seconds": goal,
        "meets_goal": start <= goal,
    }


def print_summary(results: dict[str, Any]) -> None:
    runs = results["runs"]
    print(f"Oculab start to healthy (standalone, demo off, empty data dir), median of {runs}")
    print(f"  start to /api/health 200:   {results['start_seconds']:.2f} s")
    print(f"  floor ({FLOOR_IMPORTS}): {results['floor_seconds']:.2f} s")
    print(f"  start / floor:              {results['ratio_to_floor']:.2f}x")
    if results["label_studio_measured"]:
        ls_note = f"median of {len(results['label_studio_seconds_all'])}, measured in this run"
    else:
        ls_note = RECORDED
    print(f"  Label Studio 1.23.2:        {results['label_studio_seconds']:.2f} s ({ls_note})")
    print(
        f"  start / Label Studio:       {results['ratio_to_label_studio']:.3f}x"
        f" (goal <= {GOAL_FRACTION}x, {results['goal_seconds']:.2f} s:"
        f" {'met' if results['meets_goal'] else 'NOT met'})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        results = run_benchmark(options)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    print_summary(results)
    print(json.dumps({key: rounded(value) for key, value in results.items()}))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
