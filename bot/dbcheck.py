"""The database URL and reachability, checked before anything runs, with one-line hints.

``supportbot run`` and the commands that open the database call :func:`preflight` first, so
an operator sees "cannot reach PostgreSQL at db:5432 (connection refused): is it running?"
instead of a traceback. A URL problem is a :class:`bot.errors.ConfigError` (exit code 3); a
database that is down is a :class:`DatabaseUnavailable` (exit code 1).
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from bot.errors import ConfigError, SupportbotError
from bot.settings import Settings

SUPPORTED = ("sqlite+aiosqlite", "postgresql+asyncpg")
EXAMPLES = "sqlite+aiosqlite:///./supportbot.db or postgresql+asyncpg://user:password@host:5432/supportbot"
CONNECT_TIMEOUT = 10.0
_T = TypeVar("_T")


class DatabaseUnavailable(SupportbotError):
    """The URL is fine but the database cannot be reached or refused the connection."""


def check_url(url: str) -> URL:
    """Parse ``DATABASE_URL``; a ConfigError with the fix when it is not one the bot can use."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL is not a database URL: write {EXAMPLES}") from None
    shown = parsed.render_as_string(hide_password=True)
    driver = parsed.drivername
    if parsed.get_backend_name() in ("postgresql", "postgres") and driver != "postgresql+asyncpg":
        fixed = parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=True)
        raise ConfigError(f"DATABASE_URL {shown}: the bot talks to PostgreSQL through asyncpg: write {fixed}")
    if parsed.get_backend_name() == "sqlite" and driver != "sqlite+aiosqlite":
        fixed = parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=True)
        raise ConfigError(f"DATABASE_URL {shown}: SQLite is used through aiosqlite: write {fixed}")
    if driver not in SUPPORTED:
        raise ConfigError(f"DATABASE_URL {shown}: {parsed.get_backend_name()} is not supported: use {EXAMPLES}")
    if driver == "sqlite+aiosqlite":
        _check_sqlite_path(parsed)
    elif not _asyncpg_installed():
        raise ConfigError(
            f"DATABASE_URL {shown}: PostgreSQL needs the asyncpg driver, which is not installed: "
            "pip install 'supportbot[postgres]' (from a source tree: pip install -e '.[postgres]')"
        )
    return parsed


def _asyncpg_installed() -> bool:
    try:
        importlib.import_module("asyncpg")
    except ImportError:
        return False
    return True


def _check_sqlite_path(parsed: URL) -> None:
    """The file must be writable, or its folder must let the bot create it. Tried for real (a
    file opened, or a temporary one created and removed): permission bits lie to root and on
    read-only mounts."""
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    folder = path.parent if str(path.parent) else Path(".")
    fix = "give the bot's user write access there, or set DATABASE_URL"
    if path.exists():
        try:
            with path.open("r+b"):
                pass
        except OSError as exc:
            raise ConfigError(f"cannot write the SQLite file {path}: {exc.strerror}: {fix}") from None
        return
    if not folder.is_dir():
        raise ConfigError(
            f"cannot create the SQLite file {path}: the folder {folder} does not exist: create it, or set DATABASE_URL"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".supportbot-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot create the SQLite file {path}: the folder {folder}: {exc.strerror}: {fix}") from None


def describe(parsed: URL, exc: BaseException) -> str:
    """One line naming the database, what went wrong, and what to try."""
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    name = type(cause).__name__
    if parsed.get_backend_name() == "sqlite" and "locked" in str(cause):
        return (
            f"the SQLite database {parsed.database} stayed locked by another writer for 30 s: "
            "another supportbot process may be busy or stuck; try again, or use PostgreSQL for several processes"
        )
    if parsed.get_backend_name() == "sqlite":
        return (
            f"cannot open the SQLite database {parsed.database}: {cause}: "
            "check that its folder exists and the bot's user may write there, or set DATABASE_URL"
        )
    if isinstance(cause, socket.gaierror):
        return f"cannot reach PostgreSQL: the host {parsed.host!r} is unknown: check the host in DATABASE_URL"
    if isinstance(cause, ConnectionRefusedError):
        return f"cannot reach PostgreSQL at {where} (connection refused): is it running, and is the port right?"
    if isinstance(cause, TimeoutError | asyncio.TimeoutError):
        return f"cannot reach PostgreSQL at {where}: no answer in {CONNECT_TIMEOUT:.0f} s: check the host and firewall"
    if isinstance(cause, OSError):
        return f"cannot reach PostgreSQL at {where}: {cause.strerror or cause}"
    if name == "InvalidPasswordError":
        return (
            f"PostgreSQL at {where} refused the user {parsed.username!r}: check the user and password in DATABASE_URL"
        )
    if name == "InvalidCatalogNameError":
        return f"PostgreSQL at {where} has no database {parsed.database!r}: create it (createdb) or fix DATABASE_URL"
    return f"PostgreSQL at {where} refused the connection: {str(cause).splitlines()[0] if str(cause) else name}"


async def preflight(url: str) -> None:
    """Check the URL; for PostgreSQL also connect once (``SELECT 1``). A SQLite file is not
    opened here (opening creates it): its folder is checked instead."""
    from bot.store import create_engine

    parsed = check_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    engine = create_engine(url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        _raise_database_problem(parsed, exc)
        raise
    finally:
        await engine.dispose()


def _raise_database_problem(parsed: URL, exc: Exception) -> None:
    """Raise the one-line error for a database failure; return when ``exc`` is something else."""
    database_error = isinstance(exc, OSError | TimeoutError | OperationalError | InterfaceError | DBAPIError)
    if not database_error and not type(exc).__module__.startswith("asyncpg"):
        return
    message = describe(parsed, exc)
    if parsed.get_backend_name() == "sqlite":
        raise ConfigError(message) from None
    raise DatabaseUnavailable(message) from None


async def preflight_then(settings: Settings, work: Coroutine[Any, Any, _T]) -> _T:
    """:func:`preflight` first, then ``work``; a database failure on the way is one line with a
    hint (ConfigError for a SQLite path, DatabaseUnavailable for a server), not a traceback."""
    try:
        await preflight(settings.database_url)
    except BaseException:
        work.close()
        raise
    try:
        return await work
    except (OperationalError, InterfaceError, DBAPIError) as exc:
        _raise_database_problem(make_url(settings.database_url), exc)
        raise
