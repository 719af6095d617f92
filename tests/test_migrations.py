from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from server import migrate
from server.kit.db import make_engine
from server.models import Base


def test_models_match_the_migrated_schema(database_url: str) -> None:
    # Raises if autogenerate would produce any operation.
    migrate.check(database_url)


def test_upgrade_downgrade_upgrade_round_trips(fresh_database_url: str) -> None:
    config = migrate.alembic_config(fresh_database_url)
    migrate.upgrade(fresh_database_url)
    engine = make_engine(fresh_database_url, pool_size=1)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        tables = set(sa.inspect(engine).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
        command.downgrade(config, "base")
        assert migrate.current_revision(engine) is None
        assert not {t.name for t in Base.metadata.sorted_tables} & set(
            sa.inspect(engine).get_table_names()
        )
        migrate.upgrade(fresh_database_url)
        assert migrate.is_at_head(fresh_database_url)
    finally:
        engine.dispose()
