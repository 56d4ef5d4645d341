"""What the team learns (issue 21, points 1 and 2): every decision records its facts (policy
version, model, category, when the card was shown and decided, the edit distance, the
conversation's spend), the decision-time metric is observed, customers' feedback is kept with
the draft (point 4's storage), and ``supportbot report`` turns a scripted week of traffic into
rates, timings, distances, costs and feedback, as text and as HTML."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot import metrics
from bot.cli_ops import EXIT_OK, EXIT_USAGE
from bot.domain.category import Category, DraftSignals, category_of
from bot.domain.feedback import BadFeedback, Feedback, FeedbackKind
from bot.domain.measures import edit_distance, percentile
from bot.domain.states import DraftStatus
from bot.insight.cli import parse_window
from bot.insight.figures import Report, Verdict, gather
from bot.insight.html import render_html
from bot.insight.text import format_report
from bot.store import Draft, UsageRecord, sessionmaker, utcnow
from bot.store import feedback as feedback_rows
from bot.testing import Said, TestDesk
from tests.desks import CallTools, FakeKimi, Reply, open_desk
from tests.harness import sample_orders
from tests.processes import supportbot

POLICY = """
[refunds]
window_days = 30
max_amount = "500.00"
manager_threshold = "100.00"

[approvers]
managers = ["mgr"]
"""
DECISION_COUNT = "supportbot_time_to_decision_seconds_count"


def decisions_observed() -> float:
    return metrics.REGISTRY.get_sample_value(DECISION_COUNT) or 0.0


def shop(desk: TestDesk) -> list[dict[str, object]]:
    """The sample shop with ``ana`` owning order 40021 (a refund needs a verified owner)."""
    rows = [dict(r, customer_accounts="") for r in sample_orders()]
    return [dict(r, customer_accounts=desk.account("ana")) if r["order_id"] == "40021" else r for r in rows]


async def draft_rows(desk: TestDesk) -> list[Draft]:
    async with sessionmaker(desk.bot.engine)() as session:
        return list(await session.scalars(select(Draft).order_by(Draft.created_at)))


# -- the pure parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        (DraftSignals.of(["get_order_status"]), Category.STATUS),
        (DraftSignals.of(["verify_customer", "get_order_status"]), Category.STATUS),
        (DraftSignals.of(["verify_customer"]), Category.VERIFICATION),
        (DraftSignals.of(["get_order_status", "propose_refund"]), Category.REFUND),
        (DraftSignals.of(["propose_refund"], needs_manager=True), Category.MANAGER),
        (DraftSignals.of(["propose_refund"], needs_two_approvers=True), Category.TWO_APPROVERS),
        (DraftSignals.of(["propose_refund"], refund_refused=True, needs_manager=True), Category.OVER_LIMIT),
        (DraftSignals.of(["search_knowledge", "get_order_status"]), Category.KNOWLEDGE),
        (DraftSignals.of(["propose_refund"], escalated=True), Category.ESCALATION),
        (DraftSignals.of(["no_reply_needed"], no_reply=True, escalated=True), Category.NO_REPLY),
        (DraftSignals.of(["no_reply_needed"]), Category.OTHER),  # the model said so, but a draft was forced
        (DraftSignals.of([]), Category.OTHER),
    ],
)
def test_a_draft_s_category_comes_from_its_tools_and_how_it_ended(signals: DraftSignals, expected: Category) -> None:
    assert category_of(signals) is expected


def test_the_measures() -> None:
    assert edit_distance("Your order ships today.", "Your order ships today.") == 0.0
    assert edit_distance("Your order ships today.", "Your order ships tomorrow.") == pytest.approx(6 / 26)
    assert edit_distance("abc", "xyz") == 1.0
    assert edit_distance("", "") == 0.0
    assert percentile([], 0.5) is None
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0, "nearest rank: a value that happened"
    assert percentile([float(n) for n in range(1, 11)], 0.9) == 9.0
    assert percentile([7.0], 0.9) == 7.0
    assert parse_window("7d") == timedelta(days=7)
    assert parse_window(" 24H ") == timedelta(hours=24)
    for bad in ("7", "0d", "7y", "-1d"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a period"):
            parse_window(bad)


# -- the decision's facts -----------------------------------------------------------------


async def test_an_accepted_approve_records_its_facts_and_observes_the_time_to_decision(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY, orders=sample_orders()) as desk:
        kimi.script(
            CallTools([("get_order_status", {"order_id": "#W2611340"})]),
            Reply("Your order #W2611340 ships today."),
        )
        said = await desk.customer("kim").says("where is my order #W2611340?")
        card = await desk.card_for(said)
        before = decisions_observed()
        await desk.agent("ana").approve(card)
        await desk.reply_to(said)
        assert decisions_observed() == before + 1, "the time from the card to the decision is observed"

        [draft] = await draft_rows(desk)
        async with sessionmaker(desk.bot.engine)() as session:
            spent = (
                await session.execute(
                    select(
                        func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens),
                        func.sum(UsageRecord.cost_microusd),
                    )
                )
            ).one()
        assert desk.bot.core is not None
        assert draft.policy_version == desk.bot.core.policy.current.version != ""
        assert (draft.model, draft.category, draft.edit_distance) == ("kimi-k2.5", "status", 0.0)
        assert draft.shown_at is not None and draft.decided_at is not None
        assert draft.created_at <= draft.shown_at <= draft.decided_at
        assert (draft.conversation_tokens, draft.conversation_cost_microusd) == tuple(spent)
        assert spent[1] > 0, "the simulator's calls are priced"


# -- the report from a scripted week ------------------------------------------------------


async def a_week(desk: TestDesk, kimi: FakeKimi) -> dict[str, Said]:
    """Six conversations, each decided as a desk would over a week."""
    said: dict[str, Said] = {}

    async def asks(name: str, text: str, *steps: CallTools | Reply) -> Said:
        kimi.script(*steps)
        said[name] = await desk.customer(name).says(text)
        return said[name]

    # kim: a status question, approved by ana; kim says thanks (no reply needed, resolved).
    kim = await asks(
        "kim",
        "where is my order #W2611340?",
        CallTools([("get_order_status", {"order_id": "#W2611340"})]),
        Reply("Your order #W2611340 ships today."),
    )
    await desk.agent("ana").approve(await desk.card_for(kim))
    await desk.reply_to(kim)
    await desk.customer("kim").says("thanks!", after=kim)
    # Its draft done before the next script is queued: it would take lee's steps, and its card
    # would come where lee's is awaited.
    await desk.settle()
    # lee: a status question, edited by ben.
    lee = await asks(
        "lee",
        "when does #W2611340 ship?",
        CallTools([("get_order_status", {"order_id": "#W2611340"})]),
        Reply("Your order ships today."),
    )
    await desk.agent("ben").edit(await desk.card_for(lee), "Your order ships tomorrow.")
    await desk.reply_to(lee)
    # max: rejected by ana; the manager then answers in the thread by hand.
    max_ = await asks("max", "are you open on sundays?", Reply("We are open every day."))
    await desk.agent("ana").reject(await desk.card_for(max_), reason="we are closed on sundays")
    await desk.customer("mgr").says("We are closed on Sundays, sorry!", after=max_)
    # sam: regenerated by ben, the new draft approved by ben.
    sam = await asks("sam", "hello?", Reply("Hello."), Reply("Hello Sam, how can I help you today?"))
    first = await desk.card_for(sam)
    shown = len(desk.cards)
    await desk.agent("ben").regenerate(first, instruction="greet them by name")
    await desk.agent("ben").approve(await desk.card(shown))
    await desk.reply_to(sam)
    # ana: a refund that needs a manager, approved and resolved by mgr.
    ana = await asks(
        "ana",
        "My chair from order 40021 arrived broken, I want my money back",
        CallTools([("propose_refund", {"order_id": "40021", "amount": "150.00", "reason": "arrived broken"})]),
        Reply("I'm sorry about the chair. I've asked the team to refund 150.00 USD."),
    )
    refund_card = await desk.card_for(ana)
    await desk.agent("mgr").approve(refund_card)
    await desk.reply_to(ana)
    await desk.agent("mgr").resolve(refund_card)
    # joe: taken over by ana before anyone decides the draft.
    joe = await asks("joe", "can I change my address?", Reply("Let me check."))
    await desk.agent("ana").take_over(await desk.card_for(joe))
    await desk.settle()
    return said


async def customers_answer(desk: TestDesk, drafts: list[Draft]) -> None:
    """The customers' feedback on the week's replies, kept through the feedback repository."""
    sent = [d for d in drafts if d.status is DraftStatus.SENT]
    kim = next(d.id for d in sent if d.category == "status" and d.edited_text is None)
    lee = next(d.id for d in sent if d.category == "status" and d.edited_text is not None)
    sam = next(d.id for d in sent if d.category == "other")
    ana = next(d.id for d in sent if d.category == "manager")
    answers = [
        Feedback(kim, FeedbackKind.REPLY, 1, "kim"),
        Feedback(lee, FeedbackKind.REPLY, 1, "lee"),
        Feedback(lee, FeedbackKind.REPLY, -1, "lee"),  # a changed mind replaces the first answer
        Feedback(sam, FeedbackKind.REPLY, 1, "sam"),
        Feedback(ana, FeedbackKind.CSAT, 5, "ana"),
        Feedback(kim, FeedbackKind.CSAT, 4, "kim"),
    ]
    assert desk.bot.core is not None
    async with desk.bot.core.db.write() as conn:
        for answer in answers:
            assert await feedback_rows.record(conn, answer, utcnow())
        assert not await feedback_rows.record(conn, Feedback("no-such-draft", FeedbackKind.REPLY, 1, "x"), utcnow())
    with pytest.raises(BadFeedback, match="a reply score is one of -1, 1, not 3"):
        Feedback(kim, FeedbackKind.REPLY, 3, "kim")


def rates_of(report: Report, grouping: str) -> dict[str, tuple[int, dict[str, int]]]:
    return {r.group: (r.decided, {str(v): n for v, n in r.counts.items()}) for r in report.by[grouping]}


async def test_a_week_of_traffic_becomes_the_report(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        await desk.import_orders(shop(desk))
        await a_week(desk, kimi)
        assert desk.bot.core is not None
        version = desk.bot.core.policy.current.version
        drafts = await draft_rows(desk)
        await customers_answer(desk, drafts)
        async with desk.bot.engine.connect() as conn:
            report = await gather(conn, timedelta(days=7), utcnow())
            later = await gather(conn, timedelta(hours=1), utcnow() + timedelta(days=1))
        url = desk.bot.settings.database_url

    o = report.overall
    assert (o.decided, o.counts) == (6, {Verdict.APPROVE: 3, Verdict.EDIT: 1, Verdict.REJECT: 1, Verdict.REGENERATE: 1})
    assert rates_of(report, "category") == {
        "other": (3, {"reject": 1, "regenerate": 1, "approve": 1}),
        "status": (2, {"approve": 1, "edit": 1}),
        "manager": (1, {"approve": 1}),
    }
    assert rates_of(report, "agent") == {
        "ben": (3, {"edit": 1, "regenerate": 1, "approve": 1}),
        "ana": (2, {"approve": 1, "reject": 1}),
        "mgr": (1, {"approve": 1}),
    }
    assert rates_of(report, "model") == {"kimi-k2.5": (6, {"approve": 3, "edit": 1, "reject": 1, "regenerate": 1})}
    assert [(r.group, r.decided) for r in report.by["policy version"]] == [(version, 6)]
    assert report.edit_distances == [("unchanged", 3), ("≤ 0.10", 0), ("0.10–0.25", 1), ("0.25–0.50", 0), ("> 0.50", 0)]
    assert report.decision.count == 6 and report.decision.p50 is not None and report.decision.p90 is not None
    assert 0 <= report.decision.p50 <= report.decision.p90 < 60
    assert (report.first_response.count, report.unanswered) == (4, 2), "max was rejected, joe taken over"
    assert report.counts == {"no_reply": 1, "take_over": 1, "answered_by_hand": 1}
    # kim's (resolved by her thanks) and ana's (resolved by the manager) conversations.
    resolved = {d.conversation_id for d in drafts if d.category in ("manager", "no-reply")}
    assert len(resolved) == 2 and report.resolved.conversations == 2
    cost = sum(d.cost_microusd for d in drafts if d.conversation_id in resolved)
    assert report.resolved.cost_microusd >= cost > 0
    assert report.cost_per_resolved_microusd == round(report.resolved.cost_microusd / 2)
    f = report.feedback
    assert (f.overall.up, f.overall.down, f.csat, f.csat_mean) == (2, 1, [4, 5], 4.5)
    assert [(t.group, t.up, t.down) for t in f.by_category] == [("status", 1, 1), ("other", 1, 0)]
    assert later.overall.decided == 0 and later.first_response.count == 0, "the window leaves older days out"

    text = "\n".join(format_report(report))
    assert "6 drafts decided: approved 50%, edited 17%, rejected 17%, regenerated 17%" in text
    page = render_html(report, stylesheet_href="/report/report.css")
    assert "<script" not in page and "style=" not in page, "nothing the playground's CSP would block"
    assert (
        page.count('<svg class="bar"') == 3 + 3 + 1 + 1 + 5 + 2
    )  # a bar per group row, edit bucket, feedback category

    html = tmp_path / "report.html"
    done = await asyncio.to_thread(
        supportbot, tmp_path, "report", "--since", "7d", "--html", str(html), DATABASE_URL=url
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.splitlines()[2] == "6 drafts decided: approved 50%, edited 17%, rejected 17%, regenerated 17%"
    assert "<style>" in html.read_text() and "<svg" in html.read_text(), "a file of its own: the stylesheet inline"
    print(done.stdout)  # the note shows it (pytest -s)
    refused = await asyncio.to_thread(supportbot, tmp_path, "report", "--since", "a week", DATABASE_URL=url)
    assert refused.returncode == EXIT_USAGE and "'a week' is not a period" in refused.stderr
