"""The Discord adapter against a fake Discord on loopback (REST + gateway), with a recording core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.discord import (
    DiscordPlatform,
    create,
    invite_url,
    render_card,
    required_intents,
    split_message,
)
from adapters.discord.outbound import reply_nonce
from bot.domain.states import ConversationOwner
from bot.errors import ConfigError, FileNotFetched
from bot.events import (
    Actor,
    Author,
    DecisionAction,
    InboundMessage,
    MessageKind,
    ReviewDecision,
    ThreadRef,
)
from bot.ports import CardState, ConversationView, DecisionOutcome, EditForm, ProposalView, ReviewCard, ToolLookup
from bot.settings import Settings
from tests.fakes.discord import (
    AGENT_ROLE_ID,
    ALICE,
    BOB,
    BOT_ID,
    BOT_ROLE_ID,
    GUILD_ID,
    HELPER_BOT,
    REVIEW_CHANNEL_ID,
    SUPPORT_CHANNEL_ID,
    FakeDiscord,
)
from tests.harness import until

NO_MENTIONS: dict[str, list[str]] = {"parse": []}


def discord_settings(fake: FakeDiscord, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "discord_bot_token": fake.token,
        "discord_api_url": fake.api_url,
        "discord_cdn_urls": fake.cdn_url,
        "discord_review_channel": REVIEW_CHANNEL_ID,
        "discord_pending_indicator": "reaction",
    }
    return Settings(_env_file=None, **(values | overrides))


class RecordingCore:
    """Just enough of the core: records messages and decisions; a thread has a conversation once
    a message of it was received; decisions answer ``outcome`` (optionally held by a gate)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.received: list[InboundMessage] = []
        self.decisions: list[ReviewDecision] = []
        self.decided: list[ReviewDecision] = []
        self.outcome = DecisionOutcome(ok=True)
        self.forms: dict[str, EditForm] = {}
        self.gate: asyncio.Event | None = None

    async def receive(self, message: InboundMessage) -> bool:
        if any(m.event_id == message.event_id for m in self.received):
            return False
        self.received.append(message)
        return True

    async def has_conversation(self, thread: ThreadRef) -> bool:
        return any(m.thread == thread for m in self.received)

    def serves(self, thread: ThreadRef) -> bool:
        return True

    async def decide(self, decision: ReviewDecision) -> DecisionOutcome:
        self.decisions.append(decision)
        if self.gate is not None:
            await self.gate.wait()
        self.decided.append(decision)
        return self.outcome

    async def edit_form(self, draft_id: str) -> EditForm | None:
        return self.forms.get(draft_id)

    async def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[InboundMessage]:
        await until(lambda: len(self.received) >= count, f"{count} message(s), got {self.received}", timeout)
        return self.received

    async def wait_for_decisions(self, count: int, timeout: float = 5.0) -> list[ReviewDecision]:
        await until(lambda: len(self.decided) >= count, f"{count} decision(s), got {self.decisions}", timeout)
        return self.decided


def make_platform(settings: Settings) -> DiscordPlatform:
    return DiscordPlatform(settings, ready_timeout=10.0, guild_ready_timeout=0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def core(fake: FakeDiscord) -> RecordingCore:
    return RecordingCore(discord_settings(fake))


@pytest.fixture
async def platform(core: RecordingCore) -> AsyncIterator[DiscordPlatform]:
    adapter = make_platform(core.settings)
    await adapter.start(core)
    try:
        yield adapter
    finally:
        await adapter.stop()


async def open_conversation(fake: FakeDiscord, core: RecordingCore, text: str = "where is order 40021?") -> ThreadRef:
    before = len(core.received)
    await fake.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> {text}", mention_bot=True)
    received = await core.wait_for_messages(before + 1)
    return received[-1].thread


def sample_card(draft_id: str = "d-1", state: CardState = CardState.AWAITING_REVIEW, **extra: Any) -> ReviewCard:
    values: dict[str, Any] = {
        "draft_id": draft_id,
        "state": state,
        "asked_by": "Alice",
        "where": "Discord · Acme Community · #support · @Alice",
        "customer_text": "My chair arrived broken, order 40021.",
        "draft_text": "Sorry about that! I have proposed a refund of $320.00.",
        "model": "kimi-k2.5",
        "lookups": (ToolLookup("lookup_order", "40021: delivered 5 days ago, $320.00"),),
        "proposals": (ProposalView("refund", "$320.00 on order 40021", "needs a manager (over $100)", False),),
        "attachments": ("chair.jpg",),
    }
    return ReviewCard(**(values | extra))


# ---------------------------------------------------------------------------------------- inbound


async def test_mention_opens_a_thread_and_reaches_the_core(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    message = await fake.post_user_message(
        SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> where is my order #W2611340?", mention_bot=True
    )

    [received] = await core.wait_for_messages(1)
    [thread_call] = fake.calls_to("POST", rf"/channels/{SUPPORT_CHANNEL_ID}/messages/{message['id']}/threads")
    assert thread_call.json["name"] == "Support: Alice"
    assert received.kind is MessageKind.MENTION
    assert received.thread == ThreadRef("discord", GUILD_ID, SUPPORT_CHANNEL_ID, message["id"])
    assert received.event_id == f"discord:{message['id']}"
    assert received.message_id == message["id"]
    assert received.text == "where is my order #W2611340?"
    assert received.author == Author(ALICE.id, "Alice")
    assert received.location == "Discord · Acme Community · #support · @Alice"
    assert received.sent_at.tzinfo is not None


async def test_follow_up_in_the_thread_needs_no_mention(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    thread = await open_conversation(fake, core)

    follow_up = await fake.post_user_message(thread.thread, ALICE, "it was the blue one, thanks")

    received = await core.wait_for_messages(2)
    assert received[1].kind is MessageKind.FOLLOW_UP
    assert received[1].thread == thread
    assert received[1].message_id == follow_up["id"]
    assert received[1].text == "it was the blue one, thanks"
    assert len(fake.calls_to("POST", r"/channels/\d+/messages/\d+/threads")) == 1


async def test_everyone_role_mentions_other_bots_and_chatter_are_ignored(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    await fake.post_user_message(SUPPORT_CHANNEL_ID, ALICE, "@everyone is the shop down?", mention_everyone=True)
    await fake.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@&{BOT_ROLE_ID}> help", mention_roles=[BOT_ROLE_ID])
    await fake.post_user_message(SUPPORT_CHANNEL_ID, HELPER_BOT, f"<@{BOT_ID}> ping", mention_bot=True)
    await fake.post_user_message(SUPPORT_CHANNEL_ID, ALICE, "just chatting, no mention")
    await fake.post_user_message(REVIEW_CHANNEL_ID, BOB, f"<@{BOT_ID}> staff talk", mention_bot=True)
    sentinel = await fake.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> real question", mention_bot=True)

    # The gateway delivers in order and an ignored message is dropped before its handler first
    # waits, so once the last message (the real question) is in, every earlier one was handled.
    received = await core.wait_for_messages(1)
    assert [m.message_id for m in core.received] == [sentinel["id"]]
    assert len(fake.calls_to("POST", r"/channels/\d+/messages/\d+/threads")) == 1
    assert received[0].text == "real question"


async def test_bot_messages_in_its_own_thread_are_ignored(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    thread = await open_conversation(fake, core)

    await platform.customer_channel.post_reply(thread, "Your order ships today.", idempotency_key="k-own")
    await fake.post_user_message(thread.thread, HELPER_BOT, "I am another bot")
    await fake.post_user_message(thread.thread, ALICE, "great")

    received = await core.wait_for_messages(2)  # "great" came last on the gateway: the rest was handled
    assert [m.text for m in received] == ["where is order 40021?", "great"]


async def test_direct_message_is_a_direct_conversation(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    message = await fake.post_direct_message(ALICE, "hi, can I return a mug?")

    [received] = await core.wait_for_messages(1)
    dm_channel = message["channel_id"]
    assert received.kind is MessageKind.DIRECT
    assert received.thread == ThreadRef("discord", "@me", dm_channel, dm_channel)
    assert received.location == "Discord · DM · @Alice"

    await platform.customer_channel.post_reply(received.thread, "Yes, within 30 days.", idempotency_key="dm-1")
    [reply] = [m for m in fake.messages_in(dm_channel) if m["author"]["id"] == BOT_ID]
    assert reply["content"] == "Yes, within 30 days."


async def test_files_are_only_described_at_the_ack_and_fetched_later_from_the_cdn_alone(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    image = fake.serve_file("error.png", png, "image/png")
    pdf = fake.serve_file("invoice.pdf", b"%PDF-1.7 invoice", "application/pdf")

    await fake.post_user_message(
        SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> export fails", mention_bot=True, attachments=[image, pdf]
    )

    [received] = await core.wait_for_messages(1)
    shot, invoice = received.attachments
    assert (shot.filename, shot.content_type, shot.size, shot.url, shot.data) == (
        "error.png",
        "image/png",
        len(png),
        image["url"],
        None,
    )
    assert shot.is_image
    assert (invoice.filename, invoice.content_type, invoice.url, invoice.data) == (
        "invoice.pdf",
        "application/pdf",
        pdf["url"],
        None,
    )
    assert not fake.calls_to("GET", r"/cdn/attachments/.*"), "nothing is downloaded before the ack"

    assert await platform.files.fetch(shot.url, max_bytes=1024) == png
    with pytest.raises(FileNotFetched, match="over 1 KB"):
        await platform.files.fetch(fake.serve_file("big.png", b"x" * 5000, "image/png")["url"], max_bytes=1024)
    foreign = shot.url.replace(fake.cdn_url, "http://127.0.0.2:9")
    with pytest.raises(FileNotFetched, match="not on Discord's CDN"):
        await platform.files.fetch(foreign, max_bytes=1024)


# ---------------------------------------------------------------------------------------- outbound


async def test_long_reply_is_split_on_paragraphs_without_mentions(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    thread = await open_conversation(fake, core)
    paragraphs = [f"Paragraph {i}: " + "x" * 886 for i in range(5)]
    text = "\n\n".join(paragraphs)
    assert 4500 <= len(text) < 4600

    first_id = await platform.customer_channel.post_reply(thread, text, idempotency_key="reply-long")

    posts = fake.calls_to("POST", rf"/channels/{thread.thread}/messages")
    assert [c.status for c in posts] == [200, 200, 200]
    contents = [c.json["content"] for c in posts]
    assert all(len(part) <= 2000 for part in contents)
    assert contents == ["\n\n".join(paragraphs[0:2]), "\n\n".join(paragraphs[2:4]), paragraphs[4]]
    assert all(c.json["allowed_mentions"] == NO_MENTIONS for c in posts)
    assert all(c.json["enforce_nonce"] is True and len(c.json["nonce"]) <= 25 for c in posts)
    assert len({c.json["nonce"] for c in posts}) == 3
    bot_messages = [m for m in fake.messages_in(thread.thread) if m["author"]["id"] == BOT_ID]
    assert [m["content"] for m in bot_messages] == contents
    assert first_id == bot_messages[0]["id"]


async def test_everyone_in_a_draft_pings_nobody(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    thread = await open_conversation(fake, core)

    await platform.customer_channel.post_reply(
        thread, f"@everyone <@&{AGENT_ROLE_ID}> <@{BOB.id}> please look", idempotency_key="k-ping"
    )

    [post] = fake.calls_to("POST", rf"/channels/{thread.thread}/messages")
    assert post.json["content"].startswith("@everyone")
    assert post.json["allowed_mentions"] == NO_MENTIONS


async def test_rate_limited_reply_arrives_once(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    thread = await open_conversation(fake, core)
    fake.rate_limit_next("POST", rf"/channels/{thread.thread}/messages", retry_after=0.2)

    started = time.monotonic()
    message_id = await platform.customer_channel.post_reply(thread, "Refund issued.", idempotency_key="k-429")

    assert time.monotonic() - started >= 0.2
    assert [c.status for c in fake.calls_to("POST", rf"/channels/{thread.thread}/messages")] == [429, 200]
    [reply] = [m for m in fake.messages_in(thread.thread) if m["author"]["id"] == BOT_ID]
    assert reply["id"] == message_id


async def test_retried_post_with_the_same_key_is_not_duplicated(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    thread = await open_conversation(fake, core)

    first = await platform.customer_channel.post_reply(thread, "Your order ships today.", idempotency_key="k-1")
    again = await platform.customer_channel.post_reply(thread, "Your order ships today.", idempotency_key="k-1")

    assert first == again
    assert len(fake.calls_to("POST", rf"/channels/{thread.thread}/messages")) == 2
    assert len([m for m in fake.messages_in(thread.thread) if m["author"]["id"] == BOT_ID]) == 1
    assert await platform.customer_channel.find_reply(thread, "k-1") == first
    assert await platform.customer_channel.find_reply(thread, "k-unknown") is None


async def test_retry_after_a_restart_is_deduplicated_by_the_nonce(fake: FakeDiscord, core: RecordingCore) -> None:
    first_run = make_platform(core.settings)
    await first_run.start(core)
    thread = await open_conversation(fake, core)
    first = await first_run.customer_channel.post_reply(thread, "Shipped.", idempotency_key="k-crash")
    await first_run.stop()

    second_run = make_platform(core.settings)
    await second_run.start(core)
    try:
        assert await second_run.customer_channel.find_reply(thread, "k-crash") is None  # cannot tell
        again = await second_run.customer_channel.post_reply(thread, "Shipped.", idempotency_key="k-crash")
    finally:
        await second_run.stop()
    assert again == first
    assert len([m for m in fake.messages_in(thread.thread) if m["author"]["id"] == BOT_ID]) == 1


async def test_pending_reaction_on_the_customer_message_and_removed_after_the_reply(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    thread = await open_conversation(fake, core)
    starter = core.received[0].message_id

    await platform.customer_channel.show_pending(thread)
    await platform.customer_channel.post_reply(thread, "Here you go.", idempotency_key="k-pending")

    reaction_path = rf"/channels/{SUPPORT_CHANNEL_ID}/messages/{starter}/reactions/⏳/@me"
    assert [c.status for c in fake.calls_to("PUT", reaction_path)] == [204]
    assert [c.status for c in fake.calls_to("DELETE", reaction_path)] == [204]


async def test_typing_indicator_when_configured(fake: FakeDiscord) -> None:
    core = RecordingCore(discord_settings(fake, discord_pending_indicator="typing"))
    adapter = make_platform(core.settings)
    await adapter.start(core)
    try:
        thread = await open_conversation(fake, core)
        await adapter.customer_channel.show_pending(thread)
    finally:
        await adapter.stop()
    assert fake.calls_to("POST", rf"/channels/{thread.thread}/typing")
    assert not fake.calls_to("PUT", r"/channels/.*/reactions/.*")


# ---------------------------------------------------------------------------------------- review desk


async def test_card_is_posted_with_buttons_and_updated_without(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    desk = platform.review_desk
    assert desk is not None

    ref = await desk.post_card(sample_card(), idempotency_key="card-test")

    [post] = fake.calls_to("POST", rf"/channels/{REVIEW_CHANNEL_ID}/messages")
    message_id = ref.split(":")[1]
    assert ref == f"{REVIEW_CHANNEL_ID}:{message_id}"
    [embed] = post.json["embeds"]
    assert "My chair arrived broken" in embed["description"]
    assert "proposed a refund of $320.00" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Asked by"] == "Alice"
    assert "lookup_order" in fields["Tool lookups"]
    assert "needs a manager" in fields["Proposals"]
    assert "chair.jpg" in fields["Attachments"]
    buttons = [b["custom_id"] for row in post.json["components"] for b in row["components"]]
    assert buttons == [f"supportbot:{a}:d-1" for a in ("approve", "edit", "reject", "regenerate")]

    decided = sample_card(
        state=CardState.APPROVED, decided_by=f"<@{BOB.id}>", decided_at=datetime(2026, 5, 1, 12, tzinfo=UTC)
    )
    await desk.update_card(ref, decided)
    [edit] = fake.calls_to("PATCH", rf"/channels/{REVIEW_CHANNEL_ID}/messages/{message_id}")
    assert edit.json["components"] == []
    assert edit.json["embeds"][0]["title"] == "Approved"
    assert fake.messages[message_id]["components"] == []

    await desk.post_notice("policy.toml failed to reload: line 3")
    assert fake.messages_in(REVIEW_CHANNEL_ID)[-1]["content"] == "policy.toml failed to reload: line 3"


async def test_click_after_a_restart_reaches_the_core(fake: FakeDiscord, core: RecordingCore) -> None:
    before = make_platform(core.settings)
    await before.start(core)
    assert before.review_desk is not None
    ref = await before.review_desk.post_card(sample_card("draft-42"), idempotency_key="card-test")
    await before.stop()
    assert not fake.connected

    after = make_platform(core.settings)
    await after.start(core)
    try:
        click = await fake.click(ref.split(":")[1], "supportbot:approve:draft-42", BOB)
        [decision] = await core.wait_for_decisions(1)
    finally:
        await after.stop()

    assert decision.draft_id == "draft-42"
    assert decision.action is DecisionAction.APPROVE
    assert decision.actor == Actor(
        platform="discord",
        id=BOB.id,
        display_name="Bob (Support)",
        groups=frozenset({GUILD_ID, AGENT_ROLE_ID}),
    )
    assert [r.type for r in click.responses] == [6]
    assert click.followups == []


async def test_click_is_deferred_before_the_core_decides(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-slow"), idempotency_key="card-test")
    core.gate = asyncio.Event()

    click = await fake.click(ref.split(":")[1], "supportbot:reject:d-slow", BOB)
    response = await fake.wait_for_response(click)

    assert response.type == 6  # DEFERRED_UPDATE_MESSAGE
    assert response.at - click.dispatched_at < 3.0
    assert core.decided == []  # the core is still deciding
    core.gate.set()
    [decision] = await core.wait_for_decisions(1)
    assert decision.action is DecisionAction.REJECT


async def test_refused_decision_is_shown_to_the_clicker_only(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-2"), idempotency_key="card-test")
    core.outcome = DecisionOutcome(ok=False, message="Only managers may approve refunds over $100.")

    click = await fake.click(ref.split(":")[1], "supportbot:approve:d-2", BOB)
    await core.wait_for_decisions(1)
    await until(lambda: click.followups, "an ephemeral followup", 5.0)

    [followup] = click.followups
    assert followup["content"] == "Only managers may approve refunds over $100."
    assert followup["flags"] & 64  # ephemeral


async def test_edit_modal_is_prefilled_and_its_submission_carries_the_edit(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-3"), idempotency_key="card-test")
    core.forms["d-3"] = EditForm("d-3", "Sorry! A refund of $320.00 is on its way.", refund_amount="320.00")

    click = await fake.click(ref.split(":")[1], "supportbot:edit:d-3", BOB)
    response = await fake.wait_for_response(click)

    assert response.type == 9  # MODAL
    modal = click.modal
    assert modal is not None and modal["custom_id"] == "supportbot:edit-form:d-3"
    inputs = {c["component"]["custom_id"]: c["component"].get("value") for c in modal["components"]}
    assert inputs == {"text": "Sorry! A refund of $320.00 is on its way.", "refund_amount": "320.00"}
    assert core.decisions == []

    submit = await fake.submit_modal(click, {"text": "Sorry! We refunded $100.00.", "refund_amount": "100.00"})
    [decision] = await core.wait_for_decisions(1)
    assert decision.action is DecisionAction.EDIT
    assert decision.edited_text == "Sorry! We refunded $100.00."
    assert decision.refund_amount == "100.00"
    assert decision.actor.id == BOB.id
    assert [r.type for r in submit.responses] == [6]


async def test_edit_without_refund_has_no_amount_field(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-4"), idempotency_key="card-test")
    core.forms["d-4"] = EditForm("d-4", "Your order ships today.")

    click = await fake.click(ref.split(":")[1], "supportbot:edit:d-4", BOB)
    await fake.wait_for_response(click)
    assert click.modal is not None
    assert [c["component"]["custom_id"] for c in click.modal["components"]] == ["text"]

    await fake.submit_modal(click, {"text": "Ships today!"})
    [decision] = await core.wait_for_decisions(1)
    assert (decision.edited_text, decision.refund_amount) == ("Ships today!", None)


async def test_regenerate_modal_carries_the_instruction(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-5"), idempotency_key="card-test")

    click = await fake.click(ref.split(":")[1], "supportbot:regenerate:d-5", BOB)
    await fake.wait_for_response(click)
    await fake.submit_modal(click, {"instruction": "shorter, offer store credit"})

    [decision] = await core.wait_for_decisions(1)
    assert decision.action is DecisionAction.REGENERATE
    assert decision.instruction == "shorter, offer store credit"


async def test_edit_of_a_vanished_draft_answers_ephemerally(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-gone"), idempotency_key="card-test")

    click = await fake.click(ref.split(":")[1], "supportbot:edit:d-gone", BOB)
    response = await fake.wait_for_response(click)

    assert response.type == 4 and response.data["flags"] & 64
    assert core.decisions == []


# ---------------------------------------------------------------------------------------- start-up


async def test_gateway_comes_from_the_configured_api_url_with_the_intents(
    fake: FakeDiscord, platform: DiscordPlatform
) -> None:
    assert fake.calls_to("GET", r"/gateway/bot")
    [identify] = fake.identifies
    assert identify["intents"] == required_intents().value
    assert identify["intents"] & (1 << 15)  # message content
    assert identify["shard"] == [0, 1]


async def test_privileged_intents_not_enabled_is_a_config_error() -> None:
    async with FakeDiscord(message_content_intent_enabled=False) as fake:
        core = RecordingCore(discord_settings(fake))
        adapter = make_platform(core.settings)
        with pytest.raises(ConfigError, match=r"(?i)message content intent") as error:
            await adapter.start(core)
        assert "developer portal" in str(error.value)
        assert adapter.client is None
        assert not fake.connected


async def test_rejected_token_is_a_config_error(fake: FakeDiscord) -> None:
    core = RecordingCore(discord_settings(fake, discord_bot_token="not-the-token"))
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
        await make_platform(core.settings).start(core)


async def test_stop_and_start_again_reconnects(fake: FakeDiscord, core: RecordingCore) -> None:
    adapter = make_platform(core.settings)
    await adapter.start(core)
    await adapter.stop()
    await adapter.start(core)
    try:
        await open_conversation(fake, core)
    finally:
        await adapter.stop()
    assert len(fake.identifies) == 2


# ---------------------------------------------------------------------------------------- units


def test_factory_needs_the_token_and_reads_the_review_channel(fake: FakeDiscord) -> None:
    assert create(Settings(_env_file=None)) is None
    without_desk = create(discord_settings(fake, discord_review_channel=None))
    assert without_desk is not None and without_desk.review_desk is None
    assert without_desk.name == "discord" and list(without_desk.routes()) == []
    with pytest.raises(ConfigError, match="DISCORD_REVIEW_CHANNEL"):
        create(discord_settings(fake, discord_review_channel="#staff-review"))


def test_split_message_prefers_paragraphs_then_lines_then_hard_cuts() -> None:
    assert split_message("short") == ["short"]
    lines = "\n".join(f"line {i:02d} " + "y" * 90 for i in range(50))  # one 4,949-char paragraph
    parts = split_message(lines)
    assert [len(p) for p in parts] == [1979, 1979, 989]  # 20 whole lines of 98 chars fit in 2,000
    assert "\n".join(parts) == lines
    blob = "z" * 4500
    assert [len(p) for p in split_message(blob)] == [2000, 2000, 500]
    words = " ".join(["word"] * 1000)
    assert all(len(p) <= 2000 and not p.startswith(" ") for p in split_message(words))


def test_nonces_are_short_stable_and_distinct() -> None:
    assert reply_nonce("k", 0) == reply_nonce("k", 0)
    assert reply_nonce("k", 0) != reply_nonce("k", 1) != reply_nonce("j", 1)
    assert len(reply_nonce("a-very-long-idempotency-key" * 5, 7)) == 25


def test_invite_url_has_the_bot_scope_and_permissions() -> None:
    url = invite_url(BOT_ID)
    assert url.startswith(f"https://discord.com/oauth2/authorize?client_id={BOT_ID}")
    assert "scope=bot&" in url or url.endswith("scope=bot")
    assert "applications.commands" not in url
    permissions = int(url.split("permissions=")[1].split("&")[0])
    expected = (1 << 10) | (1 << 11) | (1 << 38) | (1 << 35) | (1 << 16) | (1 << 6) | (1 << 14)
    assert permissions == expected


def test_card_embed_stays_within_discord_limits() -> None:
    card = sample_card(
        customer_text="c" * 5000,
        draft_text="d" * 9000,
        lookups=tuple(ToolLookup(f"tool{i}", "s" * 300) for i in range(10)),
        failure="f" * 2000,
        notice="n" * 2000,
        escalation="e" * 2000,
        proposals=tuple(ProposalView("refund", "p" * 200, "v" * 100, True) for _ in range(8)),
        attachments=tuple(f"file{i}.png" for i in range(80)),
        sent_text="t" * 3000,
        decided_by="<@1400000000000000002>",
        decided_at=datetime(2026, 5, 1, tzinfo=UTC),
        conversation=ConversationView(
            owner=ConversationOwner.HUMAN, owner_reason="r" * 500, assignee="a" * 300, customer_wrote="w" * 3000
        ),
    )
    embed = render_card(card)
    assert len(embed) <= 6000
    assert embed.description is not None and len(embed.description) <= 4096
    assert "truncated: 9000 characters" in embed.description
    assert all(len(f.value or "") <= 1024 for f in embed.fields)
    assert len(embed.fields) == 12, "ten of the card's own, what the customer wrote since, and its conversation"
    assert len(embed.description) >= 1500  # the draft keeps room even when every field is long


class FlakyCore(RecordingCore):
    """A core whose database fails the first two times a message is recorded."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.failures_left = 2
        self.attempts = 0

    async def receive(self, message: InboundMessage) -> bool:
        self.attempts += 1
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("database restarting")
        return await super().receive(message)


async def test_a_message_is_recorded_even_when_the_core_fails_at_first(fake: FakeDiscord) -> None:
    core = FlakyCore(discord_settings(fake))
    adapter = make_platform(core.settings)
    await adapter.start(core)
    try:
        await fake.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> where is 40021?", mention_bot=True)
        [received] = await core.wait_for_messages(1)
    finally:
        await adapter.stop()
    assert core.attempts == 3, "Discord never redelivers, so the adapter tried again"
    assert received.text == "where is 40021?"


def test_the_discord_card_says_who_is_verified_and_what_was_flagged() -> None:
    card = ReviewCard(
        draft_id="d" * 32,
        state=CardState.AWAITING_REVIEW,
        asked_by="kim",
        where="Discord · #help",
        customer_text="refund please",
        draft_text="Your refund was processed.",
        identity="Unverified asker (discord:4567)",
        flags=("The draft says money moved, but the refund was never made.",),
    )
    fields = {f.name: f.value for f in render_card(card).fields}
    assert fields["Identity"] == "Unverified asker (discord:4567)"
    assert fields["🛑 Check before approving"] == "• The draft says money moved, but the refund was never made."
