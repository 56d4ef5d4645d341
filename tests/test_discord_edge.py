"""The Discord adapter's edge against the fake Discord: a card whose reference was lost is found
again by its key, a retried card post is deduplicated by its nonce, and a gateway that died is
noticed (``connected`` False) and brought back by ``reconnect``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.discord import DiscordPlatform
from adapters.discord.review import COULD_NOT_RECORD, card_nonce
from adapters.discord.settings import DiscordSettings
from bot.errors import ConfigError, PlatformNotFound, PlatformRateLimited, PlatformRefused
from bot.events import ReviewDecision, ThreadRef
from bot.ports import CardState, DecisionOutcome
from bot.settings import Settings
from tests.fakes.discord import ALICE, BOB, BOT_ID, REVIEW_CHANNEL_ID, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.harness import until
from tests.test_discord_adapter import RecordingCore, discord_settings, make_platform, sample_card


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


async def test_a_card_whose_reference_was_lost_is_found_after_a_restart(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-30"), idempotency_key="card:d-30")
    [post] = fake.calls_to("POST", rf"/channels/{REVIEW_CHANNEL_ID}/messages")
    assert post.json["nonce"] == card_nonce("card:d-30") and post.json["enforce_nonce"] is True
    assert post.json["embeds"][0]["footer"]["text"].endswith("key card:d-30")

    # The process died before keeping ``ref``; agents kept chatting in the channel meanwhile.
    await platform.stop()
    for index in range(60):
        await fake.post_user_message(REVIEW_CHANNEL_ID, ALICE, f"chatter {index}")
    restarted = make_platform(core.settings)
    await restarted.start(core)
    try:
        assert restarted.review_desk is not None
        assert await restarted.review_desk.find_card("card:d-30") == ref
        assert await restarted.review_desk.find_card("card:d-31") is None
    finally:
        await restarted.stop()
    pages = fake.calls_to("GET", rf"/channels/{REVIEW_CHANNEL_ID}/messages")
    assert pages and all(int(c.query["limit"]) <= 100 for c in pages)


async def test_a_retried_card_post_returns_the_card_already_there(fake: FakeDiscord, platform: DiscordPlatform) -> None:
    assert platform.review_desk is not None
    first = await platform.review_desk.post_card(sample_card("d-32"), idempotency_key="card:d-32")
    again = await platform.review_desk.post_card(sample_card("d-32"), idempotency_key="card:d-32")
    assert again == first
    cards = [m for m in fake.messages_in(REVIEW_CHANNEL_ID) if m["embeds"]]
    assert len(cards) == 1


async def test_a_rate_limit_too_long_to_sit_through_reaches_the_core_as_platform_rate_limited(
    fake: FakeDiscord, platform: DiscordPlatform
) -> None:
    assert platform.review_desk is not None
    fake.rate_limit_next("POST", rf"/channels/{REVIEW_CHANNEL_ID}/messages", retry_after=61)  # above the 60 s we wait
    with pytest.raises(PlatformRateLimited) as limited:
        await platform.review_desk.post_card(sample_card("d-34"), idempotency_key="card:d-34")
    assert limited.value.retry_after == 61
    await platform.review_desk.post_card(sample_card("d-34"), idempotency_key="card:d-34")  # the core's retry
    assert len([m for m in fake.messages_in(REVIEW_CHANNEL_ID) if m["embeds"]]) == 1


async def test_discords_refusals_reach_the_core_as_the_ports_errors(
    fake: FakeDiscord, platform: DiscordPlatform
) -> None:
    desk = platform.review_desk
    assert desk is not None
    with pytest.raises(PlatformNotFound, match="404"):  # the card's message was deleted
        await desk.update_card(f"{REVIEW_CHANNEL_ID}:999999999999", sample_card("d-35"))
    chatter = await fake.post_user_message(REVIEW_CHANNEL_ID, ALICE, "not a card")
    with pytest.raises(PlatformRefused, match="403"):  # a message the bot may not edit
        await desk.update_card(f"{REVIEW_CHANNEL_ID}:{chatter['id']}", sample_card("d-35"))
    replies = platform.customer_channel
    with pytest.raises(PlatformNotFound):  # the customer's thread is gone
        await replies.post_reply(ThreadRef("discord", "1", "2", "999999999999"), "hello", idempotency_key="r-35")


async def test_an_updated_card_keeps_its_key(fake: FakeDiscord, platform: DiscordPlatform) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-33"), idempotency_key="card:d-33")
    await platform.review_desk.update_card(ref, sample_card("d-33", state=CardState.REJECTED))
    [edit] = fake.calls_to("PATCH", rf"/channels/{REVIEW_CHANNEL_ID}/messages/{ref.split(':')[1]}")
    assert edit.json["embeds"][0]["title"] == "Rejected"
    assert await platform.review_desk.find_card("card:d-33") == ref


async def test_a_dead_gateway_is_not_connected_and_reconnect_brings_it_back(
    fake: FakeDiscord, core: RecordingCore, platform: DiscordPlatform
) -> None:
    assert platform.connected

    # Discord closes the gateway with a code discord.py does not resume from (4010, "invalid
    # shard"): the gateway task ends.
    await fake.drop_gateway(4010, "Invalid shard.")
    client = platform.client
    assert client is not None
    await until(client.is_closed, what="discord.py to give the connection up")
    assert not platform.connected

    await platform.reconnect()
    assert platform.connected
    assert len(fake.identifies) == 2
    await fake.post_user_message(SUPPORT_CHANNEL_ID, ALICE, f"<@{BOT_ID}> are you back?", mention_bot=True)
    [received] = await core.wait_for_messages(1)
    assert "are you back?" in received.text


async def test_connected_is_false_before_start_and_after_stop(core: RecordingCore) -> None:
    adapter = make_platform(core.settings)
    assert not adapter.connected
    await adapter.start(core)
    assert adapter.connected
    await adapter.reconnect()  # a live gateway is left alone
    await adapter.stop()
    assert not adapter.connected


def test_the_adapter_settings_come_from_the_same_variables() -> None:
    assert DiscordSettings.from_settings(Settings(_env_file=None)) is None  # type: ignore[call-arg]
    own = DiscordSettings.from_settings(
        Settings(_env_file=None, discord_bot_token="tok-1", discord_review_channel=" 42 ")  # type: ignore[call-arg]
    )
    assert own is not None and own.review_channel_id == 42 and own.pending_indicator == "reaction"
    assert "tok-1" not in repr(own)
    with pytest.raises(ConfigError, match="DISCORD_REVIEW_CHANNEL"):
        DiscordSettings.from_settings(
            Settings(_env_file=None, discord_bot_token="tok-1", discord_review_channel="#staff")  # type: ignore[call-arg]
        )


class FailingCore(RecordingCore):
    """A core whose database is down: every decision fails."""

    async def decide(self, decision: ReviewDecision) -> DecisionOutcome:
        self.decisions.append(decision)
        raise RuntimeError("database is locked")


async def test_a_click_whose_decision_cannot_be_recorded_tells_the_clicker(
    fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    core = FailingCore(discord_settings(fake))
    adapter = make_platform(core.settings)
    await adapter.start(core)
    try:
        assert adapter.review_desk is not None
        ref = await adapter.review_desk.post_card(sample_card("d-34"), idempotency_key="card:d-34")
        click = await fake.click(ref.split(":")[1], "supportbot:approve:d-34", BOB)
        await until(lambda: bool(click.followups), what="the ephemeral followup")
    finally:
        await adapter.stop()
    [followup] = click.followups
    assert followup["content"] == COULD_NOT_RECORD and followup["flags"] & 64
    [card] = [m for m in fake.messages_in(REVIEW_CHANNEL_ID) if m["embeds"]]
    assert card["embeds"][0]["title"] == "Draft awaiting review", "the card is left as it is"
    logged = [r.getMessage() for r in caplog.records if "could not be recorded" in r.getMessage()]
    assert logged and "d-34" in logged[0] and BOB.id in logged[0]


async def test_a_click_discord_no_longer_knows_is_one_warning_not_a_traceback(
    fake: FakeDiscord, platform: DiscordPlatform, caplog: pytest.LogCaptureFixture
) -> None:
    assert platform.review_desk is not None
    ref = await platform.review_desk.post_card(sample_card("d-35"), idempotency_key="card:d-35")
    click = await fake.click(ref.split(":")[1], "supportbot:approve:d-35", BOB)
    await fake.wait_for_response(click)
    expired = {**click.payload, "id": fake.next_id()}  # Discord forgets an interaction after 3 s (10062)
    await fake.dispatch("INTERACTION_CREATE", expired)

    told = await until(lambda: [r for r in caplog.records if "Unknown interaction" in r.getMessage()], "the warning")
    assert [(r.levelname, r.exc_info) for r in told] == [("WARNING", None)]
    assert "approve on draft d-35" in told[0].getMessage()


async def test_the_fake_serves_channel_history_as_discord_does(fake: FakeDiscord) -> None:
    import httpx

    posted = [await fake.post_user_message(REVIEW_CHANNEL_ID, ALICE, f"m{index}") for index in range(5)]
    headers = {"Authorization": f"Bot {fake.token}"}
    url = f"{fake.api_url}/channels/{REVIEW_CHANNEL_ID}/messages"
    async with httpx.AsyncClient(headers=headers) as http:
        sent = await http.post(url, json={"content": "m5", "nonce": "n-1", "enforce_nonce": True})
        assert sent.json()["nonce"] == "n-1", "the create answer carries the nonce"
        newest = (await http.get(url, params={"limit": 2})).json()
        older = (await http.get(url, params={"limit": 2, "before": newest[-1]["id"]})).json()
        after = (await http.get(url, params={"limit": 2, "after": posted[0]["id"]})).json()
        assert (await http.get(url, params={"limit": 101})).status_code == 400
        assert (await http.get(f"{fake.api_url}/channels/1/messages")).status_code == 404
        assert (await http.get(url, headers={"Authorization": "Bot wrong"})).status_code == 401
    assert [m["content"] for m in newest] == ["m5", "m4"], "newest first"
    assert [m["content"] for m in older] == ["m3", "m2"]
    assert [m["content"] for m in after] == ["m2", "m1"], "the oldest after the id, newest first"
    assert all("nonce" not in m for m in newest + older + after), "fetched messages carry no nonce"
