"""Test fixtures: a real database (SQLite or PostgreSQL), real storage, the real app.

Pick the database with ``OCULAB_TEST_DATABASE=sqlite|postgres`` (``make test`` runs
both). The schema is built once per session with the real migrations; every test
then starts from empty tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from server import migrate
from server.app import create_app
from server.kit.db import make_engine, make_sessionmaker
from server.models import Base
from server.settings import Mode, Settings
from tests.factories import ApiClient, Factory
from tests.helpers import BACKEND, scratch_database

# The developer's own OCULAB_* variables must not leak into the tests.
for _name in list(os.environ):
    if _name.startswith("OCULAB_") and not _name.startswith("OCULAB_TEST_"):
        del os.environ[_name]


def pytest_report_header() -> str:
    return f"oculab test database: {BACKEND}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database(tmp_path_factory.mktemp("db"), "oculab_test") as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


def _empty_tables(engine: sa.Engine) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables]
    with engine.begin() as conn:
        # DELETE rather than TRUNCATE on PostgreSQL too: a test leaves a few rows, and
        # TRUNCATE gives every table a new file (21 ms a test here, against 2.3 ms).
        for name in reversed(tables):
            conn.execute(sa.text(f"DELETE FROM {name}"))
        if engine.dialect.name == "postgresql":
            # Ids start at 1 again, as they do on SQLite once a table is empty.
            sequences = conn.scalars(
                sa.text("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")
            )
            for sequence in sequences.all():
                conn.execute(sa.text(f'ALTER SEQUENCE "{sequence}" RESTART'))


@pytest.fixture(autouse=True)
def _clean_database(engine: sa.Engine) -> Iterator[None]:
    yield
    _empty_tables(engine)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_settings(database_url: str, data_dir: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mode": Mode.standalone,
            "data_dir": data_dir,
            "database_url": database_url,
            "secret_key": "test-secret-key-" + "x" * 32,
            "seed_demo": False,
            "fsync": False,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., FastAPI]]:
    apps: list[FastAPI] = []

    def build(*, run_jobs: bool = False, **overrides: Any) -> FastAPI:
        app = create_app(make_settings(**overrides), run_jobs=run_jobs)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.state.engine.dispose()


@pytest.fixture
def make_running_app(make_app: Callable[..., FastAPI]) -> Iterator[Callable[..., FastAPI]]:
    """Like ``make_app``, with the app's lifespan entered (its in-process workers running,
    with ``run_jobs=True``) until the test ends."""
    with ExitStack() as running:

        def build(**kwargs: Any) -> FastAPI:
            app = make_app(**kwargs)
            running.enter_context(TestClient(app))
            return app

        yield build


@pytest.fixture
def app(make_app: Callable[..., FastAPI]) -> FastAPI:
    return make_app()


@pytest.fixture
def ml_app(make_running_app: Callable[..., FastAPI]) -> FastAPI:
    """Standalone with in-process workers (one GPU slot, one CPU slot) running jobs,
    with short intervals so ML tests spend their time in ultralytics, not waiting."""
    return make_running_app(
        run_jobs=True,
        standalone_gpu_slots=1,
        standalone_cpu_slots=1,
        heartbeat_interval_seconds=0.5,
        scheduler_interval_seconds=0.1,
        predict_queue_seconds=30,
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def db(app: FastAPI) -> Iterator[Session]:
    """A session for arranging and inspecting state; each `with db.begin()` commits."""
    with make_sessionmaker(app.state.engine)() as session:
        yield session


@pytest.fixture
def factory(app: FastAPI) -> Factory:
    return Factory(app)


@pytest.fixture
def admin(factory: Factory) -> ApiClient:
    return factory.client(factory.user("root", is_admin=True))


@pytest.fixture
def alice(factory: Factory) -> ApiClient:
    return factory.client(factory.user("alice"))


@pytest.fixture
def bob(factory: Factory) -> ApiClient:
    return factory.client(factory.user("bob"))


@pytest.fixture
def factory_for() -> Callable[[FastAPI], Factory]:
    return Factory


@pytest.fixture
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema) on the backend under test."""
    with scratch_database(tmp_path, "oculab_fresh") as url:
        yield url


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)
    if BACKEND == "postgres":
        # make test runs the suite once per database; these would only repeat themselves.
        once = pytest.mark.skip(reason="touches no database: runs on the SQLite pass")
        for item in items:
            if item.get_closest_marker("no_database"):
                item.add_marker(once)
