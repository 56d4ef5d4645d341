"""Shared fixtures: fakes on loopback and the real bot started against them.

PostgreSQL tests run when ``SUPPORTBOT_TEST_POSTGRES_URL`` is set (``.ci/run`` sets it) or,
without it, when a local server answers with a database named ``supportbot_test`` (so no server
is ever picked up by itself): ``createdb supportbot_test`` is enough on a developer's machine with
a local server, and ``SUPPORTBOT_TEST_POSTGRES=off`` turns the look-up off. Each test creates a
database of its own on that server and drops it after, so the tests run in parallel workers
(pytest-xdist, ``-n auto`` in ``pyproject.toml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import KIMI_KEY, SLACK_TOKEN, Harness, running_bot
from tools.orders import metadata

LOCAL_POSTGRES = ("127.0.0.1", 5432)
LOCAL_TEST_DATABASE = "supportbot_test"


def local_postgres_url() -> str | None:
    """The local ``supportbot_test`` database when a server on 127.0.0.1:5432 lets us in."""
    try:
        with socket.create_connection(LOCAL_POSTGRES, timeout=0.3):
            pass
    except OSError:
        return None
    user = os.environ.get("PGUSER") or os.environ.get("USER") or "postgres"
    url = f"postgresql+asyncpg://{user}@{LOCAL_POSTGRES[0]}:{LOCAL_POSTGRES[1]}/{LOCAL_TEST_DATABASE}"

    async def reachable() -> bool:
        engine = create_async_engine(url)
        try:
            async with asyncio.timeout(3), engine.connect():
                return True
        except Exception:
            return False
        finally:
            await engine.dispose()

    return url if asyncio.run(reachable()) else None


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core, up to eight (never fewer than one per core). The tests
    wait on sockets, subprocesses and databases far more than they compute: on a 2-core machine
    the whole suite took 14:41 with one worker per core and 9:41 with two, all green."""
    cores = os.cpu_count() or 1
    return max(cores, min(2 * cores, 8))


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("SUPPORTBOT_TEST_POSTGRES_URL") and os.environ.get("SUPPORTBOT_TEST_POSTGRES") != "off":
        found = local_postgres_url()
        if found:
            os.environ["SUPPORTBOT_TEST_POSTGRES_URL"] = found


@pytest.fixture(autouse=True)
async def no_unobserved_task_failures() -> AsyncIterator[None]:
    """Fail any test that leaves a background task whose exception nobody retrieved: every
    failure must reach the supervisor (logged, counted), never vanish."""
    loop = asyncio.get_running_loop()
    unobserved: list[str] = []
    previous = loop.get_exception_handler()

    def handler(running: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if "never retrieved" in str(context.get("message", "")):
            unobserved.append(f"{context.get('message')}: {context.get('exception')!r} in {context.get('future')}")
        elif previous is not None:
            previous(running, context)
        else:
            running.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield
    gc.collect()
    loop.set_exception_handler(previous)
    assert not unobserved, "background work failed unobserved:\n" + "\n".join(unobserved)


@pytest.fixture(params=["sqlite", "postgresql"])
async def order_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty order store on SQLite, and on PostgreSQL when SUPPORTBOT_TEST_POSTGRES_URL is set
    (a database of its own: tests run in parallel workers)."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
        else:
            url = await stack.enter_async_context(fresh_postgres_database())
        engine = create_async_engine(url)
        stack.push_async_callback(engine.dispose)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield engine


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """The URL of a fresh, empty database on the SUPPORTBOT_TEST_POSTGRES_URL server, dropped after."""
    async with fresh_postgres_database() as url:
        yield url


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new database on the SUPPORTBOT_TEST_POSTGRES_URL server (skips the test without one),
    dropped after."""
    server = os.environ.get("SUPPORTBOT_TEST_POSTGRES_URL", "")
    if not server:
        pytest.skip("set SUPPORTBOT_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)")
    name = f"supportbot_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
async def kimi() -> AsyncIterator[FakeKimi]:
    async with FakeKimi(api_key=KIMI_KEY) as fake:
        yield fake


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=SLACK_TOKEN) as fake:
        yield fake


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file in ``tmp_path``, then a fresh PostgreSQL database (``database``: skipped
    without SUPPORTBOT_TEST_POSTGRES_URL): a scenario using it runs on both."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'supportbot.db'}"
    return str(request.getfixturevalue("database"))


@pytest.fixture
async def harness(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> AsyncIterator[Harness]:
    async with running_bot(tmp_path, kimi, slack) as running:
        yield running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line naming what was skipped and how to enable it (each skip reason says how)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: Counter[str] = Counter()
    for report in skipped:
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    parts = "; ".join(f"{count} × {reason}" for reason, count in reasons.most_common())
    terminalreporter.write_line(f"skipped {len(skipped)} tests: {parts}", yellow=True)
