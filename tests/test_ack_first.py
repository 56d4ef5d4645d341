"""The ack comes first (issue 20, "The ack first"): a transaction an ack waits for (a stored
customer message, a decided click) takes SQLite's one writer ahead of every queued background
transaction (drafts' claims and outcomes, card bookkeeping, deliveries), and a waiter that gives
up (a click's timed-out decision) never wedges the writer for the others."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from sqlalchemy import text

from bot.store import Database, create_engine
from tests.fakes.kimi import FakeKimi, Hang
from tests.fakes.slack import FakeSlack
from tests.harness import running_bot, until


async def _database(tmp_path: Path) -> Database:
    db = Database(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'supportbot.db'}"))
    async with db.write() as conn:
        await conn.execute(text("CREATE TABLE written (n INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT)"))
    return db


async def _write(db: Database, who: str, *, urgent: bool = False, hold: asyncio.Event | None = None) -> None:
    async with db.write(urgent=urgent) as conn:
        await conn.execute(text("INSERT INTO written (who) VALUES (:who)"), {"who": who})
        if hold is not None:
            await hold.wait()


async def _order(db: Database) -> list[str]:
    async with db.read() as conn:
        return [row.who for row in await conn.execute(text("SELECT who FROM written ORDER BY n"))]


async def test_an_ack_takes_the_writer_ahead_of_queued_background_transactions(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    try:
        release = asyncio.Event()
        running = asyncio.create_task(_write(db, "card in flight", hold=release))
        await until(lambda: db.writer.waiting == (0, 0) and not running.done(), "the background write holds the writer")
        background = [asyncio.create_task(_write(db, f"draft {i}")) for i in range(5)]
        await until(lambda: db.writer.waiting == (0, 5), "five background writes queued")
        acks = [asyncio.create_task(_write(db, f"ack {i}", urgent=True)) for i in range(2)]
        await until(lambda: db.writer.waiting == (2, 5), "two acks queued behind them")

        release.set()
        await asyncio.gather(running, *background, *acks)

        # The transaction already running finishes; then the acks, in their order; then the rest.
        assert await _order(db) == ["card in flight", "ack 0", "ack 1"] + [f"draft {i}" for i in range(5)]
    finally:
        await db.dispose()


async def test_a_customer_message_is_stored_before_a_finished_draft_queued_ahead_of_it(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """Through the running bot: a draft's outcome waits for the writer (a long card transaction
    holds it); a new customer message arrives behind it. The message is stored, and its event
    acknowledged, before the draft's outcome is recorded."""
    # Nothing else writes meanwhile: no sweeps or delivery passes, no lease renewals.
    async with running_bot(tmp_path, kimi, slack, sweep_seconds=3600, work_lease_seconds=60) as harness:
        db = harness.bot.db
        kimi.script(Hang(1.0))  # the first draft's one model call: time to line the writes up
        await harness.mention("Do you ship to Canada?", ts="1700000001.000100")
        await until(lambda: any(r.path.endswith("/chat/completions") for r in kimi.requests), "the model asked")
        async with db.writer.turn(urgent=False):  # a background transaction in flight
            await until(lambda: kimi.completions and sum(db.writer.waiting) == 1, "the draft's outcome waits")
            second = asyncio.create_task(harness.mention("Do you sell gift cards?", ts="1700000002.000100"))
            await until(lambda: sum(db.writer.waiting) == 2, "the second message waits behind it")
        await second  # acknowledged (200)
        await harness.wait_cards(1)
        async with db.read() as conn:
            trail = [row.kind for row in await conn.execute(text("SELECT kind FROM audit_events ORDER BY id"))]
        assert trail[:3] == ["message", "message", "draft"], trail


async def test_an_ack_that_gives_up_while_queued_leaves_the_writer_to_the_others(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    try:
        async with db.writer.turn(urgent=False):  # a background transaction in flight
            queued = asyncio.create_task(_write(db, "draft"))
            timed_out = asyncio.create_task(_write(db, "click that timed out", urgent=True))
            await until(lambda: db.writer.waiting == (1, 1), "an ack and a draft queued")
            timed_out.cancel()
            await until(lambda: db.writer.waiting == (0, 1), "the cancelled ack left the queue")
            handed = asyncio.create_task(_write(db, "ack cancelled on its turn", urgent=True))
            await until(lambda: db.writer.waiting == (1, 1), "another ack queued")
        # The turn was just handed to that ack; it is cancelled before it could take it.
        handed.cancel()
        await asyncio.wait_for(queued, 10)  # the writer was passed on, not lost
        await _write(db, "next ack", urgent=True)

        assert await _order(db) == ["draft", "next ack"]
        assert handed.cancelled() and timed_out.cancelled()
        assert db.writer.waiting == (0, 0)
    finally:
        await db.dispose()


async def test_the_write_ahead_log_is_copied_into_the_database_beside_the_writer(tmp_path: Path) -> None:
    """SQLite's own checkpoint runs inside the commit that crosses 1,000 pages, holding the
    writer (and every ack queued behind it) for the copy and its fsync; here the bot's
    checkpointer does it from a connection of its own, and the writer only past 10,000 pages."""
    db = await _database(tmp_path)
    checkpoints = asyncio.create_task(db.checkpoint_forever(every=0.05))
    try:
        for who in ("ack 0", "draft 0", "ack 1"):
            await _write(db, who, urgent=who.startswith("ack"))

        def in_the_database_file() -> list[str]:
            # The database file alone, without its log: what a checkpoint has copied.
            copy = tmp_path / "copy.db"
            copy.write_bytes((tmp_path / "supportbot.db").read_bytes())
            try:
                with contextlib.closing(sqlite3.connect(copy)) as conn:
                    return [row[0] for row in conn.execute("SELECT who FROM written ORDER BY n")]
            except sqlite3.DatabaseError:
                return []  # copied halfway through a checkpoint

        everything = ["ack 0", "draft 0", "ack 1"]
        await until(lambda: in_the_database_file() == everything, "all three rows copied into the database file")
    finally:
        checkpoints.cancel()
        await db.dispose()


async def test_on_postgresql_a_message_is_stored_while_background_work_holds_every_pooled_connection(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database: str
) -> None:
    """PostgreSQL has no single writer, but a pool: 32 drafting workers, the dispatcher and the
    card work can hold all of its connections. The ack has connections of its own."""
    async with running_bot(tmp_path, kimi, slack, database_url=database) as harness:
        engine = harness.bot.db.engine
        pool = engine.sync_engine.pool
        held = [await engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
        try:
            await asyncio.wait_for(harness.mention("Do you ship to Canada?"), 10)  # acknowledged (200)
            outside = create_engine(database)
            try:
                async with outside.connect() as conn:
                    stored = await conn.scalar(text("SELECT count(*) FROM messages"))
            finally:
                await outside.dispose()
        finally:
            for conn in held:
                await conn.close()
        assert stored == 1
        await harness.wait_cards(1)  # drafting goes on once the pool has connections again
