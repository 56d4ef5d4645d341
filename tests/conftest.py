"""Shared fixtures: fakes on loopback and the real bot started against them."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import KIMI_KEY, SLACK_TOKEN, Harness, running_bot
from tools.orders import metadata


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
    """An empty order store on SQLite, and on PostgreSQL when SUPPORTBOT_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    else:
        url = os.environ.get("SUPPORTBOT_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("no PostgreSQL: set SUPPORTBOT_TEST_POSTGRES_URL (.ci/run starts a server and sets it)")
        engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
async def kimi() -> AsyncIterator[FakeKimi]:
    async with FakeKimi(api_key=KIMI_KEY) as fake:
        yield fake


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=SLACK_TOKEN) as fake:
        yield fake


@pytest.fixture
async def harness(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> AsyncIterator[Harness]:
    async with running_bot(tmp_path, kimi, slack) as running:
        yield running
