"""Images, fair at the edge (issue 20, point 2): one customer's photo must not stall the others,
and a message full of large images costs a bounded request, database and memory.

The real bot on loopback (the playground's upload is in tests/test_playground.py). Every image is
scaled to at most 1568 px a side and re-encoded before it reaches Kimi, at most
``limits.max_images_per_message`` of a message are sent (the rest are listed on the card), a
decompression bomb is refused with a card line, and an image charges the account's TPM a fixed
figure, not its base64 bytes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.files import MAX_FILE_BYTES
from bot.core.images import MAX_SIDE
from tests.fakes.discord import ALICE, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.files import FakeFileHost, photo, png_bomb, sent_images
from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import SLACK_TOKEN, card_text, running_bot, until, wait_until
from tests.processes import BotProcess, seed_orders


@functools.cache
def phone_photo() -> bytes:
    """A 4000×3000 phone photo of about 4.9 MB, just under the download cap."""
    data = photo(4000, 3000, quality=87)
    assert 4_500_000 < len(data) <= MAX_FILE_BYTES, len(data)
    return data


@pytest.fixture
async def files_host() -> AsyncIterator[FakeFileHost]:
    async with FakeFileHost(token=SLACK_TOKEN) as host:
        yield host


def database_bytes(home: Path) -> int:
    return sum(path.stat().st_size for path in home.glob("supportbot.db*"))


@pytest.mark.parametrize("exact_tokens", [False, True], ids=["fixed-per-image", "kimi-counts"])
async def test_a_customers_large_photo_does_not_queue_another_customers_card_behind_it(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, files_host: FakeFileHost, exact_tokens: bool
) -> None:
    """The finding: a 4.9 MB photo was charged as its base64 bytes ÷ 3 (about 2.2 million
    "tokens"), above the minute's limit, so it went alone and the next customer's draft waited
    out the limiter's one-minute window (0.3 s → 119 s). At a TPM its bytes would exceed (even
    scaled down, ~160,000) but a per-image figure does not, the second card is not held: the
    figure is 4,096 tokens, or with KIMI_EXACT_TOKENS what Kimi's count endpoint says (by
    resolution)."""
    kimi.script(Reply("Sorry about the mug, we will replace it."), Reply("Your parcel ships tomorrow."))
    slack.add_user("U444", "customer.dan", real_name="Dan Customer")
    photo_file = files_host.slack_file("broken-mug.jpg", phone_photo(), "image/jpeg")
    settings = {"slack_files_url": files_host.origin, "kimi_tpm": 60_000, "kimi_exact_tokens": exact_tokens}
    async with running_bot(tmp_path, kimi, slack, **settings) as harness:
        first = app_mention("<@UBOT> my mug arrived like this", user="U222", channel="C111", files=[photo_file])
        assert (await harness.sender.event(first)).status_code == 200
        await until(lambda: kimi.completions, "the photo's draft to reach Kimi", timeout=20)
        [with_photo] = sent_images(kimi.completions[0])
        assert max(with_photo.size) <= MAX_SIDE
        loop = asyncio.get_running_loop()
        asked = loop.time()
        second = app_mention("<@UBOT> when does my parcel ship?", user="U444", channel="C111")
        assert (await harness.sender.event(second)).status_code == 200
        # Queued behind the photo, this card would wait out the limiter's 60-second window.
        cards = await wait_until(harness.cards, 2, timeout=30)
        waited = loop.time() - asked
    texts = [card_text(card) for card in cards]
    assert any("when does my parcel ship?" in text for text in texts)
    assert any("broken-mug.jpg" in text and "broken-mug.jpg: not" not in text for text in texts)
    assert waited < 30
    counted = [r for r in kimi.requests if r.path.endswith("/estimate-token-count")]
    assert len(counted) == (2 if exact_tokens else 0)


async def test_ten_large_images_in_one_discord_message_send_four_small_ones_and_list_the_rest(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """The finding: ten large images in one message took 890 MiB of RSS, +211 MB of database
    and a 140 MB request to Kimi. Now four are downloaded, scaled down and stored small."""
    async with FakeDiscord() as discord, running_bot(tmp_path, kimi, slack, **discord.bot_settings) as harness:
        attachments = [discord.serve_file(f"photo-{n}.jpg", phone_photo(), "image/jpeg") for n in range(1, 11)]
        before = database_bytes(tmp_path)
        await discord.post_user_message(
            SUPPORT_CHANNEL_ID, ALICE, "my order arrived like this", mention_bot=True, attachments=attachments
        )
        [card] = await harness.wait_cards(1, timeout=40)
        grown = database_bytes(tmp_path) - before
        downloads = [call for call in discord.calls if call.path.startswith("/cdn/")]
    text = card_text(card)
    for n in range(5, 11):
        assert f"photo-{n}.jpg: not sent to the model (over 4 images)" in text
    for n in range(1, 5):
        assert f"photo-{n}.jpg" in text and f"photo-{n}.jpg: not" not in text
    assert len(downloads) == 4, "the images over the limit are not even downloaded"
    [request] = [r for r in kimi.requests if r.path.endswith("/chat/completions")]
    images = sent_images(kimi.completions[0])
    assert len(images) == 4
    assert all(image.format == "JPEG" and max(image.size) <= MAX_SIDE for image in images)
    assert len(request.raw) < 3 * 1024 * 1024, f"the request to Kimi was {len(request.raw) >> 10} KiB"
    assert grown < 3 * 1024 * 1024, f"the database grew by {grown >> 10} KiB"


async def test_a_decompression_bomb_is_refused_with_a_card_line_and_no_memory_blow_up(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, files_host: FakeFileHost
) -> None:
    """A 20000×20000 PNG of a few hundred bytes would take 1.2 GB decoded: it is refused by its
    header, the draft goes on with the text, and the installed bot's RSS stays put."""
    bomb = png_bomb(20_000, 20_000)
    assert len(bomb) < 2048
    bomb_file = files_host.slack_file("bomb.png", bomb, "image/png")
    bot = BotProcess(tmp_path, kimi.base_url, slack, SLACK_FILES_URL=files_host.origin)
    await seed_orders(bot.database_url, tmp_path / "orders.jsonl")
    await bot.start()
    try:
        async with bot.peak_rss() as rss:
            envelope = app_mention("<@UBOT> what is this picture?", files=[bomb_file])
            assert (await bot.sender.event(envelope)).status_code == 200
            [card] = await wait_until(bot.cards, timeout=20)
    finally:
        await bot.stop()
    assert "bomb.png: not sent to the model (over 40 megapixels)" in card_text(card)
    assert "approve_draft" in card_text(card), "the draft went on with the text"
    assert sent_images(kimi.completions[0]) == []
    assert rss.growth < 64 * 1024 * 1024, f"RSS grew by {rss.growth >> 20} MiB"
