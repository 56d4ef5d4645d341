"""Engines and transactions: SQLAlchemy 2 (async), SQLite through aiosqlite by default,
PostgreSQL through asyncpg when several instances run.

On SQLite there is one writer connection, each transaction taken with ``BEGIN IMMEDIATE``
(SQLite has one writer at a time; queueing writers in the pool instead of in SQLite's sleeping
busy handler keeps latency flat), and a separate pool of readers in WAL mode that never wait for
the writer. The hot path uses Core statements on connections, not ORM sessions: a card costs a
handful of statements, each built once.

The ack comes first: a transaction an ack waits for (``write(urgent=True)``: a stored message, a
decided click) never queues behind background work. On SQLite it takes the one writer ahead of
every queued background transaction (:class:`bot.store.writer.WriterTurns`); on PostgreSQL,
where writers do not exclude each other, it has a small pool of connections of its own, so
drafting holding every pooled connection cannot make it wait. SQLite's checkpoints (copying the
write-ahead log into the database file, with an fsync) run beside the writer
(:meth:`Database.checkpoint_forever`), not inside whichever commit crossed the log's threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine

from bot.store.writer import WriterTurns

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"
#: PostgreSQL connections kept for urgent transactions (the acks), apart from the shared pool.
URGENT_POOL = {"pool_size": 2, "max_overflow": 4}
#: WAL pages after which a committing writer checkpoints by itself (SQLite's default is 1,000):
#: only when the checkpoints beside it fall this far behind.
WRITER_CHECKPOINT_PAGES = 10_000


def create_engine(url: str, *, read_only: bool = False, pool: dict[str, int] | None = None) -> AsyncEngine:
    """An async engine. SQLite gets WAL, a busy timeout, foreign keys and the single writer;
    ``read_only`` engines get a pool of deferred-transaction readers instead."""
    if url.startswith("sqlite"):
        pool = {"pool_size": 4, "max_overflow": 4} if read_only else {"pool_size": 1, "max_overflow": 0}
        engine = create_async_engine(url, connect_args={"timeout": 30}, pool_timeout=120, **pool)
        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if not read_only:
                cursor.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        @event.listens_for(engine.sync_engine, "invalidate")
        def _roll_back_before_closing(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
            # A task cancelled inside a transaction (a shutdown, a timeout) makes SQLAlchemy
            # close the connection unreturned. Its unfinished statement keeps the SQLite
            # connection open as a "zombie" that holds the write lock until garbage collection:
            # every later writer in the process would wait and fail "database is locked".
            with contextlib.suppress(Exception):
                dbapi_connection.rollback()

        return engine
    return create_async_engine(url, pool_pre_ping=True, **(pool or {"pool_size": 10, "max_overflow": 10}))


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """ORM sessions (``async with sessions.begin()``), for the CLI and tests; the hot path uses
    :class:`Database`."""
    return async_sessionmaker(engine, expire_on_commit=False)


def reader_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for reads: on SQLite its own pool of readers; elsewhere the same engine."""
    url = engine.url.render_as_string(hide_password=False)
    return create_engine(url, read_only=True) if url.startswith("sqlite") else engine


def urgent_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine for urgent transactions: on SQLite the one writer (they go first in its
    queue instead); elsewhere a small pool of its own."""
    if engine.dialect.name == "sqlite":
        return engine
    return create_engine(engine.url.render_as_string(hide_password=False), pool=URGENT_POOL)


class Database:
    """The writer and reader engines, and the two ways in: ``write()`` (one transaction) and
    ``read()`` (a read-only snapshot)."""

    def __init__(self, engine: AsyncEngine, reads: AsyncEngine | None = None) -> None:
        self.engine = engine
        self.reads = reads or reader_engine(engine)
        self.urgent = urgent_engine(engine)
        self.dialect = engine.dialect.name
        self.writer = WriterTurns()

    @contextlib.asynccontextmanager
    async def write(self, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction. ``urgent``: an ack waits for it, so it goes before background work."""
        if self.dialect != "sqlite":
            async with (self.urgent if urgent else self.engine).begin() as conn:
                yield conn
            return
        async with self.writer.turn(urgent=urgent), self.engine.begin() as conn:
            yield conn

    async def checkpoint_forever(self, every: float = 1.0) -> None:
        """On SQLite, every ``every`` seconds copy what the write-ahead log holds into the
        database file from a connection of its own (a PASSIVE checkpoint waits for no reader or
        writer). Left to SQLite, the commit that crosses 1,000 pages does it while holding the
        writer, and every ack queued behind it waits for the copy and its fsync."""
        path = self.engine.url.database
        if self.dialect != "sqlite" or not path or path == ":memory:":
            return
        while True:
            await asyncio.to_thread(_checkpoint, path)
            await asyncio.sleep(every)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.reads.connect() as conn:
            yield conn

    async def dispose(self, grace: float = 5.0) -> None:
        """Close the pools, after (up to ``grace`` seconds) the transactions still running
        (a click decided during shutdown) have returned their connections: a connection closed
        under a transaction would leave SQLite locked for the next process."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._checked_out() and loop.time() < deadline:  # noqa: ASYNC110 - a pool has no event to wait on
            await asyncio.sleep(0.02)
        for extra in {self.reads, self.urgent} - {self.engine}:
            await extra.dispose()
        await self.engine.dispose()

    def _checked_out(self) -> int:
        pools = [e.sync_engine.pool for e in {self.engine, self.urgent}]
        counts = [getattr(pool, "checkedout", None) for pool in pools]
        return sum(int(count()) for count in counts if callable(count))


def _checkpoint(path: str) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=1.0)) as conn:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


_MIGRATING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to the newest migration (creates it on a fresh database), or to
    ``revision``. Alembic keeps process-wide state while it runs, so upgrades in one process
    take turns."""
    lock = _MIGRATING.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        await _upgrade(engine, revision)


async def _upgrade(engine: AsyncEngine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))

    def _upgrade(sync_conn: Any) -> None:
        config.attributes["connection"] = sync_conn
        before = MigrationContext.configure(sync_conn).get_current_revision()
        command.upgrade(config, revision)
        migrated = MigrationContext.configure(sync_conn).get_current_revision() != before
        if migrated and sync_conn.dialect.name == "sqlite":
            broken = sync_conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"the migration left rows pointing nowhere (table, row, parent): {broken[:5]}")

    async with engine.connect() as conn, _sqlite_foreign_keys_off(conn), conn.begin():
        await conn.run_sync(_upgrade)


def _set_sqlite_foreign_keys(sync_conn: Any, on: bool) -> None:
    # On the DBAPI connection, so that SQLAlchemy does not begin a transaction first.
    cursor = sync_conn.connection.cursor()
    cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    cursor.close()


@contextlib.asynccontextmanager
async def _sqlite_foreign_keys_off(conn: AsyncConnection) -> AsyncIterator[None]:
    """On SQLite, foreign keys off while migrations run (checked before commit instead). A
    migration that adds a constraint rebuilds the table (copy, drop, rename), and dropping a
    table other rows point to fails while they are on; SQLite only lets them be switched
    outside a transaction (its manual's "12 steps" for ALTER TABLE)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    await conn.run_sync(_set_sqlite_foreign_keys, False)
    try:
        yield
    finally:
        await conn.run_sync(_set_sqlite_foreign_keys, True)


async def database_reachable(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
