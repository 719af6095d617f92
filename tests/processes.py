"""`oculab` subcommands run as subprocesses by the tests that need real processes
(fault injection, health probes, exit modes)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def oculab_env(data_dir: Path, redis_url: str, secret: str, **settings: str) -> dict[str, str]:
    """This environment less its OCULAB_* variables, plus a server-mode configuration
    whose timings are short enough for tests: half-second heartbeats, a quarter-second
    scheduler, the test job kinds (tests/jobkinds.py) and no fsync. ``settings`` are
    further OCULAB_* settings by their lower-case names (``database_url="..."``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCULAB_")}
    env.update(
        {
            "OCULAB_MODE": "server",
            "OCULAB_REDIS_URL": redis_url,
            "OCULAB_DATA_DIR": str(data_dir),
            "OCULAB_SECRET_KEY": f"{secret}-" + "k" * 32,
            "OCULAB_JOB_MODULES": "tests.jobkinds",
            "OCULAB_HEARTBEAT_INTERVAL_SECONDS": "0.5",
            "OCULAB_HEARTBEAT_TIMEOUT_SECONDS": "3",
            "OCULAB_SCHEDULER_INTERVAL_SECONDS": "0.25",
            "OCULAB_MESSAGE_CHECK_GRACE_SECONDS": "1",
            "OCULAB_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "10",
            "OCULAB_FSYNC": "false",
            "PYTHONPATH": str(REPO),
        }
    )
    env.update({f"OCULAB_{k.upper()}": v for k, v in settings.items()})
    return env
