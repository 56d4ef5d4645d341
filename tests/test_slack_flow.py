"""Issue 2: a Slack customer's question becomes a Kimi draft with an order lookup, approved by
an agent's button, posted once. The real bot over HTTP; fake Slack and Kimi on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from sqlalchemy import func, select

from bot.prompt import untrusted
from bot.store import Draft, ToolCall, UsageRecord, sessionmaker
from tests.fakes.kimi import CallTools, FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention, event_body, sign
from tests.harness import (
    CUSTOMER_CHANNEL,
    SIGNING_SECRET,
    Harness,
    card_text,
    draft_id_of,
    running_bot,
    sample_orders,
    wait_until,
)
from tools.orders import order_refunds_table


async def test_order_question_becomes_a_card_and_one_approved_reply(harness: Harness) -> None:
    # A customer asks about their order in a channel.
    envelope = await harness.mention("Hi, where is my order #W2611340?")
    thread_ts = envelope["event"]["ts"]

    # One card lands in the review channel, with the tool's data and the buttons.
    [card] = await harness.wait_cards(1)
    text = card_text(card)
    assert "where is my order #W2611340?" in text
    assert "get_order_status" in text and "UPS" in text and "1Z999AA10123456784" in text
    assert "approve_draft" in text and "edit_draft" in text and "reject_draft" in text
    assert not harness.replies(thread_ts), "nothing reaches the customer before approval"
    [pending] = await harness.slack.wait_for("reactions.add")
    assert (pending.params["name"], pending.params["timestamp"]) == ("eyes", thread_ts), "the customer sees 👀"

    # The agent approves: the draft appears once in the customer's thread.
    draft_id = draft_id_of(card)
    await harness.click("approve_draft", draft_id)
    [reply] = await harness.wait_replies(thread_ts)
    assert "1Z999AA10123456784" in reply.params["text"], "the reply carries the draft with the tool's data"
    assert reply.params["channel"] == CUSTOMER_CHANNEL
    [done] = await harness.slack.wait_for("reactions.remove")
    assert done.params["timestamp"] == thread_ts

    # The card is updated: no buttons, who approved.
    last = await harness.wait_card_update(draft_id, "sent to the customer")
    assert "approve_draft" not in card_text(last)
    assert "<@U333>" in card_text(last)
    assert len(harness.replies(thread_ts)) == 1


async def test_a_redelivered_event_makes_one_card(harness: Harness) -> None:
    envelope = app_mention("<@UBOT> where is order 40021?")
    for retry in (None, 1, 2):
        response = await harness.sender.event(envelope, retry_num=retry)
        assert response.status_code == 200
    await harness.wait_cards(1)
    await harness.settle()
    assert len(harness.cards()) == 1
    assert len(harness.kimi.completions) == 2, "one draft: a tool call and a final answer"


async def test_three_simultaneous_approvals_post_one_reply(harness: Harness) -> None:
    envelope = await harness.mention("status of ORD-77 please")
    [card] = await harness.wait_cards(1)
    draft_id = draft_id_of(card)

    await asyncio.gather(
        harness.click("approve_draft", draft_id, user="U333"),
        harness.click("approve_draft", draft_id, user="U444"),
        harness.click("approve_draft", draft_id, user="U555"),
    )
    told = await wait_until(lambda: [t for t in harness.ephemerals() if "already approved" in t], 2)
    assert len(told) == 2, told
    await harness.wait_replies(envelope["event"]["ts"])
    await harness.settle()
    assert len(harness.replies(envelope["event"]["ts"])) == 1


async def test_edit_posts_the_edited_text(harness: Harness) -> None:
    envelope = await harness.mention("where is #W2611340")
    [card] = await harness.wait_cards(1)
    draft_id = draft_id_of(card)

    await harness.click("edit_draft", draft_id)
    [opened] = await harness.slack.wait_for("views.open")
    view = opened.params["view"]
    assert view["blocks"][0]["element"]["initial_value"].startswith("Thanks for waiting")

    response = await harness.submit(
        "edit_draft_modal", draft_id, {"draft_block": {"draft_input": "Your mug ships today. — Sam"}}
    )
    assert response.status_code == 200
    [reply] = await harness.wait_replies(envelope["event"]["ts"])
    assert reply.params["text"] == "Your mug ships today. — Sam"


async def test_an_empty_edit_is_refused_in_the_modal(harness: Harness) -> None:
    await harness.mention("where is #W2611340")
    [card] = await harness.wait_cards(1)
    response = await harness.submit("edit_draft_modal", draft_id_of(card), {"draft_block": {"draft_input": "   "}})
    assert response.json()["response_action"] == "errors"
    await harness.settle()
    assert not harness.replies()


async def test_reject_posts_nothing(harness: Harness) -> None:
    envelope = await harness.mention("where is #W2611340")
    [card] = await harness.wait_cards(1)
    draft_id = draft_id_of(card)
    await harness.click("reject_draft", draft_id)
    await harness.settle()
    assert not harness.replies(envelope["event"]["ts"])
    await harness.wait_card_update(draft_id, "Rejected by")
    await harness.click("approve_draft", draft_id, user="U444")
    await wait_until(lambda: [t for t in harness.ephemerals("U444") if "already rejected" in t])
    await harness.settle()
    assert not harness.replies(envelope["event"]["ts"])


async def test_forged_and_stale_signatures_get_401(harness: Harness) -> None:
    body = event_body(app_mention("<@UBOT> where is 40021"))
    forged = sign(body, "not-the-secret", content_type="application/json")
    assert (await harness.sender.raw(body, forged)).status_code == 401
    stale = sign(body, SIGNING_SECRET, int(time.time()) - 600, "application/json")
    assert (await harness.sender.raw(body, stale)).status_code == 401
    # A genuine question afterwards gets its card: the refused ones had their chance before it.
    await harness.mention("is the shop open on Sunday?")
    [card] = await harness.wait_cards(1)
    await harness.settle()
    assert len(harness.cards()) == 1 and "Sunday" in card_text(card)
    assert "40021" not in json.dumps(harness.kimi.completions)


async def test_thread_replies_continue_the_conversation_without_a_mention(harness: Harness) -> None:
    envelope = await harness.mention("where is #W2611340")
    await harness.wait_cards(1)
    thread_ts = envelope["event"]["ts"]
    await harness.reply_in_thread("and can I change the address?", thread_ts)
    cards = await harness.wait_cards(2)
    assert "change the address" in card_text(cards[1])
    # The first draft is superseded by the newer message.
    await harness.wait_card_update(draft_id_of(cards[0]), "Superseded")

    # A reply in some other thread the bot has no conversation in is ignored.
    await harness.reply_in_thread("unrelated chatter", "1600000000.000100")
    await harness.settle()
    assert len(harness.cards()) == 2


async def test_everything_is_recorded(harness: Harness) -> None:
    await harness.mention("where is #W2611340")
    [card] = await harness.wait_cards(1)
    await harness.click("approve_draft", draft_id_of(card))
    await harness.wait_replies(None)
    await harness.settle()
    sessions = sessionmaker(harness.bot.engine)
    async with sessions() as session:
        draft = await session.scalar(select(Draft))
        assert draft is not None and draft.status == "sent" and draft.decided_by == "<@U333>"
        assert draft.prompt_tokens > 0
        assert await session.scalar(select(func.count()).select_from(ToolCall)) == 1
        ledger = list(await session.scalars(select(UsageRecord).order_by(UsageRecord.id)))
    assert len(ledger) == len(harness.kimi.completions) == 2, "one usage row per model call"
    assert all(row.purpose == "drafting" and row.model == "kimi-k2.5" and row.cost_microusd > 0 for row in ledger)
    assert sum(row.prompt_tokens for row in ledger) == draft.prompt_tokens


async def test_readyz_reports_the_database_and_each_platform(harness: Harness) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        live = await client.get(f"{harness.url}/healthz")
        ready = await client.get(f"{harness.url}/readyz")
    assert live.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["database"] == "reachable" and ready.json()["platforms"] == {"slack": "connected"}


async def test_agents_talking_to_the_bot_in_the_review_channel_are_not_customers(harness: Harness) -> None:
    await harness.mention("can you check 40021 for me?", channel="C999", user="U333")
    await harness.settle()
    assert not harness.cards() and not [r for r in harness.kimi.requests if r.path.endswith("/chat/completions")]


async def test_a_draft_cannot_ping_a_whole_slack_channel(harness: Harness) -> None:
    from tests.fakes.kimi import Reply

    harness.kimi.script(Reply("<!channel> <!here> <!subteam^S1|oncall> your order ships today"))
    envelope = await harness.mention("any news on 40021?")
    [card] = await harness.wait_cards(1)
    assert "<!channel>" not in card_text(card), "the card shows the text, it does not ping the review channel"
    await harness.click("approve_draft", draft_id_of(card))
    [reply] = await harness.wait_replies(envelope["event"]["ts"])
    assert "<!" not in reply.params["text"] and "your order ships today" in reply.params["text"]


async def test_a_slack_user_group_on_the_managers_list_may_approve(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """The adapter looks the clicker's user groups up (usergroups.users.list); the core's manager
    rule is a desk scenario (tests/test_refunds.py)."""
    slack.usergroups = {"S0MANAGERS": ["UFLOOR"], "S0OTHERS": ["U333"]}
    policy = '[refunds]\nmanager_threshold = "100.00"\n[approvers]\nmanagers = ["S0MANAGERS"]\n'
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        rows = [dict(r, customer_accounts="slack:U222" if r["order_id"] == "40021" else "") for r in sample_orders()]
        await harness.import_orders(rows)
        kimi.script(
            CallTools([("propose_refund", {"order_id": "40021", "amount": "150.00", "reason": "arrived broken"})]),
            Reply("I've asked the team to refund 150.00 USD."),
        )
        envelope = await harness.mention("refund order 40021, it broke")
        [card] = await harness.wait_cards(1)
        await harness.click("approve_draft", draft_id_of(card), user="U333")
        await wait_until(lambda: [t for t in harness.ephemerals("U333") if "needs a manager" in t])
        await harness.click("approve_draft", draft_id_of(card), user="UFLOOR")
        await harness.wait_replies(envelope["event"]["ts"])
        await harness.settle()
        async with harness.bot.engine.connect() as conn:
            refunds = (await conn.execute(select(order_refunds_table.c.amount_cents))).scalars().all()
        assert refunds == [15000]


async def test_a_huge_message_is_cut_and_the_card_stays_within_slack_limits(harness: Harness) -> None:
    harness.kimi.script(Reply("We got your long message."))
    await harness.mention("<b>&amp;</b> " + "très long ✨ " * 12_000)
    [card] = await harness.wait_cards(1)
    assert card.response["ok"] is True
    sent = harness.kimi.completions[0]["messages"][1]["content"]
    assert len(sent) <= 20_000 + len(untrusted(""))  # the customer text, cut, within its delimiters
