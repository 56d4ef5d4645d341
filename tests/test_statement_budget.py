"""A card for a quarter of the work: the path message → draft → card costs at most 4
transactions and 15 SQL statements (counted with SQLAlchemy's engine events), and the ack
itself is one transaction. The Slack Home's read of who has it open (one statement, once per burst
of card changes, on the read pool) is counted apart: at most one."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import running_bot, wait_until


@dataclass
class SqlCount:
    """Statements and transactions seen on some engines since the last :meth:`take`. A
    transaction counts where its first statement runs (one begun but idle has cost nothing yet);
    the Slack Home's reads of who has it open are kept apart, in ``homes``."""

    statements: list[str] = field(default_factory=list)
    homes: list[str] = field(default_factory=list)
    transactions: int = 0
    _open: dict[int, int] = field(default_factory=dict)  # connection -> its transaction
    _counted: set[int] = field(default_factory=set)
    _begun: int = 0

    def begin(self, connection: object) -> None:
        self._begun += 1
        self._open[id(connection)] = self._begun

    def statement(self, connection: object, text: str) -> None:
        if "home_viewers" in text:
            self.homes.append(text)
            return
        self.statements.append(text)
        transaction = self._open.get(id(connection), 0)
        if transaction not in self._counted:
            self._counted.add(transaction)
            self.transactions += 1

    def take(self) -> tuple[int, list[str]]:
        taken = (self.transactions, list(self.statements))
        self.statements.clear()
        self.transactions = 0
        return taken


@contextmanager
def counting() -> Iterator[SqlCount]:
    """Count on every engine (installed before the bot starts: listeners must not be added
    while engines are in use)."""
    count = SqlCount()

    def on_statement(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            count.statement(conn, statement.split("\n", 1)[0][:80])

    def on_begin(conn: Any) -> None:
        count.begin(conn)

    event.listen(Engine, "before_cursor_execute", on_statement)
    event.listen(Engine, "begin", on_begin)
    try:
        yield count
    finally:
        event.remove(Engine, "before_cursor_execute", on_statement)
        event.remove(Engine, "begin", on_begin)


async def card_recorded(database: Path) -> None:
    """Wait (through a connection of our own, not counted) until the card's row is written."""
    for _ in range(500):
        with sqlite3.connect(database) as conn:
            if conn.execute("SELECT count(*) FROM drafts WHERE card_ref != '' AND lease_owner = ''").fetchone()[0]:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the card was never recorded")


async def test_a_question_becomes_a_card_in_four_transactions_and_fifteen_statements(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    # Background passes (sweeper, delivery polling) are slowed down so only the path is counted.
    with counting() as count:
        async with running_bot(tmp_path, kimi, slack, sweep_seconds=3600) as harness:
            assert harness.bot.core is not None
            kimi.script(Reply("Your order is on its way with UPS."))
            core = harness.bot.core
            # The sweeper's first pass wakes the dispatcher once more: wait for that pass too, and
            # for the retention job's first pass, so only the path is counted.
            await wait_until(
                lambda: [1] if core.sweeper.passes and core.dispatcher.passes >= 2 and core.retention.passes else []
            )
            count.take()  # the start-up passes are over
            await harness.mention("Hi, where is my order #W2611340?")
            ack_transactions, ack_statements = count.take()
            await harness.wait_cards(1)
            await card_recorded(tmp_path / "supportbot.db")
            path_transactions, path_statements = count.take()
    assert ack_statements[0].startswith("INSERT INTO processed_events"), "the ack starts the path"
    assert len(count.homes) <= 1, count.homes  # after the card, if it ran by the end: never more
    assert ack_transactions + path_transactions <= 4, ack_statements + path_statements
    assert len(ack_statements) + len(path_statements) <= 15, ack_statements + path_statements
