"""The reads that run all the time read indexes, not whole tables: the sweeper's looks (every
second, on every instance) and a verification's count of recent failed checks. Each statement
is caught as the code runs it and its query plan is read, on SQLite and on PostgreSQL: a missing
index shows as "SCAN <table>" or "Seq Scan" (migration 0015 added the ones these use; `python -m
bench.sweeper_reads` times them on a long history). PostgreSQL's planner reads a small table
whole whatever its indexes, so there sequential scans are switched off for the plan: what is
checked is that an index fits the statement (a partial index only when the statement implies its
condition), not the planner's choice for today's row counts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
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
    # Superseded drafts left in a dead worker's hands: a narrow slice of ix_drafts_work (status,
    # then a lease that ran out), not every superseded draft without a card (ix_drafts_without_card
    # would read all the no-reply and coalesced ones ever written).
    "cards a dead worker may have left on the desk": (
        lambda conn: draft_rows.lost_cards(conn, NOW, 20),
        "ix_drafts_work",
    ),
    "conversations to auto-resolve": (
        lambda conn: life_rows.waiting_since(conn, NOW - timedelta(hours=48), 50),
        "ix_conversations_waiting",
    ),
}


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[str]:
    """An upgraded, empty database: a SQLite file, then PostgreSQL."""
    engine = create_async_engine(database_url)
    await upgrade_database(engine)
    await engine.dispose()
    yield database_url


class Plans:
    """The query plan of every SELECT run on any engine while open."""

    def __init__(self, database: str) -> None:
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

    async def plans(self) -> list[str]:
        if self.database.startswith("sqlite"):
            with sqlite3.connect(self.database.split("///", 1)[1]) as conn:
                return [
                    " ".join(str(step[3]) for step in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters))
                    for statement, parameters in self.statements
                ]
        engine = create_async_engine(self.database)
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SET enable_seqscan = off")
                return [
                    " ".join(str(row[0]) for row in await conn.exec_driver_sql("EXPLAIN " + statement, parameters))
                    for statement, parameters in self.statements
                ]
        finally:
            await engine.dispose()


def reads_index(plan: str, index: str) -> bool:
    """Whether a plan (SQLite's or PostgreSQL's) reads ``index`` and no table whole."""
    return index in plan and "SCAN" not in plan and "Seq Scan" not in plan  # SQLite's "SCAN t", PostgreSQL's


@pytest.mark.parametrize("look", list(SWEEPER_LOOKS))
async def test_each_look_of_the_sweeper_reads_an_index(database: str, look: str) -> None:
    engine = create_async_engine(database)
    try:
        with Plans(database) as caught:
            async with engine.connect() as conn:
                await SWEEPER_LOOKS[look][0](conn)
    finally:
        await engine.dispose()
    [plan] = await caught.plans()
    assert reads_index(plan, SWEEPER_LOOKS[look][1]), plan


async def test_counting_failed_checks_reads_an_index_not_the_whole_audit_trail(database: str) -> None:
    engine = create_async_engine(database)
    db = Database(engine)
    try:
        with Plans(database) as caught:  # the reads have a pool of their own: every engine is heard
            await AttemptLedger(db, parse_policy("").identity, "conv-1").check("desk:mallory", "C-2")
    finally:
        await db.dispose()
        await engine.dispose()
    plans = zip(await caught.plans(), caught.statements, strict=True)
    [plan] = [plan for plan, (statement, _) in plans if "audit_events" in statement]
    assert reads_index(plan, "ix_audit_events_kind_created_at"), plan
