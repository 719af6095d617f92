"""SQLAlchemy plumbing: declarative base, portable column types, engine and sessions."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The largest id a client may send: anything above cannot exist and would overflow BIGINT.
MAX_ID = 2**63 - 1

# SQLite only auto-increments an ``INTEGER PRIMARY KEY``; Postgres gets a BIGINT identity.
IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def id_column() -> Any:
    return mapped_column(IdType, primary_key=True, autoincrement=True)


def created_at_column() -> Any:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow)


@dataclass(frozen=True)
class DbTimeouts:
    """How long a PostgreSQL client waits before it gives up (``Settings.db_timeouts``).

    ``tcp_seconds`` bounds how long an established connection may stay silent: TCP
    keepalives notice an idle connection whose peer vanished (a dropped network path,
    a failed-over host), and TCP_USER_TIMEOUT one whose sent data is never acknowledged.
    Without them a request, a heartbeat or the scheduler could wait on a dead socket for
    the kernel's default of ~15 minutes. ``statement_seconds`` is the server-side
    ``statement_timeout``, 0 for none.
    """

    connect_seconds: float = 5
    tcp_seconds: float = 30
    statement_seconds: float = 0
    pool_seconds: float = 10


def pg_connect_args(timeouts: DbTimeouts, options: str | None = None) -> dict[str, Any]:
    """libpq connection parameters for these timeouts; ``options`` is what the URL already
    asks for (kept: ours are appended)."""
    tcp = timeouts.tcp_seconds
    args: dict[str, Any] = {
        # libpq counts whole seconds, at least 2.
        "connect_timeout": max(2, round(timeouts.connect_seconds)),
        "keepalives": 1,
        # Silent for a third of the budget, then three probes over the next half.
        "keepalives_idle": max(1, int(tcp / 3)),
        "keepalives_interval": max(1, int(tcp / 6)),
        "keepalives_count": 3,
        "tcp_user_timeout": int(tcp * 1000),
    }
    parts = [options] if options else []
    if timeouts.statement_seconds > 0:
        parts.append(f"-c statement_timeout={int(timeouts.statement_seconds * 1000)}")
    if parts:
        args["options"] = " ".join(parts)
    return args


def libpq_url(url: str) -> str:
    """The URL as psycopg itself takes it (for LISTEN connections outside the pool)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot answer right now (down, restarting,
    unreachable, out of connections, a statement or pool wait timed out), as opposed to
    a bug or bad data. Such a request may succeed if tried again later."""
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError):
        return True  # no pooled connection came free in time; a checkout saw it dead
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return database_unavailable(exc.orig) if exc.orig is not None else False
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        # Connection failures, admin shutdown, "the database system is starting up",
        # too many connections, statement timeouts, serialization failures: all are the
        # server's state, not the request's fault. (InterfaceError: a closed connection.)
        return True
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc).lower()
        return "locked" in message or "busy" in message
    return False


# sqlite3's extended result code for a write the disk had no room for.
_SQLITE_FULL = 13


def database_full(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite refusing a write for want of disk space (standalone
    keeps its database in the data directory, so a full volume reaches it too).
    PostgreSQL's disk-full error is an OperationalError: ``database_unavailable``."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return database_full(exc.orig)
    return (
        isinstance(exc, sqlite3.OperationalError)
        and getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL
    )


def make_engine(url: str, *, pool_size: int = 10, timeouts: DbTimeouts | None = None) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling breaks SAVEPOINT; let SQLAlchemy emit BEGIN.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front: no deadlock-prone lock upgrades.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    timeouts = timeouts or DbTimeouts()
    options = sa.engine.make_url(url).query.get("options")
    return sa.create_engine(
        url,
        connect_args=pg_connect_args(timeouts, options if isinstance(options, str) else None),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeouts.pool_seconds,
        # A connection that died while idle in the pool (PostgreSQL restarted) is
        # replaced on checkout instead of failing the request that drew it.
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def make_sessionmaker(engine: Engine, info: dict[str, Any] | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False, info=info or {})


def get_db(request: Request) -> Iterator[Session]:
    """The request's unit of work: committed when the endpoint returns, else rolled back."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


DB = Annotated[Session, Depends(get_db, scope="function")]


def is_postgresql(bind: Session | sa.Engine | sa.Connection) -> bool:
    """PostgreSQL, or else SQLite (standalone): the only two backends Oculab runs on."""
    dialect = bind.get_bind().dialect if isinstance(bind, Session) else bind.dialect
    return dialect.name == "postgresql"


def dialect_insert(session: Session, table: Any) -> Any:
    """An INSERT supporting ``on_conflict_do_nothing`` for the session's backend."""
    if is_postgresql(session):
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


async def commit_before_waiting(session: Session) -> None:
    """Ends the request's transaction before a long await (a streamed upload, waiting on
    a job): an open SQLite transaction holds the database's one write lock."""
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(session.commit)
