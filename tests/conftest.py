"""Shared fixtures: fakes on loopback and the real bot started against them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import KIMI_KEY, SLACK_TOKEN, Harness, running_bot
from tools.orders import metadata


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
