"""Images, fair at the edge (issue 20, point 2): one customer's photo must not stall the others,
and a message full of large images costs a bounded request, database and memory.

The real bot on loopback. Every image is scaled to at most 1568 px a side and re-encoded before
it reaches Kimi, at most ``limits.max_images_per_message`` of a message are sent (the rest are
listed on the card), a decompression bomb is refused with a card line, and an image charges the
account's TPM a fixed figure, not its base64 bytes.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import ExifTags, Image

from bot.core.files import MAX_FILE_BYTES
from bot.core.images import MAX_SIDE
from tests.fakes.discord import ALICE, SUPPORT_CHANNEL_ID, FakeDiscord
from tests.fakes.files import FakeFileHost, photo, png_bomb
from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import SLACK_TOKEN, card_text, running_bot, until, wait_until
from tests.playground_support import playground_bot
from tests.processes import BotProcess, seed_orders
from tests.test_playground import client_for, state_when


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


def sent_image_bytes(completion: dict[str, Any]) -> list[bytes]:
    """The bytes of the images in a chat completion's request."""
    found = []
    for message in completion["messages"]:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                found.append(base64.b64decode(part["image_url"]["url"].split(";base64,", 1)[1]))
    return found


def sent_images(completion: dict[str, Any]) -> list[Image.Image]:
    """The images of a chat completion's request, decoded as Kimi would."""
    return [Image.open(io.BytesIO(data)) for data in sent_image_bytes(completion)]


def database_bytes(home: Path) -> int:
    return sum(path.stat().st_size for path in home.glob("supportbot.db*"))


async def test_a_customers_large_photo_does_not_queue_another_customers_card_behind_it(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, files_host: FakeFileHost
) -> None:
    """The finding: a 4.9 MB photo was charged as its base64 bytes ÷ 3 (about 2.2 million
    "tokens"), above the minute's limit, so it went alone and the next customer's draft waited
    out the limiter's one-minute window (0.3 s → 119 s). At a TPM its bytes would exceed (even
    scaled down, ~160,000) but a per-image figure does not, the second card is not held."""
    kimi.script(Reply("Sorry about the mug, we will replace it."), Reply("Your parcel ships tomorrow."))
    slack.add_user("U444", "customer.dan", real_name="Dan Customer")
    photo_file = files_host.slack_file("broken-mug.jpg", phone_photo(), "image/jpeg")
    async with running_bot(tmp_path, kimi, slack, slack_files_url=files_host.origin, kimi_tpm=60_000) as harness:
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


async def test_ten_large_images_in_one_discord_message_send_four_small_ones_and_list_the_rest(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    """The finding: ten large images in one message took 890 MiB of RSS, +211 MB of database
    and a 140 MB request to Kimi. Now four are downloaded, scaled down and stored small."""
    async with FakeDiscord() as discord:
        overrides = {
            "discord_bot_token": discord.token,
            "discord_api_url": discord.api_url,
            "discord_cdn_urls": discord.cdn_url,
        }
        async with running_bot(tmp_path, kimi, slack, **overrides) as harness:
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
    peak = 0

    async def sample(process: psutil.Process) -> None:
        nonlocal peak
        while True:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.02)

    try:
        assert bot.process is not None
        process = psutil.Process(bot.process.pid)
        baseline = process.memory_info().rss
        sampler = asyncio.create_task(sample(process))
        envelope = app_mention("<@UBOT> what is this picture?", files=[bomb_file])
        assert (await bot.sender.event(envelope)).status_code == 200
        [card] = await wait_until(bot.cards, timeout=20)
        sampler.cancel()
    finally:
        await bot.stop()
    assert "bomb.png: not sent to the model (over 40 megapixels)" in card_text(card)
    assert "approve_draft" in card_text(card), "the draft went on with the text"
    assert sent_images(kimi.completions[0]) == []
    assert peak - baseline < 64 * 1024 * 1024, f"RSS grew by {(peak - baseline) >> 20} MiB"


async def test_a_photo_uploaded_in_the_playground_reaches_kimi_small_upright_and_without_its_exif(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    """The playground hands the bot the bytes at the ack; they go through the same shrinking as a
    download, and the database keeps only the small version."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Acme Phone"
    exif[ExifTags.Base.Orientation] = 6  # taken sideways: shown turned 90°
    exif[ExifTags.IFD.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (52.0, 22.0, 1.0)}
    upload = photo(2400, 1600, quality=80, exif=exif.tobytes())  # under the server's 2 MB body limit
    kimi.script(Reply("Sorry about the mug! A teammate will look at the photo."))
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        sent = await client.post(
            "/playground/api/message",
            data={"text": "It arrived broken"},
            files={"image": ("broken-mug.jpg", upload, "image/jpeg")},
        )
        assert sent.json()["ok"], sent.text
        state = await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
    assert "broken-mug.jpg" in state["desk"] and "broken-mug.jpg: not" not in state["desk"]
    [image] = sent_images(kimi.completions[0])
    assert image.size == (1045, MAX_SIDE), "upright (portrait) and at most 1568 px a side"
    assert not image.getexif(), "no EXIF: no GPS position, no phone model"
    with sqlite3.connect(tmp_path / "supportbot.db") as db:
        stored = db.execute("SELECT length(data) FROM attachments").fetchall()
    [sent] = sent_image_bytes(kimi.completions[0])
    assert stored == [(len(sent),)], "only the small version is kept, not the upload"
    assert len(sent) < len(upload) // 2
