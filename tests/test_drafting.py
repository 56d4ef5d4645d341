"""The drafting agent's guardrails, seen from the review desk: model output that breaks the
rules, failing tools, limits from the policy, and the K2.5 rules the fake Kimi enforces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select

from bot.errors import ConfigError
from bot.prompt import untrusted
from bot.store import UsageRecord, sessionmaker
from tests.fakes.kimi import CallTools, Fail, FakeKimi, Reply
from tests.fakes.slack import FakeSlack
from tests.harness import card_text, running_bot


def chat_requests(kimi: FakeKimi) -> list[dict]:  # type: ignore[type-arg]
    return [r.body for r in kimi.requests if r.path.endswith("/chat/completions")]


async def test_malformed_and_unknown_tool_calls_come_back_as_errors_the_model_can_explain(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack) as harness:
        kimi.script(CallTools([("get_order_status", '{"order_id": '), ("delete_all_orders", {"really": True})]))
        await harness.mention("where is #W2611340")
        [card] = await harness.wait_cards(1)
        text = card_text(card)
        assert "get_order_status failed: invalid_arguments" in text
        assert "delete_all_orders failed: unknown_tool" in text
        assert "approve_draft" in text, "the model explained; the agent can still decide"
        tool_messages = [m for m in kimi.completions[-1]["messages"] if m["role"] == "tool"]
        assert '"code": "invalid_arguments"' in tool_messages[0]["content"]
        assert '"code": "unknown_tool"' in tool_messages[1]["content"]


async def test_an_identical_repeated_call_forces_a_final_answer(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack) as harness:
        same = CallTools([("get_order_status", {"order_id": "40021"})])
        kimi.script(same, CallTools([("get_order_status", {"order_id": "40021"})]))
        await harness.mention("where is 40021")
        [card] = await harness.wait_cards(1)
        requests = chat_requests(kimi)
        assert len(requests) == 3
        assert requests[2]["tool_choice"] == "none"
        assert "repeated call to get_order_status" in card_text(card)
        assert card_text(card).count("`get_order_status`") == 1, "the repeat was not run again"


async def test_the_policy_step_limit_forces_a_final_answer(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    async with running_bot(tmp_path, kimi, slack, policy="[limits]\nmax_tool_steps = 2\n") as harness:
        kimi.script(
            CallTools([("get_order_status", {"order_id": "40021"})]),
            CallTools([("get_order_status", {"order_id": "ORD-77"})]),
        )
        await harness.mention("where are 40021 and ORD-77 and #W2611340?")
        [card] = await harness.wait_cards(1)
        requests = chat_requests(kimi)
        assert len(requests) == 3 and requests[2]["tool_choice"] == "none"
        assert "step limit (2) reached" in card_text(card)


async def test_a_model_that_keeps_calling_tools_gives_a_failure_card(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, policy="[limits]\nmax_tool_steps = 1\n") as harness:
        kimi.script(
            CallTools([("get_order_status", {"order_id": "40021"})]),
            CallTools([("get_order_status", {"order_id": "ORD-77"})]),
        )
        await harness.mention("where is 40021")
        [card] = await harness.wait_cards(1)
        assert "Drafting failed" in card_text(card) and "kept calling tools" in card_text(card)
        async with sessionmaker(harness.bot.engine)() as session:
            spent = await session.scalar(select(func.count()).select_from(UsageRecord))
        assert spent == 2, "the tokens of a failed draft are in the ledger too"


@pytest.fixture
async def slow_shop() -> AsyncIterator[str]:
    async def order(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({}, status=404)

    app = web.Application()
    app.router.add_get("/orders/{order_id}", order)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_slow_shop_backend_times_out_and_the_card_says_so(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, slow_shop: str
) -> None:
    policy = "[limits]\ntool_timeout_seconds = 0.3\n"
    async with running_bot(
        tmp_path, kimi, slack, policy=policy, orders_backend="http", orders_api_url=slow_shop
    ) as harness:
        await harness.mention("where is #W2611340")
        [card] = await harness.wait_cards(1)
        assert "get_order_status failed: timeout" in card_text(card)


async def test_the_fallback_model_drafts_when_the_main_model_is_retired_while_running(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, kimi_fallback_model="kimi-k2.6") as harness:
        kimi.retire("kimi-k2.5")
        await harness.mention("where is #W2611340")
        [card] = await harness.wait_cards(1)
        assert "kimi-k2.6" in card_text(card) and "approve_draft" in card_text(card)


async def test_a_model_kimi_does_not_serve_stops_the_start_with_the_ids_it_does(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.retire("kimi-k2.5")
    with pytest.raises(ConfigError) as caught:
        async with running_bot(tmp_path, kimi, slack):
            pass
    assert "KIMI_MODEL=kimi-k2.5" in str(caught.value) and "kimi-k2.6" in str(caught.value)


async def test_quota_exhaustion_is_not_retried(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    async with running_bot(tmp_path, kimi, slack) as harness:
        kimi.script(Fail.quota_exceeded())
        await harness.mention("where is #W2611340")
        [card] = await harness.wait_cards(1)
        assert "exceeded_current_quota_error" in card_text(card)
        assert len(chat_requests(kimi)) == 1


async def test_thinking_mode_carries_reasoning_back_on_tool_turns(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, policy="[models]\nthinking = true\n") as harness:
        await harness.mention("where is #W2611340")
        [card] = await harness.wait_cards(1)
        assert "approve_draft" in card_text(card), "the fake Kimi accepted every request (no 400)"
        second = kimi.completions[1]
        assistant = next(m for m in second["messages"] if m["role"] == "assistant")
        assert assistant["reasoning_content"].strip()
        assert "temperature" not in second and "top_p" not in second


async def test_escalation_tags_the_on_call_group(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    policy = '[escalation]\non_call_slack = "S0ONCALL"\n'
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        await harness.mention("I want to talk to a human, or I file a chargeback for 40021")
        [card] = await harness.wait_cards(1)
        text = card_text(card)
        assert "<!subteam^S0ONCALL>" in text
        assert "chargeback" in text and "asks for a human" in text


async def test_repeated_failed_drafts_escalate(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    policy = '[escalation]\nmax_failed_drafts = 2\non_call_slack = "S0ONCALL"\n'
    async with running_bot(tmp_path, kimi, slack, policy=policy, kimi_max_retries=0) as harness:
        kimi.fail_always(500, "server_error", "boom")
        envelope = await harness.mention("hello?")
        await harness.wait_cards(1)
        await harness.reply_in_thread("hello??", envelope["event"]["ts"])
        cards = await harness.wait_cards(2)
        assert "<!subteam^S0ONCALL>" not in card_text(cards[0])
        assert "<!subteam^S0ONCALL>" in card_text(cards[1]) and "2 failed drafts" in card_text(cards[1])


async def test_only_watched_channels_are_answered(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    async with running_bot(tmp_path, kimi, slack, policy='[channels]\nwatch = ["C777"]\n') as harness:
        await harness.mention("where is #W2611340")  # in C111
        await harness.mention("where is #W2611340", channel="C777")
        [card] = await harness.wait_cards(1)
        assert "C777" in card_text(card)
        await harness.settle()
        assert len(harness.cards()) == 1


async def test_the_daily_budget_stops_drafting(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> None:
    async with running_bot(tmp_path, kimi, slack, policy="[limits]\ndaily_budget_usd = 0.000001\n") as harness:
        await harness.mention("where is #W2611340")
        await harness.wait_cards(1)
        await harness.mention("and where is 40021?")
        cards = await harness.wait_cards(2)
        assert "daily model budget" in card_text(cards[1])
        assert len(chat_requests(kimi)) == 2, "no model call once the budget is spent"


async def test_a_huge_message_is_cut_and_the_card_stays_within_slack_limits(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack) as harness:
        kimi.script(Reply("We got your long message."))
        await harness.mention("<b>&amp;</b> " + "très long ✨ " * 12_000)
        [card] = await harness.wait_cards(1)
        assert card.response["ok"] is True
        sent = kimi.completions[0]["messages"][1]["content"]
        assert len(sent) <= 20_000 + len(untrusted(""))  # the customer text, cut, within its delimiters


async def test_knowledge_files_named_by_the_policy_are_searchable(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    (tmp_path / "returns.md").write_text(
        "# Returns\n\nUnused items can be returned within 30 days for a full refund.\n\n"
        "# Shipping\n\nWe ship worldwide with UPS.\n"
    )
    policy = '[knowledge]\nfiles = ["returns.md"]\n'
    async with running_bot(tmp_path, kimi, slack, policy=policy) as harness:
        kimi.script(CallTools([("search_knowledge", {"query": "return unused items refund"})]))
        await harness.mention("can I return an unused mug?")
        [card] = await harness.wait_cards(1)
        offered = [t["function"]["name"] for t in kimi.completions[0]["tools"]]
        assert offered[-1] == "search_knowledge"
        tool_result = next(m for m in kimi.completions[1]["messages"] if m["role"] == "tool")
        assert "within 30 days for a full refund" in tool_result["content"]
        assert "`search_knowledge`" in card_text(card)


async def test_a_burst_of_questions_under_the_accounts_concurrency_lands_every_card_without_a_429(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.max_concurrency, kimi.latency = 2, 0.2
    async with running_bot(tmp_path, kimi, slack, kimi_max_concurrency=2) as harness:
        for n in range(6):
            await harness.mention(f"question {n}: where is #W2611340?")
        cards = await harness.wait_cards(6, timeout=30)
        assert all("approve_draft" in card_text(card) for card in cards)
    assert kimi.rate_limited == 0 and kimi.max_in_flight <= 2


async def test_a_draft_kimi_filters_fails_with_that_reason_on_its_card(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack) as harness:
        kimi.script(Fail.content_filter())
        await harness.mention("something Kimi's moderation refuses")
        [card] = await harness.wait_cards(1)
        assert "Drafting failed" in card_text(card) and "content_filter" in card_text(card)
    assert len(chat_requests(kimi)) == 1, "a filtered request is not retried"


async def test_while_the_primary_model_is_down_the_fallback_writes_and_the_card_says_so(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    kimi.fail_model("kimi-k2.5", Fail.server_error())
    async with running_bot(
        tmp_path, kimi, slack, kimi_fallback_model="kimi-k2-0905-preview", kimi_breaker_failures=1
    ) as harness:
        await harness.mention("hello, are you open on Sunday?")
        [card] = await harness.wait_cards(1)
        assert "kimi-k2-0905-preview" in card_text(card) and "approve_draft" in card_text(card)


async def test_a_prompt_over_the_context_window_is_retried_once_with_the_summary_and_the_last_turns(
    kimi: FakeKimi,
) -> None:
    from pydantic import SecretStr

    from bot.agent import AgentLimits, DraftingAgent
    from bot.kimi import KimiClient
    from tests.harness import KIMI_KEY
    from tools import ToolContext, ToolRegistry

    history: list[dict[str, str]] = [{"role": "system", "content": "instructions"}]
    history += [{"role": "system", "content": "Summary of the earlier conversation:\nthe mug is late"}]
    for n in range(10):
        history += [{"role": "user", "content": f"customer {n}"}, {"role": "assistant", "content": f"support {n}"}]
        if n in (2, 5):  # the drafts of turns 2 and 5 learnt facts: a note follows those messages
            history.insert(-1, {"role": "system", "content": f"Facts established in this conversation: as of turn {n}"})
    history += [{"role": "user", "content": "and now?"}, {"role": "system", "content": "Today is ..."}]
    kimi.script(Fail(400, "invalid_request_error", "Invalid request: Your request exceeded model token limit: 8192"))
    client = KimiClient(kimi.base_url, SecretStr(KIMI_KEY))
    try:
        result = await DraftingAgent(client).draft(
            history,
            model="kimi-k2.5",
            fallback_model=None,
            limits=AgentLimits(max_tool_steps=2, tool_timeout_seconds=1, thinking=False, max_output_tokens=512),
            context=ToolContext(conversation_id="c1"),
            tools=ToolRegistry(),
            on_usage=lambda _model, _usage: None,
        )
    finally:
        await client.aclose()
    assert result.text
    retried = chat_requests(kimi)[-1]["messages"]
    assert [m["content"] for m in retried[:2]] == ["instructions", history[1]["content"]]
    assert [m["content"] for m in retried[2:]] == [
        "Facts established in this conversation: as of turn 5",  # the newest facts hold, the older note goes
        "customer 9",
        "support 9",
        "and now?",
        "Today is ...",
    ]


async def test_an_image_goes_only_to_a_model_whose_catalog_entry_reads_images(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    from tests.fakes.discord import ALICE, SUPPORT_CHANNEL_ID, FakeDiscord
    from tests.fakes.files import png

    image_bytes = png()
    async with FakeDiscord() as discord:
        overrides = {
            "discord_bot_token": discord.token,
            "discord_api_url": discord.api_url,
            "discord_cdn_urls": discord.cdn_url,
        }
        policy = '[models]\ndrafting = "kimi-k2-0905-preview"\n'
        async with running_bot(tmp_path, kimi, slack, policy=policy, **overrides) as harness:
            image = discord.serve_file("broken-mug.png", image_bytes, "image/png")
            await discord.post_user_message(
                SUPPORT_CHANNEL_ID, ALICE, "my mug arrived like this", mention_bot=True, attachments=[image]
            )
            [card] = await harness.wait_cards(1)
            assert "broken-mug.png" in card_text(card)
    user_turn = next(m for m in kimi.completions[0]["messages"] if m["role"] == "user")
    assert isinstance(user_turn["content"], str), "kimi-k2-0905-preview is text-only: no image parts"


async def test_the_core_can_watch_a_draft_form_as_kimi_streams_it(kimi: FakeKimi) -> None:
    from pydantic import SecretStr

    from bot.agent import AgentLimits, DraftingAgent
    from bot.kimi import KimiClient
    from tests.harness import KIMI_KEY
    from tools import ToolContext, ToolRegistry

    kimi.chunk_delay = 0.01
    kimi.script(Reply("Your parcel left our warehouse this morning; UPS expects to deliver it on Friday."))
    seen: list[str] = []
    client = KimiClient(kimi.base_url, SecretStr(KIMI_KEY))
    try:
        result = await DraftingAgent(client).draft(
            [{"role": "system", "content": "instructions"}, {"role": "user", "content": "where is it?"}],
            model="kimi-k2.5",
            fallback_model=None,
            limits=AgentLimits(max_tool_steps=2, tool_timeout_seconds=1, thinking=False, max_output_tokens=512),
            context=ToolContext(conversation_id="c1"),
            tools=ToolRegistry(),
            on_usage=lambda _model, _usage: None,
            on_delta=seen.append,
        )
    finally:
        await client.aclose()
    assert len(seen) >= 4 and seen[0] != result.text and seen[-1] == result.text
