"""The drafting agent's guardrails, seen from the review desk (the test desk: the real core and
the Kimi simulator): model output that breaks the rules, failing tools, limits from the policy,
and the K2.5 rules the fake Kimi enforces. The last two drive the agent directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select

from bot.errors import ConfigError
from bot.evaluation.simulator import LoopbackServer
from bot.events import Attachment
from bot.ports import CardState
from bot.store import UsageRecord, sessionmaker
from tests.desks import CallTools, Fail, FakeKimi, Reply, open_desk
from tests.fakes.files import png


def chat_requests(kimi: FakeKimi) -> list[dict]:  # type: ignore[type-arg]
    return [r.body for r in kimi.requests if r.path.endswith("/chat/completions")]


async def test_malformed_and_unknown_tool_calls_come_back_as_errors_the_model_can_explain(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        kimi.script(CallTools([("get_order_status", '{"order_id": '), ("delete_all_orders", {"really": True})]))
        card = await desk.card_for(await desk.customer("kim").says("where is #W2611340"))
        assert [lookup.ok for lookup in card.lookups] == [False, False]
        assert [lookup.summary for lookup in card.lookups] == [
            "get_order_status failed: invalid_arguments",
            "delete_all_orders failed: unknown_tool",
        ]
        assert card.actionable, "the model explained; the agent can still decide"
        tool_messages = [m for m in kimi.completions[-1]["messages"] if m["role"] == "tool"]
        assert '"code": "invalid_arguments"' in tool_messages[0]["content"]
        assert '"code": "unknown_tool"' in tool_messages[1]["content"]


async def test_an_identical_repeated_call_forces_a_final_answer(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        same = CallTools([("get_order_status", {"order_id": "40021"})])
        kimi.script(same, CallTools([("get_order_status", {"order_id": "40021"})]))
        card = await desk.card_for(await desk.customer("kim").says("where is 40021"))
        requests = chat_requests(kimi)
        assert len(requests) == 3
        assert requests[2]["tool_choice"] == "none"
        assert card.notice == "Tool use stopped: repeated call to get_order_status."
        assert [lookup.name for lookup in card.lookups].count("get_order_status") == 1, "the repeat was not run again"


async def test_the_policy_step_limit_forces_a_final_answer(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy="[limits]\nmax_tool_steps = 2\n") as desk:
        kimi.script(
            CallTools([("get_order_status", {"order_id": "40021"})]),
            CallTools([("get_order_status", {"order_id": "ORD-77"})]),
        )
        card = await desk.card_for(await desk.customer("kim").says("where are 40021 and ORD-77 and #W2611340?"))
        requests = chat_requests(kimi)
        assert len(requests) == 3 and requests[2]["tool_choice"] == "none"
        assert card.notice == "Tool use stopped: step limit (2) reached."


async def test_a_kimi_rate_limit_then_success_still_drafts(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        kimi.script(Fail.rate_limited(after=1), Reply("Your order is on its way."))
        card = await desk.card_for(await desk.customer("kim").says("any news?"), timeout=15)
        assert card.draft_text == "Your order is on its way." and card.actionable
        assert len(chat_requests(kimi)) == 2


async def test_a_model_that_keeps_calling_tools_gives_a_failure_card(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy="[limits]\nmax_tool_steps = 1\n") as desk:
        kimi.script(
            CallTools([("get_order_status", {"order_id": "40021"})]),
            CallTools([("get_order_status", {"order_id": "ORD-77"})]),
        )
        card = await desk.card_for(await desk.customer("kim").says("where is 40021"))
        assert card.state is CardState.FAILED and "kept calling tools" in card.failure
        assert card.identity.startswith("Unverified asker"), "the first card is built as its refresh is"
        assert not card.actionable
        async with sessionmaker(desk.bot.engine)() as session:
            spent = await session.scalar(select(func.count()).select_from(UsageRecord))
        assert spent == 2, "the tokens of a failed draft are in the ledger too"


@pytest.fixture
async def slow_shop() -> AsyncIterator[str]:
    async def order(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({}, status=404)

    app = web.Application()
    app.router.add_get("/orders/{order_id}", order)
    async with LoopbackServer(app, shutdown_timeout=0.1) as server:
        yield server.origin


async def test_a_slow_shop_backend_times_out_and_the_card_says_so(
    tmp_path: Path, kimi: FakeKimi, slow_shop: str
) -> None:
    policy = "[limits]\ntool_timeout_seconds = 0.3\n"
    async with open_desk(tmp_path, kimi, policy=policy, orders_backend="http", orders_api_url=slow_shop) as desk:
        card = await desk.card_for(await desk.customer("kim").says("where is #W2611340"))
        [lookup] = card.lookups
        assert lookup.summary == "get_order_status failed: timeout" and not lookup.ok


async def test_the_fallback_model_drafts_when_the_main_model_is_retired_while_running(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi, kimi_fallback_model="kimi-k2.6") as desk:
        kimi.retire("kimi-k2.5")
        card = await desk.card_for(await desk.customer("kim").says("where is #W2611340"))
        assert card.model == "kimi-k2.6" and card.actionable


async def test_a_model_kimi_does_not_serve_stops_the_start_with_the_ids_it_does(tmp_path: Path, kimi: FakeKimi) -> None:
    kimi.retire("kimi-k2.5")
    with pytest.raises(ConfigError) as caught:
        async with open_desk(tmp_path, kimi):
            pass
    assert "KIMI_MODEL=kimi-k2.5" in str(caught.value) and "kimi-k2.6" in str(caught.value)


async def test_quota_exhaustion_is_not_retried(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        kimi.script(Fail.quota_exceeded())
        card = await desk.card_for(await desk.customer("kim").says("where is #W2611340"))
        assert card.state is CardState.FAILED and "exceeded_current_quota_error" in card.failure
        assert len(chat_requests(kimi)) == 1


async def test_thinking_mode_carries_reasoning_back_on_tool_turns(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy="[models]\nthinking = true\n") as desk:
        card = await desk.card_for(await desk.customer("kim").says("where is #W2611340"))
        assert card.actionable, "the fake Kimi accepted every request (no 400)"
        second = kimi.completions[1]
        assistant = next(m for m in second["messages"] if m["role"] == "assistant")
        assert assistant["reasoning_content"].strip()
        assert "temperature" not in second and "top_p" not in second


async def test_escalation_names_why_and_the_on_call_group(tmp_path: Path, kimi: FakeKimi) -> None:
    # The card carries the group of the desk's own platform (the test desk is "desk"), never
    # another platform's.
    policy = '[escalation.slack]\non_call = "S0ONCALL"\n[escalation.discord]\non_call = "1299"\n'
    policy += '[escalation.desk]\non_call = "ONCALL-7"\n'
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        said = await desk.customer("kim").says("I want to talk to a human, or I file a chargeback for 40021")
        card = await desk.card_for(said)
        assert card.on_call == "ONCALL-7"
        assert "chargeback" in card.escalation and "asks for a human" in card.escalation


async def test_a_desk_whose_platform_names_no_on_call_group_tags_nobody(tmp_path: Path, kimi: FakeKimi) -> None:
    policy = '[escalation.slack]\non_call = "S0ONCALL"\n[escalation.discord]\non_call = "1299"\n'
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        card = await desk.card_for(await desk.customer("kim").says("I want to talk to a human"))
        assert "asks for a human" in card.escalation and card.on_call == ""


async def test_repeated_failed_drafts_escalate(tmp_path: Path, kimi: FakeKimi) -> None:
    policy = '[escalation]\nmax_failed_drafts = 2\n[escalation.desk]\non_call = "1299"\n'
    async with open_desk(tmp_path, kimi, policy=policy, kimi_max_retries=0) as desk:
        kimi.fail_always(500, "server_error", "boom")
        kim = desk.customer("kim")
        said = await kim.says("hello?")
        first = await desk.card_for(said)
        second = await desk.card_for(await kim.says("hello??", after=said))
        assert first.state is second.state is CardState.FAILED
        assert first.escalation == "" and first.on_call == ""
        assert "2 failed drafts" in second.escalation and second.on_call == "1299"


async def test_only_watched_channels_are_answered(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy='[channels]\nwatch = ["C777"]\n') as desk:
        kim = desk.customer("kim")
        unwatched = await kim.says("where is #W2611340")  # in C-SUPPORT
        assert not unwatched.taken
        said = await kim.says("where is #W2611340", channel="C777")
        assert said.taken
        card = await desk.card_for(said)
        assert "C777" in card.where
        await desk.settle()
        assert len(desk.cards) == 1


async def test_knowledge_files_named_by_the_policy_are_searchable(tmp_path: Path, kimi: FakeKimi) -> None:
    (tmp_path / "returns.md").write_text(
        "# Returns\n\nUnused items can be returned within 30 days for a full refund.\n\n"
        "# Shipping\n\nWe ship worldwide with UPS.\n"
    )
    policy = '[knowledge]\nfiles = ["returns.md"]\n'
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        kimi.script(CallTools([("search_knowledge", {"query": "return unused items refund"})]))
        card = await desk.card_for(await desk.customer("kim").says("can I return an unused mug?"))
        offered = [t["function"]["name"] for t in kimi.completions[0]["tools"]]
        assert "search_knowledge" in offered
        tool_result = next(m for m in kimi.completions[1]["messages"] if m["role"] == "tool")
        assert "within 30 days for a full refund" in tool_result["content"]
        assert [lookup.name for lookup in card.lookups] == ["search_knowledge"]


async def test_a_burst_of_questions_under_the_accounts_concurrency_lands_every_card_without_a_429(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    kimi.limits.max_concurrency, kimi.latency = 2, 0.2
    async with open_desk(tmp_path, kimi, kimi_max_concurrency=2) as desk:
        kim = desk.customer("kim")
        for n in range(6):
            await kim.says(f"question {n}: where is #W2611340?")
        cards = [await desk.card(n, timeout=30) for n in range(6)]
        assert all(card.actionable for card in cards)
    assert kimi.limits.rate_limited == 0 and kimi.limits.max_in_flight <= 2


async def test_a_draft_kimi_filters_fails_with_that_reason_on_its_card(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi) as desk:
        kimi.script(Fail.content_filter())
        card = await desk.card_for(await desk.customer("kim").says("something Kimi's moderation refuses"))
        assert card.state is CardState.FAILED and "content_filter" in card.failure
    assert len(chat_requests(kimi)) == 1, "a filtered request is not retried"


async def test_while_the_primary_model_is_down_the_fallback_writes_and_the_card_says_so(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    kimi.fail_model("kimi-k2.5", Fail.server_error())
    async with open_desk(tmp_path, kimi, kimi_fallback_model="kimi-k2-0905-preview", kimi_breaker_failures=1) as desk:
        card = await desk.card_for(await desk.customer("kim").says("hello, are you open on Sunday?"))
        assert card.model == "kimi-k2-0905-preview" and card.actionable


async def test_an_image_goes_only_to_a_model_whose_catalog_entry_reads_images(tmp_path: Path, kimi: FakeKimi) -> None:
    image = png()
    photo = Attachment("broken-mug.png", "image/png", len(image), data=image)
    policy = '[models]\ndrafting = "kimi-k2-0905-preview"\n'
    async with open_desk(tmp_path, kimi, policy=policy) as desk:
        said = await desk.customer("alice").says("my mug arrived like this", attachments=[photo])
        card = await desk.card_for(said)
        assert card.attachments == ("broken-mug.png",)
    user_turn = next(m for m in kimi.completions[0]["messages"] if m["role"] == "user")
    assert isinstance(user_turn["content"], str), "kimi-k2-0905-preview is text-only: no image parts"


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
