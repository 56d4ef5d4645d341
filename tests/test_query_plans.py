"""The reads that run all the time read indexes, not whole tables: the sweeper's looks (every
second, on every instance) and a verification's count of recent failed checks. Each statement
is caught as the code runs it and SQLite's query plan for it is read: a missing index shows as
"SCAN <table>" (migration 0015 added the ones these use; `python -m bench.sweeper_reads` times
them on a long history)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.identity import AttemptLedger
from bot.policy import parse_policy
from bot.store import Database, utcnow
from bot.store import drafts as draft_rows
from bot.store import life as life_rows
from bot.store.engine import upgrade_database

NOW = utcnow()
#: Each look, and the index that narrows it to the rows it wants (drafts' status alone does not:
#: most drafts are sent, and a card state is any state but drafting and superseded).
SWEEPER_LOOKS: dict[str, tuple[Callable[[AsyncConnection], Awaitable[object]], str]] = {
    "drafts to draft again": (lambda conn: draft_rows.drafting_due(conn, NOW, 50), "ix_drafts_"),  # status or work
    "cards never posted": (lambda conn: draft_rows.cards_missing(conn, NOW, 20), "ix_drafts_without_card"),
    "cards showing an old version": (
        lambda conn: draft_rows.cards_stale(conn, NOW - timedelta(seconds=2), 20),
        "ix_drafts_stale_cards",
    ),
    "conversations to auto-resolve": (
        lambda conn: life_rows.waiting_since(conn, NOW - timedelta(hours=48), 50),
        "ix_conversations_waiting",
    ),
}


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "bot.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade_database(engine)
    await engine.dispose()
    yield path


class Plans:
    """The query plan of every SELECT run on any engine while open."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.statements: list[tuple[str, Any]] = []

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, parameters))

    def __enter__(self) -> Plans:
        event.listen(Engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._seen)

    def plans(self) -> list[str]:
        with sqlite3.connect(self.database) as conn:
            return [
                " ".join(str(step[3]) for step in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters))
                for statement, parameters in self.statements
            ]


@pytest.mark.parametrize("look", list(SWEEPER_LOOKS))
async def test_each_look_of_the_sweeper_reads_an_index(database: Path, look: str) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    try:
        with Plans(database) as caught:
            async with engine.connect() as conn:
                await SWEEPER_LOOKS[look][0](conn)
    finally:
        await engine.dispose()
    [plan] = caught.plans()
    assert f"USING INDEX {SWEEPER_LOOKS[look][1]}" in plan and "SCAN" not in plan, plan


async def test_counting_failed_checks_reads_an_index_not_the_whole_audit_trail(database: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    db = Database(engine)
    try:
        with Plans(database) as caught:  # the reads have a pool of their own: every engine is heard
            await AttemptLedger(db, parse_policy("").identity, "conv-1").check("desk:mallory", "C-2")
    finally:
        await db.dispose()
        await engine.dispose()
    plans = zip(caught.plans(), caught.statements, strict=True)
    [plan] = [plan for plan, (statement, _) in plans if "audit_events" in statement]
    assert "ix_audit_events_kind_created_at" in plan, plan
