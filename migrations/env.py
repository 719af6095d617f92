from __future__ import annotations

from typing import Any

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from server.kit.db import make_engine
from server.migrate import COMPAT_TABLE, record_compatibility
from server.models import Base

config = context.config
target_metadata = Base.metadata


def _include_name(name: str | None, type_: str, _parents: Any) -> bool:
    # Written by record_compatibility, not a model: autogenerate leaves it alone.
    return not (type_ == "table" and name == COMPAT_TABLE)


def _run(connection: Connection) -> None:
    applied: list[str] = []
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=_include_name,
        on_version_apply=lambda **kw: applied.append(kw["step"].up_revision_id),
    )
    with context.begin_transaction():
        context.run_migrations()
        if applied:
            # In the migrations' transaction: the schema and what it says about which
            # code may run on it change together (server/migrate.py, the contract).
            record_compatibility(connection, ScriptDirectory.from_config(config))


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from server.settings import Settings

        url = Settings().resolved_database_url
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            _run(conn)
            # Alembic leaves a transaction it did not begin itself (SQLAlchemy 2 begins
            # one on the first statement) to its owner: here, us.
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `oculab migrate`")
run_migrations_online()
