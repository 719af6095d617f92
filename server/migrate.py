"""Schema migrations, driven from code so the installed package can migrate itself.

Upgrade and rollback contract. Each revision module may declare
``backward_compatible = True``: the code of the revision before it still runs correctly
on the schema it makes (it only adds nullable columns, tables or indexes that older code
ignores). Every migration run records, in the same transaction and in the table
``oculab_schema_compat``, the oldest code head that can run on the resulting schema:
the schema's revision, walked back over the compatible revisions. Code accepts a
database whose schema is at its own head, or newer (unknown to it) when the recorded
oldest code head is its head or older; it refuses a newer, incompatible schema with a
message, and waits for ``oculab migrate`` on an older one. So after an upgrade whose
migrations are all backward compatible, the previous release's pods (a rollback) keep
running; after one that is not, they refuse to start until the schema is downgraded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from server.kit.db import is_postgresql, make_engine

log = logging.getLogger(__name__)

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)

# Written by every migration run (migrations/env.py), not a model: autogenerate skips it.
COMPAT_TABLE = "oculab_schema_compat"
# pg_advisory_lock key held by `oculab migrate` on PostgreSQL while it upgrades, so that
# concurrent runs (two Helm hooks, a Job retried while its first pod still runs)
# serialise; the second then finds the schema at head. 0x0C01AB3A: "oculab migrate".
MIGRATION_LOCK_KEY = 0x0C01AB3A

_compat_metadata = sa.MetaData()
_compat = sa.Table(
    COMPAT_TABLE,
    _compat_metadata,
    sa.Column("schema_revision", sa.String(32), primary_key=True),
    sa.Column("oldest_code_head", sa.String(32), nullable=False),
)


class SchemaState(StrEnum):
    current = "current"  # at this code's head
    behind = "behind"  # older than this code (or empty): `oculab migrate` must run
    newer_compatible = "newer_compatible"  # a later release's, still fine for this code
    newer_incompatible = "newer_incompatible"  # a later release's that this code must not use


@dataclass(frozen=True)
class SchemaStatus:
    state: SchemaState
    revision: str | None  # the database's
    head: str | None  # this code's
    oldest_code_head: str | None  # recorded by the last migration run, if any

    @property
    def usable(self) -> bool:
        return self.state in (SchemaState.current, SchemaState.newer_compatible)

    def describe(self) -> str:
        if self.state is SchemaState.current:
            return f"schema at {self.head}"
        if self.state is SchemaState.newer_compatible:
            return (
                f"schema at {self.revision}, newer than this release's {self.head} and "
                f"compatible with it (oldest compatible code: {self.oldest_code_head})"
            )
        if self.state is SchemaState.newer_incompatible:
            return (
                f"the database schema ({self.revision}) is newer than this release "
                f"({self.head}) and not compatible with it (it needs code at "
                f"{self.oldest_code_head or 'an unknown revision'} or later): run the newer "
                "release, or restore the backup taken before the upgrade (docs/install.md, "
                "Upgrades and rollback)"
            )
        return (
            f"the database schema ({self.revision or 'empty'}) is not at the latest "
            f"revision ({self.head}); run `oculab migrate` first"
        )


class SchemaTooNew(Exception):
    """The database's schema is newer than this code and not compatible with it."""


def alembic_config(url: str, script_location: str = SCRIPT_LOCATION) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def oldest_code_head(script: ScriptDirectory, revision: str) -> str:
    """The oldest code head that runs on a schema at ``revision``: each revision that
    declares ``backward_compatible`` lets the code of the one before it run too (and, as
    compatible changes are additive, that code's own predecessors where they could)."""
    current = script.get_revision(revision)
    assert current is not None
    while getattr(current.module, "backward_compatible", False) and isinstance(
        current.down_revision, str
    ):
        parent = script.get_revision(current.down_revision)
        assert parent is not None
        current = parent
    return current.revision


def record_compatibility(connection: sa.Connection, script: ScriptDirectory) -> None:
    """Writes what ``oldest_code_head`` says for the schema now in ``connection``'s
    transaction (called by migrations/env.py after every upgrade or downgrade)."""
    heads = MigrationContext.configure(connection).get_current_heads()
    if not heads:
        _compat.drop(connection, checkfirst=True)
        return
    _compat.create(connection, checkfirst=True)
    connection.execute(_compat.delete())
    connection.execute(
        _compat.insert(),
        [{"schema_revision": h, "oldest_code_head": oldest_code_head(script, h)} for h in heads],
    )


def _status(connection: sa.Connection, script: ScriptDirectory) -> SchemaStatus:
    head = script.get_current_head()
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision == head:
        return SchemaStatus(SchemaState.current, revision, head, None)
    known = {r.revision for r in script.walk_revisions()}
    if revision is None or revision in known:
        return SchemaStatus(SchemaState.behind, revision, head, None)
    oldest: str | None = None
    if sa.inspect(connection).has_table(COMPAT_TABLE):
        oldest = connection.scalar(
            sa.select(_compat.c.oldest_code_head).where(_compat.c.schema_revision == revision)
        )
    ours = {r.revision for r in script.iterate_revisions(head, "base")} if head else set()
    state = SchemaState.newer_compatible if oldest in ours else SchemaState.newer_incompatible
    return SchemaStatus(state, revision, head, oldest)


def schema_status(url: str, script_location: str = SCRIPT_LOCATION) -> SchemaStatus:
    """Whether this code may use the database's schema (raises if it is unreachable)."""
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            return _status(connection, ScriptDirectory(script_location))
    finally:
        engine.dispose()


def wait_for_database(url: str, seconds: float) -> None:
    """Returns once the database accepts connections; raises the last OperationalError
    after ``seconds`` (a migration Job started with, or before, its database)."""
    deadline = time.monotonic() + seconds
    engine = make_engine(url, pool_size=1)
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                log.warning(
                    "waiting for the database to accept connections (%s); retrying for "
                    "another %.0f s",
                    reason,
                    left,
                )
                time.sleep(min(2.0, max(left, 0.1)))
    finally:
        engine.dispose()


def upgrade(url: str, script_location: str = SCRIPT_LOCATION) -> SchemaStatus:
    """Migrates to this code's head. On PostgreSQL under ``MIGRATION_LOCK_KEY``, so that
    concurrent runs serialise. A newer schema is left alone when it is compatible, and
    refused (``SchemaTooNew``) when not: this code cannot downgrade what it does not know."""
    script = ScriptDirectory(script_location)
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            postgres = is_postgresql(connection)
            if postgres:
                _lock(connection)
            try:
                status = _status(connection, script)
                # Alembic begins (and commits) its own transaction on this connection;
                # the session-level advisory lock outlives these commits.
                connection.commit()
                if status.state is SchemaState.newer_incompatible:
                    raise SchemaTooNew(status.describe())
                if status.state is SchemaState.behind:
                    config = alembic_config(url, script_location)
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                    connection.commit()
                    status = _status(connection, script)
                    connection.commit()
                return status
            finally:
                if postgres:
                    connection.rollback()
                    connection.execute(sa.select(sa.func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
                    connection.commit()
    finally:
        engine.dispose()


def _lock(connection: sa.Connection) -> None:
    if not connection.scalar(sa.select(sa.func.pg_try_advisory_lock(MIGRATION_LOCK_KEY))):
        log.info(
            "another `oculab migrate` holds the migration lock (pg_advisory_lock %s); "
            "waiting for it to finish",
            MIGRATION_LOCK_KEY,
        )
        connection.execute(sa.select(sa.func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
    connection.commit()


def check(url: str) -> None:
    """Raises when the models and the migrated schema differ (autogenerate diff)."""
    command.check(alembic_config(url))


def head_revision() -> str | None:
    return ScriptDirectory(SCRIPT_LOCATION).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_at_head(url: str) -> bool:
    return schema_status(url).state is SchemaState.current
