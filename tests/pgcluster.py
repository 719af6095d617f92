"""A PostgreSQL cluster of the test's own, for fault tests that stop the database.

The machine's shared cluster serves every other test (and other people's runs): it is
never stopped. `pg_createcluster` makes a throwaway one on a free port instead, with
trust auth; it is dropped when the test ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from server import migrate
from tests.helpers import create_database, free_port, wait_until


def available() -> str | None:
    """Why a throwaway cluster cannot be made here, or None when it can."""
    if shutil.which("pg_createcluster") is None or not os.path.isdir("/etc/postgresql"):
        return "pg_createcluster (postgresql-common) is not installed"
    if os.geteuid() != 0:
        return "creating a PostgreSQL cluster needs root"
    return None


class ThrowawayPostgres:
    """One cluster, one database migrated to head; stop, start and restart at will."""

    def __init__(self) -> None:
        self.version = sorted(os.listdir("/etc/postgresql"))[-1]
        self.name = f"oculab_fault_{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.base = f"postgresql://postgres@127.0.0.1:{self.port}"
        self.url = f"{self.base}/oculab"
        self._refused = ""

    def _ctl(self, action: str, *extra: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action, *extra],
            check=True,
            timeout=60,
            capture_output=True,
        )

    def create(self) -> None:
        subprocess.run(
            [
                "pg_createcluster",
                "-p",
                str(self.port),
                # Small and fast: nothing here needs to survive a crash of the machine
                # (the page cache does), but every acknowledged commit must survive an
                # immediate stop, so synchronous_commit stays on.
                "-o",
                "fsync=off",
                "-o",
                "full_page_writes=off",
                "-o",
                "shared_buffers=32MB",
                "-o",
                "max_connections=200",
                self.version,
                self.name,
                "--",
                "--auth=trust",
            ],
            check=True,
            timeout=120,
            capture_output=True,
        )
        self.start()
        create_database(self.base, "oculab")
        migrate.upgrade(self.url)

    def wait_ready(self, timeout: float = 30) -> None:
        def accepts() -> bool:
            try:
                with psycopg.connect(f"{self.base}/postgres", connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError as exc:
                self._refused = repr(exc)
                return False
            return True

        wait_until(
            accepts, timeout, lambda: f"{self.name} refuses connections: {self._refused}", 0.1
        )

    def start(self) -> None:
        self._ctl("start")
        self.wait_ready()

    def stop(self) -> None:
        # "immediate" is what a crash or a failover looks like to clients.
        self._ctl("stop", "-m", "immediate")

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def drop(self) -> None:
        subprocess.run(
            ["pg_dropcluster", "--stop", self.version, self.name],
            check=False,
            timeout=120,
            capture_output=True,
        )


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.drop()
