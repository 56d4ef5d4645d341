"""What the sweeper's looks cost on a database with a long history, with and without the indexes
of migration 0015.

The sweeper looks every second (``SWEEP_SECONDS``) for drafts to draft again, cards never posted,
cards showing an older version than their draft's and, with auto-resolve on, conversations waiting
on their customer too long. Each look is timed on a SQLite file holding ``--drafts`` drafts (90 %
sent, 8 % superseded, half of those before their card, 2 % rejected) in a third as many
conversations, once as migrated and once with migration 0015's drafts and conversations indexes
dropped (the schema before). A verification's count of recent failed checks is timed the same way
over ``--drafts`` audit lines. Prints a Markdown table of medians.

    python -m bench.sweeper_reads [--drafts 300000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.identity import AttemptLedger
from bot.policy import parse_policy
from bot.store import Database, utcnow
from bot.store import drafts as draft_rows
from bot.store import life as life_rows
from bot.store.engine import upgrade_database

OLD_SCHEMA = (
    "DROP INDEX ix_drafts_without_card",
    "DROP INDEX ix_drafts_stale_cards",
    "DROP INDEX ix_conversations_waiting",
    "DROP INDEX ix_audit_events_kind_created_at",
)
_OVERRIDES = {
    "id": "printf('%032d', n)",
    "thread_key": "printf('k%d', n)",
    "conversation_id": "printf('%032d', n / 3)",
    "owner": "'bot'",
    "place": "'public'",
    "kind": "CASE WHEN n % 50 = 0 THEN 'verify_failed' ELSE 'decision' END",
}
_BY_TABLE = {
    "drafts": {
        "status": "CASE WHEN n % 100 < 90 THEN 'sent' WHEN n % 100 < 98 THEN 'superseded' ELSE 'rejected' END",
        "card_ref": "CASE WHEN n % 100 >= 94 AND n % 100 < 98 THEN '' ELSE printf('card-%d', n) END",
    },
    "conversations": {"status": "'resolved'"},
}


def _value(table: str, name: str, sql_type: str) -> str:
    if name in _BY_TABLE.get(table, {}):
        return _BY_TABLE[table][name]
    if name in _OVERRIDES:
        return _OVERRIDES[name]
    kind = sql_type.upper()
    if any(word in kind for word in ("INT", "BOOL", "FLOAT")):
        return "1"
    if "DATETIME" in kind or "TIMESTAMP" in kind:
        return "'2026-01-01 00:00:00.000000'"
    return "'{}'" if "JSON" in kind else "''"


def fill(path: Path, drafts: int) -> None:
    """``drafts`` drafts, a third as many conversations, as many audit lines (raw SQL: fast)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys=OFF")
    for table, count in (("conversations", drafts // 3), ("drafts", drafts), ("audit_events", drafts)):
        columns = [(row[1], row[2]) for row in conn.execute(f"PRAGMA table_info({table})")]
        names = ",".join(name for name, _ in columns)
        values = ",".join(_value(table, name, sql_type) for name, sql_type in columns)
        conn.execute(
            f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {count}) "
            f"INSERT INTO {table} ({names}) SELECT {values} FROM s"
        )
    conn.commit()
    conn.close()


async def median_ms(call: Callable[[], Awaitable[object]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(path: Path, repeat: int) -> dict[str, float]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    db = Database(engine)
    now = utcnow()
    ledger = AttemptLedger(db, parse_policy("").identity, "conv-1")
    try:
        async with engine.connect() as conn:
            looks: dict[str, Callable[[AsyncConnection], Awaitable[object]]] = {
                "drafts to draft again": lambda c: draft_rows.drafting_due(c, now, 50),
                "cards never posted": lambda c: draft_rows.cards_missing(c, now, 20),
                "cards showing an old version": lambda c: draft_rows.cards_stale(c, now - timedelta(seconds=2), 20),
                "conversations to auto-resolve": lambda c: life_rows.waiting_since(c, now - timedelta(hours=48), 50),
            }
            result = {name: await median_ms(lambda look=look: look(conn), repeat) for name, look in looks.items()}
        result["a verification's failed-check count"] = await median_ms(
            lambda: ledger.check("desk:mallory", "C-2"), repeat
        )
        return result
    finally:
        await db.dispose()
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drafts", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "history.db"
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        await upgrade_database(engine)
        await engine.dispose()
        fill(path, args.drafts)
        await measure(path, 1)  # the file into the page cache: both runs start warm
        now = await measure(path, args.repeat)
        with sqlite3.connect(path) as conn:
            for statement in OLD_SCHEMA:
                conn.execute(statement)
        before = await measure(path, args.repeat)
    sizes = f"{args.drafts:,} drafts, {args.drafts // 3:,} conversations, {args.drafts:,} audit lines"
    print(f"{sizes} (SQLite); median of {args.repeat}\n")
    print("| look | before 0015 (ms) | with 0015 (ms) | ratio |")
    print("| :-- | --: | --: | --: |")
    for name, ms in now.items():
        print(f"| {name} | {before[name]:.2f} | {ms:.2f} | {before[name] / ms:.0f}× |")
    sweep_before = sum(v for k, v in before.items() if "verification" not in k)
    sweep_now = sum(v for k, v in now.items() if "verification" not in k)
    print(f"| **one sweep (every second)** | {sweep_before:.2f} | {sweep_now:.2f} | {sweep_before / sweep_now:.0f}× |")


if __name__ == "__main__":
    asyncio.run(main())
