"""Issue 20, point 6: ``supportbot forget`` erases one person everywhere the bot keeps them, while
the bot runs: afterwards no table holds their name, e-mail, words or image; their open draft's
card is redrawn as erased; other customers keep theirs; a second run erases nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.events import Attachment
from bot.ports import CardState
from bot.store import ALL_METADATA
from bot.testing import TestDesk
from tests.desks import CallTools, FakeKimi, Reply, open_desk
from tests.fakes.files import png
from tests.harness import sample_orders
from tests.processes import supportbot

PNG = png(16, 16)  # a real image: one the bot cannot read is refused, never stored

#: What must be gone from every table once Ana is forgotten.
ANA = (
    "Ana Diaz",
    "ana@shop-mail.example",
    "ana.diaz@chat.example",
    "10115",
    "broke",
    "leg is cracked",
    "desk:ana",
    "receipt",
)


@pytest.fixture
async def desk(tmp_path: Path, kimi: FakeKimi, database_url: str) -> AsyncIterator[TestDesk]:
    async with open_desk(tmp_path, kimi, database_url=database_url, sweep_seconds=0.2) as opened:
        orders = [dict(r, customer_accounts="") for r in sample_orders()]
        ana = {"customer_email": "ana@shop-mail.example", "customer_postal_code": "10115"}
        await opened.import_orders(
            [dict(r, customer_accounts=opened.account("ana"), **ana) if r["order_id"] == "40021" else r for r in orders]
        )
        yield opened


async def everything_stored(desk: TestDesk) -> list[str | bytes]:
    """Every value of every table, as text (bytes as they are)."""
    values: list[str | bytes] = []
    async with desk.bot.engine.connect() as conn:
        for metadata in ALL_METADATA:
            for table in metadata.sorted_tables:
                for row in await conn.execute(select(table)):
                    values.extend(v if isinstance(v, bytes) else str(v) for v in row)
    return values


def mentions(values: list[str | bytes], needle: str) -> bool:
    return any((needle.encode() in v) if isinstance(v, bytes) else (needle in v) for v in values)


async def forget(desk: TestDesk, *args: str) -> Any:
    done = await asyncio.to_thread(
        supportbot, desk.bot.settings.policy_file.parent, "forget", *args, DATABASE_URL=desk.bot.settings.database_url
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def count_of(output: str, kind: str) -> int:
    [line] = [line for line in output.splitlines() if line.strip().startswith(kind + "  ")]
    return int(line.split()[-1])


async def test_forget_erases_a_customer_everywhere_while_the_bot_runs_and_says_zero_the_second_time(
    desk: TestDesk, kimi: FakeKimi
) -> None:
    kimi.script(
        CallTools([("get_order_status", {"order_id": "40021"})]),
        Reply("Sorry about your Desk chair, Ana Diaz; order 40021 was delivered."),
        CallTools([("propose_refund", {"order_id": "40021", "amount": "50.00", "reason": "Ana Diaz: leg is cracked"})]),
        Reply("Thanks Ana Diaz, I've asked the team to refund 50.00 USD."),
        Reply("Bob, your mug ships tomorrow."),
    )
    ana = desk.customer("ana", display_name="Ana Diaz", email="ana.diaz@chat.example")
    said = await ana.says(
        "I'm Ana Diaz (postal code 10115): my chair from order 40021 broke",
        attachments=[Attachment("receipt.png", "image/png", len(PNG), data=PNG)],
    )
    await desk.agent("agent").approve(await desk.card_for(said))
    await desk.reply_to(said)
    again = await ana.says("the chair's leg is cracked, can you send a new chair?", after=said)
    open_card = await desk.card_for(again)  # awaiting review when she is forgotten
    assert [p.summary for p in open_card.proposals] and "50.00" in open_card.proposals[0].summary
    bob = desk.customer("bob", display_name="Bob Stone")
    bob_card = await desk.card_for(await bob.says("where is my blue mug, order #W2611340?"))
    await desk.settle()
    before = await everything_stored(desk)
    assert all(mentions(before, needle) for needle in ANA)

    output = await forget(desk, "--account", desk.account("ana"))

    assert count_of(output, "conversations") == 1
    assert count_of(output, "messages") == 3  # her two messages and the reply she got
    assert count_of(output, "images") == 1
    assert count_of(output, "open drafts") == 1
    assert count_of(output, "proposals") == 1
    assert count_of(output, "orders") == 1
    assert count_of(output, "account links") == 1
    assert "2 review card(s)" in output
    erased_card = await desk.latest(open_card, lambda c: c.customer_text == "[erased]")
    assert erased_card.state is CardState.SUPERSEDED and erased_card.draft_text == "[erased]"
    assert "Ana Diaz" not in str(erased_card)

    after = await everything_stored(desk)
    left = [needle for needle in ANA if mentions(after, needle)]
    assert left == []
    assert mentions(after, "Bob Stone") and mentions(after, "blue mug")  # nobody else is touched
    assert mentions(after, "Kim Lee")
    assert bob_card.actionable and (await desk.latest(bob_card)).actionable

    again_output = await forget(desk, "--account", desk.account("ana"))
    assert all(count_of(again_output, kind) == 0 for kind in ("conversations", "messages", "images", "orders"))
    assert "review card" not in again_output
    by_customer = await forget(desk, "--customer", "C-2")
    assert count_of(by_customer, "messages") == 0 and count_of(by_customer, "orders") == 0


async def test_forget_also_drops_the_kept_translations_of_a_customers_words(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    """A German customer on an English desk: their message and the draft were translated for the
    card and kept (one model call per text). Forgetting them erases those translations too (they are
    their words, in another language), while another customer's stay."""
    policy = '[approvers]\nagents = ["agent"]\n[desk]\nlanguage = "en"\n'
    async with open_desk(tmp_path, kimi, policy=policy, database_url=database_url) as desk:
        kimi.script(
            Reply("Es tut uns leid, Frau Weber! Ihr Stuhl ist unterwegs."),
            Reply("My chair from Weber Moebel has not arrived yet, where is it?"),
            Reply("We are sorry, Ms Weber! Your chair is on its way."),
            Reply("Ihre Tasse kommt morgen an."),
            Reply("Where is my blue mug? It has not arrived yet."),
            Reply("Your mug arrives tomorrow."),
        )
        await desk.card_for(
            await desk.customer("greta").says("Mein Stuhl von Weber Möbel ist nicht angekommen, wo ist er?")
        )
        await desk.card_for(
            await desk.customer("jonas").says("Wo ist meine blaue Tasse? Sie ist noch nicht angekommen.")
        )
        await desk.settle()
        before = await everything_stored(desk)
        assert mentions(before, "Weber Moebel") and mentions(before, "Ms Weber"), "the card's translations are kept"

        output = await forget(desk, "--account", desk.account("greta"))
        assert count_of(output, "messages") == 1

        after = await everything_stored(desk)
        assert not mentions(after, "Weber"), "neither her words nor the draft to her, in any language"
        assert mentions(after, "Where is my blue mug?") and mentions(after, "Your mug arrives tomorrow.")
