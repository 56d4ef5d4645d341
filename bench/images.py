"""Images at the edge (issue 20, point 2): what large customer photos cost the installed bot.

The real ``supportbot run`` (a child process, SQLite in a temporary directory) against the fake
Kimi, the fake Slack and a loopback Slack file host, in two scenes:

* **ten photos**: one message carrying ten phone photos of about 4.9 MB (4000×3000 JPEG, just
  under the 5 MB download cap). Reported: the child's peak RSS above its idle RSS (psutil, every
  20 ms), how much the database files grew, the bytes of the chat request Kimi received, the
  images in it and their largest side, and the time from the event to the card.
* **fairness**: ``KIMI_TPM=60000``; one customer sends one such photo and, once its draft's
  request has reached Kimi, another customer asks a text question. Reported: the time from the
  second question to its card (queued behind the photo, it would wait out the limiter's
  one-minute window).

``--source DIR`` runs the bot from another checkout (``PYTHONPATH=DIR``), e.g. the commit before
the change, exported with ``git archive <commit> | tar -x -C DIR``, for the "before" column.

Run from the repository root (about 40 s; about 100 s against the code before the change)::

    python -m bench.images [--source DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench._common import markdown_table
from tests.fakes.files import FakeFileHost, photo, sent_images
from tests.fakes.kimi import FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import KIMI_KEY, SLACK_TOKEN, until, wait_until
from tests.processes import BotProcess, seed_orders

PHOTOS = 10
FAIR_TPM = 60_000


def database_bytes(home: Path) -> int:
    return sum(path.stat().st_size for path in home.glob("supportbot.db*"))


async def started_bot(
    home: Path, kimi: FakeKimi, slack: FakeSlack, files: FakeFileHost, env: dict[str, str]
) -> BotProcess:
    bot = BotProcess(home, kimi.base_url, slack, SLACK_FILES_URL=files.origin, LOG_LEVEL="WARNING", **env)
    await seed_orders(bot.database_url, home / "orders.jsonl")
    await bot.start()
    return bot


async def ten_photos(home: Path, picture: bytes, env: dict[str, str]) -> dict[str, str]:
    async with (
        FakeKimi(api_key=KIMI_KEY) as kimi,
        FakeSlack(bot_token=SLACK_TOKEN) as slack,
        FakeFileHost(token=SLACK_TOKEN) as files,
    ):
        kimi.script(Reply("Sorry about your order; a teammate will look at the photos."))
        bot = await started_bot(home, kimi, slack, files, env)
        try:
            assert bot.process is not None
            before = database_bytes(home)
            attached = [files.slack_file(f"photo-{n}.jpg", picture, "image/jpeg") for n in range(1, PHOTOS + 1)]
            started = time.perf_counter()
            async with bot.peak_rss() as rss:
                await bot.sender.event(app_mention("<@UBOT> my order arrived like this", files=attached))
                await wait_until(bot.cards, timeout=120)
            to_card = time.perf_counter() - started
            grown = database_bytes(home) - before
        finally:
            await bot.stop()
    [request] = [r for r in kimi.requests if r.path.endswith("/chat/completions")]
    sides = [max(image.size) for image in sent_images(kimi.completions[0])]
    return {
        "peak RSS above idle": f"{rss.growth / 2**20:.0f} MiB",
        "database growth": f"{grown / 2**20:.1f} MiB",
        "request to Kimi": f"{len(request.raw) / 2**20:.1f} MiB",
        "images sent to Kimi": str(len(sides)),
        "largest side sent": f"{max(sides, default=0)} px",
        "event to card": f"{to_card:.1f} s",
    }


async def fairness(home: Path, picture: bytes, env: dict[str, str]) -> dict[str, str]:
    async with (
        FakeKimi(api_key=KIMI_KEY) as kimi,
        FakeSlack(bot_token=SLACK_TOKEN) as slack,
        FakeFileHost(token=SLACK_TOKEN) as files,
    ):
        kimi.script(Reply("Sorry about the mug, we will replace it."), Reply("Your parcel ships tomorrow."))
        slack.add_user("U444", "customer.dan", real_name="Dan Customer")
        bot = await started_bot(home, kimi, slack, files, {"KIMI_TPM": str(FAIR_TPM), **env})
        try:
            attached = [files.slack_file("broken-mug.jpg", picture, "image/jpeg")]
            await bot.sender.event(app_mention("<@UBOT> my mug arrived like this", files=attached))
            await until(lambda: kimi.completions, "the photo's request", timeout=60)
            asked = time.perf_counter()
            await bot.sender.event(app_mention("<@UBOT> when does my parcel ship?", user="U444"))
            await until(lambda: any("parcel ship" in str(c.params) for c in bot.cards()), "the card", timeout=150)
            waited = time.perf_counter() - asked
        finally:
            await bot.stop()
    return {f"other customer's card (KIMI_TPM={FAIR_TPM})": f"{waited:.1f} s"}


async def bench(args: argparse.Namespace) -> None:
    picture = photo(4000, 3000, quality=87)
    env = {"PYTHONPATH": str(Path(args.source).resolve())} if args.source else {}
    figures: dict[str, str] = {"photo": f"{len(picture) / 2**20:.2f} MiB, 4000×3000 JPEG"}
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        figures |= await ten_photos(Path(first), picture, env)
        figures |= await fairness(Path(second), picture, env)
    print(f"bot code: {args.source or 'this checkout'}\n")
    print(markdown_table(["figure", "value"], list(figures.items())))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="", help="run the bot from this checkout (PYTHONPATH) instead")
    asyncio.run(bench(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
