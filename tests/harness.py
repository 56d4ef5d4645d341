"""The integration harness: the real bot (``Supportbot``, as ``supportbot run`` starts it)
serving HTTP on loopback, talking to a fake Slack and a fake Kimi, with a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from bot.app import Supportbot
from bot.settings import Settings
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import SlackSender, app_mention, block_actions, message, view_submission
from tools import import_orders

T = TypeVar("T")

KIMI_KEY = "sk-canary-kimi-9f8e7d6c5b4a"
SLACK_TOKEN = "xoxb-canary-slack-1234567890"
SIGNING_SECRET = "canary-signing-secret-abcdef123456"
REVIEW_CHANNEL = "C999"
CUSTOMER_CHANNEL = "C111"


def settings_for(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "moonshot_api_key": KIMI_KEY,
        "kimi_base_url": kimi.base_url,
        "kimi_model": "kimi-k2.5",
        "kimi_timeout_seconds": 5.0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'supportbot.db'}",
        "policy_file": tmp_path / "policy.toml",
        "policy_reload_seconds": 0.2,
        "host": "127.0.0.1",
        "port": 0,
    }
    if slack is not None:
        values |= {
            "slack_bot_token": SLACK_TOKEN,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack.base_url,
            "slack_review_channel": REVIEW_CHANNEL,
        }
    values |= overrides
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def sample_orders(now: datetime | None = None) -> list[dict[str, Any]]:
    """A small shop: one shipped order, one delivered recently, one delivered long ago."""
    now = now or datetime.now(UTC)
    return [
        {
            "order_id": "#W2611340",
            "customer_id": "C-1",
            "customer_name": "Kim Lee",
            "customer_email": "kim@example.com",
            # The test users asking about this order are its customer (guards: identity).
            "customer_accounts": "slack:U222 discord:1400000000000000001",
            "status": "shipped",
            "currency": "USD",
            "total": "89.90",
            "placed_at": (now - timedelta(days=3)).isoformat(),
            "carrier": "UPS",
            "tracking_number": "1Z999AA10123456784",
            "estimated_delivery": (now + timedelta(days=2)).date().isoformat(),
            "items": [{"sku": "MUG-1", "name": "Blue mug", "quantity": 2, "unit_price": "44.95"}],
        },
        {
            "order_id": "40021",
            "customer_id": "C-2",
            "customer_name": "Ana Diaz",
            "status": "delivered",
            "currency": "USD",
            "total": "320.00",
            "placed_at": (now - timedelta(days=10)).isoformat(),
            "delivered_at": (now - timedelta(days=5)).isoformat(),
            "carrier": "DHL",
            "tracking_number": "JD0146",
            "items": [{"sku": "CHAIR-9", "name": "Desk chair", "quantity": 1, "unit_price": "320.00"}],
        },
        {
            "order_id": "ORD-77",
            "customer_id": "C-3",
            "status": "delivered",
            "currency": "USD",
            "total": "25.00",
            "placed_at": (now - timedelta(days=90)).isoformat(),
            "delivered_at": (now - timedelta(days=80)).isoformat(),
            "items": [],
        },
    ]


@dataclass
class Harness:
    """A running bot and its fakes, with the moves a test makes as Slack would."""

    bot: Supportbot
    slack: FakeSlack
    kimi: FakeKimi
    tmp_path: Path
    sender: SlackSender = field(init=False)

    def __post_init__(self) -> None:
        self.sender = SlackSender(
            f"http://127.0.0.1:{self.bot.port}/slack/events", SIGNING_SECRET, mirror_to=self.slack
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.bot.port}"

    async def import_orders(self, rows: list[dict[str, Any]] | None = None) -> None:
        path = self.tmp_path / "orders.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in (rows or sample_orders())) + "\n")
        await import_orders(self.bot.engine, path)

    async def mention(self, text: str, **kwargs: Any) -> dict[str, Any]:
        envelope = app_mention(f"<@UBOT> {text}", **kwargs)
        response = await self.sender.event(envelope)
        assert response.status_code == 200, response.text
        return envelope

    async def reply_in_thread(self, text: str, thread_ts: str, **kwargs: Any) -> dict[str, Any]:
        envelope = message(text, thread_ts=thread_ts, **kwargs)
        response = await self.sender.event(envelope)
        assert response.status_code == 200, response.text
        return envelope

    def cards(self) -> list[Any]:
        """Cards posted to the review channel (postMessage calls with blocks)."""
        return [
            c
            for c in self.slack.calls_to("chat.postMessage")
            if c.params.get("channel") == REVIEW_CHANNEL and c.params.get("blocks")
        ]

    async def wait_cards(self, count: int = 1, timeout: float = 10.0) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            cards = self.cards()
            if len(cards) >= count:
                return cards
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} cards, saw {len(self.cards())}")

    def replies(self, thread_ts: str | None = None, channel: str = CUSTOMER_CHANNEL) -> list[Any]:
        return [
            c
            for c in self.slack.calls_to("chat.postMessage")
            if c.params.get("channel") == channel and (thread_ts is None or c.params.get("thread_ts") == thread_ts)
        ]

    async def wait_replies(self, thread_ts: str | None, count: int = 1, timeout: float = 10.0) -> list[Any]:
        return await wait_until(lambda: self.replies(thread_ts), count, timeout)

    async def click(self, action_id: str, draft_id: str, user: str = "U333", **kwargs: Any) -> Any:
        response = await self.sender.action(
            block_actions(action_id, draft_id, user=user, channel=REVIEW_CHANNEL, **kwargs)
        )
        assert response.status_code == 200, response.text
        return response

    async def submit(
        self, callback_id: str, draft_id: str, values: dict[str, dict[str, str]], user: str = "U333"
    ) -> Any:
        payload = view_submission(
            callback_id, json.dumps({"draft_id": draft_id, "channel": REVIEW_CHANNEL}), values, user=user
        )
        return await self.sender.action(payload)

    def ephemerals(self, user: str | None = None) -> list[str]:
        return [
            str(c.params.get("text"))
            for c in self.slack.calls_to("chat.postEphemeral")
            if user is None or c.params.get("user") == user
        ]

    def card_updates(self, draft_id: str) -> list[Any]:
        return [c for c in self.slack.calls_to("chat.update") if draft_id[:8] in json.dumps(c.params.get("blocks"))]

    async def wait_card_update(self, draft_id: str, containing: str, timeout: float = 10.0) -> Any:
        """The newest update of a draft's card once it contains ``containing``."""
        found = await wait_until(
            lambda: [c for c in self.card_updates(draft_id) if containing in card_text(c)], 1, timeout
        )
        return found[-1]

    async def settle(self) -> None:
        """Let background work (drafting, dispatch) finish."""
        assert self.bot.core is not None
        await self.bot.core.background.settle(10)


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, policy: str | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    """Start the real bot against the fakes (with ``policy`` as its policy file) and stop it after."""
    if policy is not None:
        (tmp_path / "policy.toml").write_text(policy)
    bot = Supportbot(settings_for(tmp_path, kimi, slack, **overrides))
    await bot.start()
    harness = Harness(bot, slack, kimi, tmp_path)
    await harness.import_orders()
    try:
        yield harness
    finally:
        await bot.stop()


@contextlib.asynccontextmanager
async def running_instances(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, database_url: str, count: int = 2
) -> AsyncIterator[tuple[Harness, list[SlackSender]]]:
    """``count`` bots on one database (orders imported), the first one's harness, and a sender
    to each instance's ``/slack/events``; all stopped after."""
    instances = [Supportbot(settings_for(tmp_path, kimi, slack, database_url=database_url)) for _ in range(count)]
    try:
        for instance in instances:
            await instance.start()
        first = Harness(instances[0], slack, kimi, tmp_path)
        await first.import_orders()
        yield first, [SlackSender(f"http://127.0.0.1:{i.port}/slack/events", SIGNING_SECRET) for i in instances]
        for instance in instances:
            assert instance.core is not None
            await instance.core.background.settle(5)
    finally:
        for instance in instances:
            await instance.stop()


async def until(check: Callable[[], T | Awaitable[T]], what: str = "condition", timeout: float = 15.0) -> T:
    """Poll ``check`` (a function, or a coroutine function such as an HTTP probe) until it returns
    something truthy, and return that; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        found = await result if inspect.isawaitable(result) else result
        if found:
            return found
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_until(fetch: Callable[[], list[Any]], count: int = 1, timeout: float = 10.0) -> list[Any]:
    """Wait until ``fetch`` returns at least ``count`` items, and return them."""
    found: list[Any] = []

    def enough() -> bool:
        found[:] = fetch()
        return len(found) >= count

    try:
        await until(enough, f"{count} item(s)", timeout)
    except AssertionError:
        raise AssertionError(f"expected {count}, saw {len(fetch())}") from None
    return found


def undelivered_mention(slack: FakeSlack, text: str) -> tuple[dict[str, Any], str]:
    """A mention whose first delivery to the bot failed: Slack holds it (it is in the channel's
    history) and retries later. Returns the envelope, to send as that retry, and its ``ts``."""
    envelope = app_mention(text)
    slack.ingest_event(envelope)
    return envelope, str(envelope["event"]["ts"])


def draft_id_of(card_call: Any) -> str:
    """The draft id a card's Approve button carries."""
    for block in card_call.params["blocks"]:
        if block.get("type") == "actions":
            return str(block["elements"][0]["value"])
    raise AssertionError("card has no buttons")


def card_text(call: Any) -> str:
    return json.dumps(call.params.get("blocks"), ensure_ascii=False)
