"""Kill -9 at the worst moments: the real ``supportbot run`` is killed while the model call is
in flight, while a card post is in flight, right after a click's ack, after a refund but before
its reply, between queueing the policy's acknowledgement and its post, and between a message's
edit (or deletion) and Slack's late retry of the message itself; restarted at once, it
finishes the work within 20 s, and nothing is lost or done twice. Stopped gracefully (SIGTERM, as
``docker stop`` does), it first finishes what is in flight within ``SHUTDOWN_GRACE_SECONDS`` and
leaves the rest to the next run. A click's card update that Slack holds back (a 429) and that
lands after the reply's never leaves the card behind."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.domain.states import OutboxKind, OutboxStatus
from bot.store import create_engine
from bot.store.schema import Draft, Message, OutboxItem
from tests.fakes.kimi import CallTools, FakeKimi, Hang, Reply
from tests.fakes.slack import FakeSlack, SlackCall
from tests.fakes.slack_payloads import app_mention, block_actions, message_changed, message_deleted, view_submission
from tests.harness import CUSTOMER_CHANNEL, REVIEW_CHANNEL, draft_id_of, sample_orders, undelivered_mention, until
from tests.processes import BotProcess, seed_orders
from tools.orders import order_refunds_table

RECOVERY_SECONDS = 20.0


async def launch(home: Path, kimi: FakeKimi, slack: FakeSlack, policy: str = "", **variables: str) -> BotProcess:
    (home / "policy.toml").write_text('[refunds]\nmax_amount = "500.00"\nmanager_threshold = "400.00"\n' + policy)
    process = BotProcess(home, kimi.base_url, slack, **variables)
    rows = sample_orders()
    for row in rows:
        if row["order_id"] == "40021":  # Ana writes from Slack as U444: her account is linked
            row["customer_accounts"] = "slack:U444"
    await seed_orders(process.database_url, home / "orders.jsonl", rows)
    await process.start()
    return process


@pytest.fixture
async def bot(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> AsyncIterator[BotProcess]:
    process = await launch(tmp_path, kimi, slack)
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
async def impatient_bot(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> AsyncIterator[BotProcess]:
    """A bot whose operator gives work in flight one second to finish on SIGTERM."""
    process = await launch(tmp_path, kimi, slack, SHUTDOWN_GRACE_SECONDS="1")
    try:
        yield process
    finally:
        await process.stop()


def replies_in(slack: FakeSlack, thread_ts: str) -> list[object]:
    return [
        c
        for c in slack.calls_to("chat.postMessage")
        if c.params.get("channel") == CUSTOMER_CHANNEL and c.params.get("thread_ts") == thread_ts
    ]


async def ask(bot: BotProcess, text: str, user: str = "U222") -> str:
    envelope = app_mention(f"<@UBOT> {text}", user=user)
    assert (await bot.sender.event(envelope)).status_code == 200
    return str(envelope["event"]["ts"])


async def approve(bot: BotProcess, draft_id: str) -> None:
    click = block_actions("approve_draft", draft_id, user="U333", channel=REVIEW_CHANNEL)
    assert (await bot.sender.action(click)).status_code == 200


async def restart(bot: BotProcess) -> float:
    await bot.kill9()
    started = time.monotonic()
    await bot.start()
    return started


async def test_killed_while_the_model_is_thinking_the_draft_is_written_after_the_restart(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.script(Hang(60))
    await ask(bot, "where is my order #W2611340?")
    await until(lambda: [r for r in kimi.requests if r.path.endswith("/chat/completions")], "the model call")
    started = await restart(bot)

    [card] = await until(bot.cards, "the card after the restart", timeout=RECOVERY_SECONDS)
    assert time.monotonic() - started < RECOVERY_SECONDS
    assert "approve_draft" in str(card.params["blocks"])
    await approve(bot, draft_id_of(card))
    await until(
        lambda: [c for c in slack.calls_to("chat.postMessage") if c.params.get("channel") == CUSTOMER_CHANNEL],
        "the reply",
    )
    assert len(bot.cards()) == 1, "one card for one draft"


async def test_killed_while_the_card_is_on_its_way_the_card_is_adopted_not_doubled(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    slack.stall_next("chat.postMessage", 60, where=lambda p: p.get("channel") == REVIEW_CHANNEL)
    await ask(bot, "where is my order #W2611340?")
    [card] = await until(bot.cards, "the card reaching Slack")
    started = await restart(bot)

    # The restarted bot finds the card by its key and takes it over (updates it), never posts a second.
    draft_id = draft_id_of(card)
    await approve(bot, draft_id)
    await until(
        lambda: [c for c in slack.calls_to("chat.postMessage") if c.params.get("channel") == CUSTOMER_CHANNEL],
        "the reply",
        timeout=RECOVERY_SECONDS,
    )
    assert time.monotonic() - started < RECOVERY_SECONDS
    await until(
        lambda: [c for c in slack.calls_to("chat.update") if draft_id[:8] in str(c.params.get("blocks"))],
        "the card updated after the approval",
    )
    assert len(bot.cards()) == 1


async def a_card_lost_while_its_question_is_edited(
    bot: BotProcess, slack: FakeSlack
) -> tuple[str, SlackCall, SlackCall]:
    """The bot killed while Slack holds back its answer to a card's post, the question edited
    meanwhile: the first card is on the desk and nothing here records it. Returns the thread,
    the lost card and the edited question's card."""
    slack.stall_next("chat.postMessage", 60, where=lambda p: p.get("channel") == REVIEW_CHANNEL)
    ts = await ask(bot, "is the shop open on Sunday?")
    [first] = await until(bot.cards, "the card reaching Slack (its answer held back)")
    for envelope in (
        message_changed(
            CUSTOMER_CHANNEL, ts, "<@UBOT> is the shop open on Saturday?", "<@UBOT> is the shop open on Sunday?"
        ),
        app_mention("<@UBOT> is the shop open on Saturday?", ts=ts, edited=True),
    ):
        assert (await bot.sender.event(envelope)).status_code == 200
    [_, second] = await until(lambda: bot.cards()[1:] and bot.cards(), "the edited question's card")
    await bot.kill9()  # the first card's post was never answered: the bot never recorded it
    return ts, first, second


async def the_lost_card_ends_saying_so(bot: BotProcess, slack: FakeSlack, lost: SlackCall, second: SlackCall) -> None:
    """The card is found by its key: it says the question was edited and offers no Approve on
    the Sunday answer; the edited question's card is approved."""
    [ended] = await until(
        lambda: card_updated(slack, draft_id_of(lost), "edited their message"),
        "the lost card found and superseded",
        timeout=RECOVERY_SECONDS,
    )
    assert "approve_draft" not in str(ended.params["blocks"])
    assert "Saturday" in str(second.params["blocks"])
    await approve(bot, draft_id_of(second))


async def test_killed_while_the_card_is_on_its_way_and_the_question_edited_the_card_ends_saying_so(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    ts, first, second = await a_card_lost_while_its_question_is_edited(bot, slack)
    await bot.start()

    await the_lost_card_ends_saying_so(bot, slack, first, second)
    [reply] = await until(lambda: replies_in(slack, ts), "the answer")
    assert "Saturday" in str(reply.params["text"])
    assert len(bot.cards()) == 2


async def test_stopped_while_looking_for_a_lost_card_the_next_start_looks_again(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    ts, first, second = await a_card_lost_while_its_question_is_edited(bot, slack)
    slack.stall_next("conversations.history", 60, where=lambda p: p.get("channel") == REVIEW_CHANNEL)
    await bot.start()
    await until(
        lambda: slack.calls_to("conversations.history"), "the search for the lost card", timeout=RECOVERY_SECONDS
    )
    await bot.stop()  # SIGTERM (docker stop) while Slack has not answered the search
    await bot.start()

    await the_lost_card_ends_saying_so(bot, slack, first, second)
    [reply] = await until(lambda: replies_in(slack, ts), "the answer")
    assert "Saturday" in str(reply.params["text"])
    assert len(bot.cards()) == 2


async def test_a_mention_slack_retries_after_its_edit_and_a_restart_is_answered_from_the_edit(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    # The mention's first delivery never made it (the bot was down); the customer edits it, the
    # bot takes the edit, is killed and restarted, and only then does Slack's retry arrive.
    original, ts = undelivered_mention(slack, "<@UBOT> is the shop open on Sunday?")
    for envelope in (
        message_changed(
            CUSTOMER_CHANNEL, ts, "<@UBOT> is the shop open on Saturday?", "<@UBOT> is the shop open on Sunday?"
        ),
        app_mention("<@UBOT> is the shop open on Saturday?", ts=ts, edited=True),
    ):
        assert (await bot.sender.event(envelope)).status_code == 200
    await restart(bot)
    assert (await bot.sender.event(original, retry_num=1)).status_code == 200

    [card] = await until(bot.cards, "the card", timeout=RECOVERY_SECONDS)
    assert "Saturday" in str(card.params["blocks"]) and "Sunday" not in str(card.params["blocks"])
    await approve(bot, draft_id_of(card))
    [reply] = await until(lambda: replies_in(slack, ts), "the answer")
    assert "Saturday" in str(reply.params["text"])
    await until(lambda: card_updated(slack, draft_id_of(card), "sent to the customer"), "the card saying it was sent")
    assert len(bot.cards()) == 1 and len(replies_in(slack, ts)) == 1


async def test_a_clicks_card_update_slack_holds_back_never_leaves_the_card_behind_the_reply(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    ts = await ask(bot, "where is my order #W2611340?")
    [card] = await until(bot.cards, "the card")
    slack.fail_next("chat.update", status=429, retry_after=1)  # the click's "approved" lands late
    await approve(bot, draft_id_of(card))
    await until(lambda: replies_in(slack, ts), "the reply")

    def shown() -> list[SlackCall]:
        return [c for c in slack.calls_to("chat.update") if c.status == 200 and draft_id_of(card)[:8] in str(c.params)]

    await until(lambda: shown()[2:], "the card updated after the late update landed")
    assert "sent to the customer" in str(shown()[-1].params["blocks"])


async def test_a_mention_deleted_before_slacks_retry_and_a_restart_stays_deleted(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    # The mention's first delivery never made it; the customer deletes it, the bot takes the
    # deletion, is killed and restarted, and only then does Slack's retry of the mention arrive.
    original, ts = undelivered_mention(slack, "<@UBOT> my card is 4111 1111 1111 1111, is my order on its way?")
    deleted = message_deleted(CUSTOMER_CHANNEL, ts, previous_text=str(original["event"]["text"]))
    assert (await bot.sender.event(deleted)).status_code == 200
    await restart(bot)
    assert (await bot.sender.event(original, retry_num=1)).status_code == 200

    # The proof the retry drafted nothing: the next question is the first card.
    kimi.script(Reply("Yes, we ship to Norway."))
    assert (await bot.sender.event(app_mention("<@UBOT> do you ship to Norway?"))).status_code == 200
    [card] = await until(bot.cards, "the next question's card", timeout=RECOVERY_SECONDS)
    assert "Norway" in str(card.params["blocks"]) and "4111" not in str(card.params["blocks"])
    # The retry was acknowledged before that question: had it been taken, it would be stored.
    engine = create_engine(bot.database_url)
    try:
        async with engine.connect() as conn:
            texts = list((await conn.execute(select(Message.text))).scalars())
            drafts = await conn.scalar(select(func.count()).select_from(Draft))
    finally:
        await engine.dispose()
    assert texts == ["do you ship to Norway?"] and drafts == 1


async def test_killed_right_after_a_clicks_ack_the_reply_is_posted_once(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    thread_ts = await ask(bot, "where is my order #W2611340?")
    [card] = await until(bot.cards, "the card")
    await approve(bot, draft_id_of(card))  # acknowledged: Slack will never send it again
    started = await restart(bot)

    await until(lambda: replies_in(slack, thread_ts), "the reply", timeout=RECOVERY_SECONDS)
    assert time.monotonic() - started < RECOVERY_SECONDS
    # The restarted bot must not post it again: wait for the card to settle, then count.
    await until(
        lambda: [c for c in slack.calls_to("chat.update") if "sent to the customer" in str(c.params)],
        "the card saying it was sent",
        timeout=RECOVERY_SECONDS,
    )
    assert len(replies_in(slack, thread_ts)) == 1


async def test_killed_after_the_refund_before_the_reply_the_refund_runs_once_and_the_reply_arrives(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.script(
        CallTools([("propose_refund", {"order_id": "40021", "amount": "20.00", "reason": "arrived scratched"})]),
        Reply("I'm sorry about the scratch; we are refunding 20.00 USD."),
    )
    thread_ts = await ask(bot, "my chair 40021 arrived scratched, can I get 20 back?", user="U444")
    [card] = await until(bot.cards, "the card")
    slack.stall_next("chat.postMessage", 60, where=lambda p: p.get("channel") == CUSTOMER_CHANNEL)
    await approve(bot, draft_id_of(card))
    await until(lambda: replies_in(slack, thread_ts), "the reply reaching Slack")
    started = await restart(bot)

    await until(
        lambda: [c for c in slack.calls_to("chat.update") if "sent to the customer" in str(c.params)],
        "the card saying it was sent",
        timeout=RECOVERY_SECONDS,
    )
    assert time.monotonic() - started < RECOVERY_SECONDS
    assert len(replies_in(slack, thread_ts)) == 1, "found by its metadata, not posted again"
    engine = create_engine(bot.database_url)
    try:
        async with engine.connect() as conn:
            refunds = await conn.scalar(select(func.count()).select_from(order_refunds_table))
    finally:
        await engine.dispose()
    assert refunds == 1


def completions(kimi: FakeKimi) -> list[object]:
    return [r for r in kimi.requests if r.path.endswith("/chat/completions")]


async def sigterm(
    bot: BotProcess, timeout: float, *, while_stopping: Callable[[], Awaitable[None]] | None = None
) -> float:
    """Stop the bot as ``docker stop`` does (and run ``while_stopping`` meanwhile); returns how
    long it took to exit."""
    assert bot.process is not None
    started = time.monotonic()
    bot.process.send_signal(signal.SIGTERM)
    if while_stopping is not None:
        await while_stopping()
    await asyncio.wait_for(bot.process.wait(), timeout)
    assert bot.process.returncode == 0, bot.stderr_path.read_text()
    return time.monotonic() - started


async def test_stopped_while_the_model_is_thinking_the_draft_is_finished_before_the_process_exits(
    bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.latency = 2.0
    thread_ts = await ask(bot, "where is my order #W2611340?")
    await until(lambda: completions(kimi), "the model call")

    async def load_balancer_looks() -> None:  # traffic should go elsewhere as soon as the stop begins
        async with httpx.AsyncClient(timeout=1) as client:

            async def not_ready() -> httpx.Response | None:
                response = await client.get(f"{bot.base}/readyz")
                return response if response.status_code != 200 else None

            response = await until(not_ready, "/readyz to stop answering 200")
        assert response.status_code == 503 and response.json()["stopping"] is True

    await sigterm(bot, timeout=15, while_stopping=load_balancer_looks)

    # The draft was finished and its card posted while the process wound down, not cut off.
    [card] = bot.cards()
    assert "approve_draft" in str(card.params["blocks"])
    assert "stopping: work in flight has 8 s to finish" in bot.stderr_path.read_text()
    calls = len(completions(kimi))  # the model's calls for this draft (a tool call, then the reply)
    kimi.latency = 0.0
    await bot.start()
    await approve(bot, draft_id_of(card))
    await until(lambda: replies_in(slack, thread_ts), "the reply, posted by the next run")
    assert len(completions(kimi)) == calls, "the next run did not write the draft again"
    assert len(bot.cards()) == 1


async def test_stopped_with_a_draft_that_outlasts_the_grace_the_process_exits_in_time_and_the_next_run_writes_it(
    impatient_bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.script(Hang(60))
    await ask(impatient_bot, "where is my order #W2611340?")
    await until(lambda: completions(kimi), "the model call")
    took = await sigterm(impatient_bot, timeout=15)

    assert took < 6, f"a 1 s grace, then the bounded shutdown phases; it took {took:.1f} s"
    assert impatient_bot.cards() == []
    log = impatient_bot.stderr_path.read_text()
    assert "is left to the next run" in log
    # Its lease was handed back on the way out: the next run need not wait for it to expire.
    assert "handed back 1 draft(s)" in log
    engine = create_engine(impatient_bot.database_url)
    try:
        async with engine.connect() as conn:
            holders = (await conn.execute(select(Draft.lease_owner, Draft.lease_until))).all()
    finally:
        await engine.dispose()
    assert [tuple(h) for h in holders] == [("", None)]
    started = time.monotonic()
    await impatient_bot.start()
    [card] = await until(impatient_bot.cards, "the card, written by the next run", timeout=RECOVERY_SECONDS)
    assert time.monotonic() - started < RECOVERY_SECONDS
    assert "approve_draft" in str(card.params["blocks"])


async def test_stopped_while_the_reply_post_hangs_the_next_run_finds_it_at_once_and_posts_nothing_twice(
    impatient_bot: BotProcess, kimi: FakeKimi, slack: FakeSlack
) -> None:
    thread_ts = await ask(impatient_bot, "where is my order #W2611340?")
    [card] = await until(impatient_bot.cards, "the card")
    slack.stall_next("chat.postMessage", 60, where=lambda p: p.get("channel") == CUSTOMER_CHANNEL)
    await approve(impatient_bot, draft_id_of(card))
    await until(lambda: replies_in(slack, thread_ts), "the reply reaching Slack (its answer hangs)")
    await sigterm(impatient_bot, timeout=15)

    assert "handed back 0 draft(s) and 1 reply(ies)" in impatient_bot.stderr_path.read_text()
    await impatient_bot.start()
    await until(
        lambda: [c for c in slack.calls_to("chat.update") if "sent to the customer" in str(c.params)],
        "the card saying it was sent",
        timeout=RECOVERY_SECONDS,
    )
    assert len(replies_in(slack, thread_ts)) == 1, "found by its metadata, not posted again"


def card_updated(slack: FakeSlack, draft_id: str, containing: str) -> list[object]:
    return [
        c
        for c in slack.calls_to("chat.update")
        if draft_id[:8] in str(c.params.get("blocks")) and containing in str(c.params.get("blocks"))
    ]


async def test_edits_and_deletions_survive_kill_9(bot: BotProcess, kimi: FakeKimi, slack: FakeSlack) -> None:
    """Issue 19 (edits and deletes) through the installed ``supportbot run``: killed while the
    edited message is being redrafted, and again right after a deletion's ack, the bot keeps one
    card and one answer per message and sends nothing for the deleted one."""
    ts = await ask(bot, "is the shop open on Sunday?")
    [first] = await until(bot.cards, "the first card")

    # The customer edits the mention (Slack sends both events); the fresh draft's model call hangs.
    kimi.script(Hang(60))
    for envelope in (
        message_changed(
            CUSTOMER_CHANNEL, ts, "<@UBOT> is the shop open on Saturday?", "<@UBOT> is the shop open on Sunday?"
        ),
        app_mention("<@UBOT> is the shop open on Saturday?", ts=ts, edited=True),
    ):
        assert (await bot.sender.event(envelope)).status_code == 200
    calls = len([r for r in kimi.requests if r.path.endswith("/chat/completions")])
    await until(lambda: len([r for r in kimi.requests if r.path.endswith("/chat/completions")]) > calls, "redrafting")
    await restart(bot)

    # After the restart: the old card says why it was superseded, one new card from the new text.
    first_id = draft_id_of(first)
    await until(
        lambda: card_updated(slack, first_id, "edited their message"),
        "the first card superseded",
        timeout=RECOVERY_SECONDS,
    )
    [_, second] = await until(lambda: bot.cards()[1:] and bot.cards(), "the new card", timeout=RECOVERY_SECONDS)
    assert "Saturday" in str(second.params["blocks"])
    await approve(bot, draft_id_of(second))
    [reply] = await until(lambda: replies_in(slack, ts), "the answer")
    assert "Saturday" in str(reply.params["text"]) and "Sunday" not in str(reply.params["text"])

    # Edited once more after the answer: nothing. A new question, then deleted; killed right after.
    again = app_mention("<@UBOT> is the shop open on Monday?", ts=ts, edited=True)
    assert (await bot.sender.event(again)).status_code == 200
    norway = await ask(bot, "do you ship to Norway?")
    third = await until(lambda: bot.cards()[2:], "the third card")
    assert "Norway" in str(third[0].params["blocks"])
    third_id = draft_id_of(third[0])
    gone = message_deleted(CUSTOMER_CHANNEL, norway, previous_text="<@UBOT> do you ship to Norway?")
    assert (await bot.sender.event(gone)).status_code == 200
    await restart(bot)

    await until(
        lambda: card_updated(slack, third_id, "deleted their message"),
        "the deleted message's card retired",
        timeout=RECOVERY_SECONDS,
    )
    await approve(bot, third_id)  # a stale card's button: refused
    engine = create_engine(bot.database_url)
    try:
        async with engine.connect() as conn:
            statuses = dict((await conn.execute(select(Draft.id, Draft.status))).all())
    finally:
        await engine.dispose()
    assert statuses[first_id] == "superseded" and statuses[draft_id_of(second)] == "sent"
    assert statuses[third_id] == "superseded" and len(statuses) == 3
    assert len(bot.cards()) == 3, "one card per draft, none for the edit after the answer"
    assert len(replies_in(slack, ts)) == 1 and not replies_in(slack, norway)


async def test_killed_while_the_sla_reminder_is_on_its_way_it_is_never_sent_twice(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    # Issue 19 point 7: a reminder after 6 s undecided, the overdue mark after 12 s.
    bot = await launch(tmp_path, kimi, slack)
    try:
        with (tmp_path / "policy.toml").open("a") as policy:
            policy.write('[escalation.slack]\non_call = "SONCALL"\n[desk]\nfirst_response_minutes = 0.1\n')
        await bot.stop()  # take the policy up from the start
        await bot.start()
        slack.stall_next(
            "chat.postMessage", 60, where=lambda p: bool(p.get("thread_ts")) and p.get("channel") == REVIEW_CHANNEL
        )
        await ask(bot, "where is my order #W2611340?")
        [card] = await until(bot.cards, "the card")
        assert card.response is not None
        card_ts = str(card.response["ts"])

        def reminders() -> list[SlackCall]:
            return [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == card_ts]

        await until(reminders, "the reminder reaching Slack", timeout=15)
        await restart(bot)  # killed before Slack answered the reminder's post
        updates_before = len(slack.calls_to("chat.update"))

        def overdue_marked() -> list[object]:
            return [
                c
                for c in slack.calls_to("chat.update")[updates_before:]
                if c.params.get("ts") == card_ts and "Overdue: waiting" in str(c.params.get("blocks"))
            ]

        await until(overdue_marked, "the overdue mark from the restarted bot", timeout=RECOVERY_SECONDS)
        assert len(reminders()) == 1, "the restarted bot, past the card's SLA, did not remind again"
        assert str(reminders()[0].params["text"]).startswith("<!subteam^SONCALL> This card has waited")
    finally:
        await bot.stop()


ACK = "Thanks! A person will answer within {expected_minutes} minutes."


async def outbox_texts(bot: BotProcess, status: str) -> int:
    """How many of the policy's fixed texts the outbox holds in ``status``."""
    engine = create_engine(bot.database_url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).where(OutboxItem.kind != OutboxKind.REPLY, OutboxItem.status == status)
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def test_killed_between_queueing_a_fixed_text_and_its_post_it_arrives_exactly_once(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """Issue 19 point 6: the acknowledgement is queued by the ack, in its transaction. Killed
    after Slack refused its first post (nothing in the thread yet), and again after its post
    reached Slack but before Slack answered: each conversation gets it exactly once."""
    bot = await launch(tmp_path, kimi, slack, f'[desk]\nfirst_response_minutes = 30\nacknowledgement = "{ACK}"\n')
    told = ACK.format(expected_minutes=30)

    def acknowledgements(thread_ts: str) -> list[object]:
        return [m for m in slack.messages_in(CUSTOMER_CHANNEL, thread_ts) if m.get("text") == told]

    try:
        kimi.script(Hang(60))  # no card post competes with the acknowledgement's post
        slack.fail_next("chat.postMessage", status=500)
        refused = await ask(bot, "where is my order #W2611340?")
        await until(lambda: replies_in(slack, refused), "the acknowledgement's first post, refused")
        assert not acknowledgements(refused)
        await restart(bot)  # before its retry: claimed, not sent
        await until(lambda: acknowledgements(refused), "the next run's acknowledgement", timeout=RECOVERY_SECONDS)

        slack.stall_next("chat.postMessage", 60, where=lambda p: p.get("channel") == CUSTOMER_CHANNEL)
        unanswered = await ask(bot, "my order #W2613451 has not arrived")
        await until(lambda: acknowledgements(unanswered), "the acknowledgement reaching Slack (its answer hangs)")
        await restart(bot)  # posted, not recorded as sent

        async def both_recorded_sent() -> bool:
            return await outbox_texts(bot, OutboxStatus.SENT) == 2

        await until(both_recorded_sent, "both acknowledgements recorded as sent", timeout=RECOVERY_SECONDS)
        assert len(acknowledgements(refused)) == 1
        assert len(acknowledgements(unanswered)) == 1, "found by its key, not posted again"
    finally:
        await bot.stop()


async def test_killed_while_an_edit_is_being_translated_it_lands_on_the_card_after_the_restart(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """An agent's edit for a German customer on an English desk: the form is acked at once (the
    translation runs after it), the bot is killed while Kimi translates, and the restarted bot
    translates the kept edit and puts it on the card for approval; nothing reaches the customer
    before that approval."""
    policy = '[approvers]\nagents = ["U333"]\n[desk]\nlanguage = "en"\n'
    bot = await launch(tmp_path, kimi, slack, policy)
    try:
        kimi.script(
            Reply("Es tut uns leid! Ihr Paket ist unterwegs und kommt morgen an."),
            Reply("My parcel still has not arrived. Where is it?"),
            Reply("We are sorry! Your parcel is on its way and arrives tomorrow."),
        )
        thread_ts = await ask(bot, "Mein Paket ist immer noch nicht angekommen. Wo bleibt es denn?")
        [card] = await until(bot.cards, "the card")
        draft_id = draft_id_of(card)
        kimi.script(Hang(60))
        edit = {"draft_block": {"draft_input": "We will refund the shipping today."}}
        metadata = json.dumps({"draft_id": draft_id, "channel": REVIEW_CHANNEL})
        answer = await bot.sender.action(view_submission("edit_draft_modal", metadata, edit, user="U333"))
        assert answer.status_code == 200 and "errors" not in answer.text, "the form is acked, not held open"
        await until(lambda: card_updated(slack, draft_id, "translating the edit into de"), "the card saying so")
        await until(lambda: len(completions(kimi)) == 4, "the translation call")
        kimi.script(Reply("Wir erstatten Ihnen heute den Versand."), Reply("We refund the shipping today."))
        started = await restart(bot)

        await until(
            lambda: card_updated(slack, draft_id, "Wir erstatten Ihnen heute den Versand."),
            "the translated edit on the card",
            timeout=RECOVERY_SECONDS,
        )
        assert time.monotonic() - started < RECOVERY_SECONDS
        assert replies_in(slack, thread_ts) == [], "nothing is sent before the translation is approved"
        await approve(bot, draft_id)
        [reply] = await until(lambda: replies_in(slack, thread_ts), "the reply")
        assert isinstance(reply, SlackCall) and reply.params["text"] == "Wir erstatten Ihnen heute den Versand."
    finally:
        await bot.stop()
