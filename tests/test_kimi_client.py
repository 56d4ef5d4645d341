"""The Kimi client against the fake Kimi: streamed answers reassembled, failures told apart."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from bot.errors import KimiCircuitOpen, KimiFatalError
from bot.kimi import KimiClient
from tests.fakes.kimi import CallTools, Fail, FakeKimi, Hang, Malformed, Reply
from tests.harness import KIMI_KEY

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look an order up.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    }
]
ASK = [{"role": "user", "content": "where is order #W2611340?"}]


def client(kimi: FakeKimi, **options: float) -> KimiClient:
    return KimiClient(kimi.base_url, SecretStr(KIMI_KEY), backoff_base=0.05, **options)  # type: ignore[arg-type]


async def test_a_streamed_tool_call_is_reassembled_with_its_opaque_id(kimi: FakeKimi) -> None:
    kimi.script(CallTools([("get_order_status", {"order_id": "#W2611340"})]))
    kimi_client = client(kimi)
    try:
        completion = await kimi_client.chat(model="kimi-k2.5", messages=ASK, tools=TOOLS, thinking=True)
    finally:
        await kimi_client.aclose()
    [call] = completion.tool_calls
    assert call.id == "functions.get_order_status:0" and call.arguments == '{"order_id": "#W2611340"}'
    assert completion.message["reasoning_content"], "thinking is carried for the next turn"
    assert completion.finish_reason == "tool_calls" and completion.usage.prompt_tokens > 0
    request = kimi.completions[-1]
    assert request["stream"] is True and "temperature" not in request


async def test_a_stream_that_stalls_is_retried(kimi: FakeKimi) -> None:
    kimi.script(Hang(5, after_chunks=2))
    kimi_client = client(kimi, timeout=0.5)
    try:
        completion = await kimi_client.chat(model="kimi-k2.5", messages=ASK)
    finally:
        await kimi_client.aclose()
    assert len(kimi.requests) == 2, "the stalled stream was abandoned and the call retried"
    assert completion.content.startswith("Thanks for reaching out")


async def test_a_body_that_is_not_a_stream_is_retried(kimi: FakeKimi) -> None:
    kimi.script(Malformed(), Reply("Hello again."))
    kimi_client = client(kimi)
    try:
        assert (await kimi_client.chat(model="kimi-k2.5", messages=ASK)).content == "Hello again."
    finally:
        await kimi_client.aclose()


async def test_the_wait_named_in_a_429_is_honoured(kimi: FakeKimi) -> None:
    kimi.script(Fail.rate_limited(after=1), Reply("ok"))
    kimi_client = client(kimi)
    started = time.monotonic()
    try:
        await kimi_client.chat(model="kimi-k2.5", messages=ASK)
    finally:
        await kimi_client.aclose()
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Fail.quota_exceeded(), KimiFatalError),
        (Fail(401, "invalid_authentication_error", "Invalid Authentication"), KimiFatalError),
        (Fail.content_filter(), KimiFatalError),
    ],
)
async def test_failures_retrying_cannot_fix_are_not_retried(
    kimi: FakeKimi, failure: Fail, error: type[Exception]
) -> None:
    kimi.script(failure, Reply("never reached"))
    kimi_client = client(kimi)
    try:
        with pytest.raises(error) as caught:
            await kimi_client.chat(model="kimi-k2.5", messages=ASK)
    finally:
        await kimi_client.aclose()
    assert len(kimi.requests) == 1
    assert KIMI_KEY not in str(caught.value)


async def test_persistent_overload_waits_without_spending_retries_until_the_breaker_opens(kimi: FakeKimi) -> None:
    kimi.fail_always(429, "engine_overloaded_error", "The engine is currently overloaded, please try again later")
    kimi_client = client(kimi, max_retries=0)
    try:
        with pytest.raises(KimiCircuitOpen):
            await kimi_client.chat(model="kimi-k2.5", messages=ASK)
    finally:
        await kimi_client.aclose()
    assert len(kimi.requests) == kimi_client.breakers.failure_threshold
