"""Learning from edits (issue 21, point 6): ``supportbot suggest`` reads the desk's edits,
rejections with reasons and customers' thumbs down, asks Kimi for policy changes and knowledge
entries through one tool call, and prints them as a diff with the conversations behind each;
``--write`` applies them only when the result passes ``policy check``, and a model answer that
breaks the shape or the policy changes nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli_ops import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME
from bot.domain.feedback import Feedback, FeedbackKind
from bot.domain.lessons import Lesson, LessonKind, changed_part, group_lessons
from bot.learning.proposals import Proposals, ProposalShapeError, parse_proposals, plan, proposals_tool
from bot.store import Draft, UsageRecord, create_engine, sessionmaker, utcnow
from bot.store import feedback as feedback_rows
from bot.testing import TestDesk
from tests.desks import CallTools, Fail, FakeKimi, Reply, open_desk
from tests.harness import KIMI_KEY, sample_orders
from tests.processes import supportbot

POLICY = """\
# The managers' policy for the shop.
[refunds]
window_days = 30  # days after delivery
max_amount = "500.00"

[approvers]
managers = ["mgr"]
"""
T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def lesson(n: int, kind: LessonKind = LessonKind.EDIT, category: str = "status", size: int = 10) -> Lesson:
    return Lesson(kind, f"{n:08x}" + "0" * 24, f"d{n}", category, T0 + timedelta(minutes=n), "q" * size, "d" * size)


# -- the pure parts -----------------------------------------------------------------------


def test_corrections_are_grouped_by_kind_and_category_newest_first_within_a_bound() -> None:
    lessons = [lesson(n) for n in range(20)] + [lesson(100 + n, LessonKind.REJECT, "refund") for n in range(3)]
    groups = group_lessons(lessons, per_group=5)
    assert [(g.kind, g.category, g.total, len(g.lessons)) for g in groups] == [
        (LessonKind.EDIT, "status", 20, 5),
        (LessonKind.REJECT, "refund", 3, 3),
    ]
    assert [item.draft_id for item in groups[0].lessons] == ["d19", "d18", "d17", "d16", "d15"], "newest first"

    huge = [lesson(n, size=10_000) for n in range(50)]
    bounded = group_lessons(huge, text_limit=400, max_chars=2_000)
    assert sum(g.chars for g in bounded) <= 2_000 and len(bounded[0].lessons) == 2, "the prompt never grows"
    assert group_lessons([]) == []
    assert changed_part("Your order ships today, Kim.", "Your order ships tomorrow, Kim.") == (
        "Your order ships today, Kim.",
        "Your order ships tomorrow, Kim.",
    )
    assert changed_part(
        "a b c d e f g h i j k l m n o p q r s t u v w x y z", "a b c d e f g h i j K l m n o p q r s t u v w x y z"
    ) == (
        "…c d e f g h i j k l m n o p q r s…",
        "…c d e f g h i j K l m n o p q r s…",
    ), "whole words around the change"


def test_a_proposal_that_breaks_the_shape_is_a_clear_error() -> None:
    parameters = proposals_tool()["function"]["parameters"]
    assert "$ref" not in json.dumps(parameters) and set(parameters["properties"]) == {
        "policy_changes",
        "knowledge_entries",
    }
    known = {"1a2b3c4d"}
    good = {"key": "refunds.window_days", "value": 14, "why": "agents say 14", "conversations": ["1a2b3c4d"]}
    assert parse_proposals(json.dumps({"policy_changes": [good]}), known).policy_changes[0].value == 14
    for answer, says in [
        ("not json", "not JSON"),
        (json.dumps({"policy_changes": [{**good, "why": ""}]}), "policy_changes.0.why"),
        (json.dumps({"policy_changes": [{**good, "key": "window_days"}]}), "not a dotted policy key"),
        (json.dumps({"policy_changes": [{**good, "key": "knowledge.files"}]}), "as knowledge entries"),
        (json.dumps({"policy_changes": [good], "shell": "rm -rf /"}), "shell: Extra inputs"),
        (json.dumps({"policy_changes": [{**good, "conversations": ["ffffffff"]}]}), "not shown: ffffffff"),
        (
            json.dumps(
                {"knowledge_entries": [{"name": "../etc", "text": "x", "why": "y", "conversations": ["1a2b3c4d"]}]}
            ),
            "not a file name",
        ),
    ]:
        with pytest.raises(ProposalShapeError, match=says):
            parse_proposals(answer, known)


def test_a_plan_keeps_the_policy_s_comments_and_lists_new_knowledge_files() -> None:
    proposals = Proposals.model_validate(
        {
            "policy_changes": [
                {"key": "refunds.window_days", "value": 14, "why": "w", "conversations": ["1a2b3c4d"]},
                {"key": "desk.language", "value": "en", "why": "w", "conversations": ["1a2b3c4d"]},
            ],
            "knowledge_entries": [
                {"name": "sundays", "text": "Closed on Sundays.", "why": "w", "conversations": ["1a2b3c4d"]}
            ],
        }
    )
    planned = plan(POLICY, proposals)
    assert "# The managers' policy for the shop." in planned.policy_after
    assert "window_days = 14" in planned.policy_after and "window_days = 30" not in planned.policy_after
    assert '[desk]\nlanguage = "en"' in planned.policy_after
    assert 'files = ["knowledge/sundays.md"]' in planned.policy_after
    assert planned.knowledge == {"knowledge/sundays.md": "Closed on Sundays.\n"}
    assert planned.policy_before == POLICY, "planning writes nothing"
    into_a_value = {"key": "approvers.managers.x", "value": 1, "why": "w", "conversations": ["1a2b3c4d"]}
    with pytest.raises(ProposalShapeError, match=r"approvers\.managers\.x: managers is a value, not a table"):
        plan(POLICY, Proposals.model_validate({"policy_changes": [into_a_value]}))


# -- the scenario -------------------------------------------------------------------------


async def a_month_of_corrections(desk: TestDesk, kimi: FakeKimi) -> dict[str, str]:
    """A rejection with a reason, an edit, and a reply the customer scored badly; the short
    conversation ids by customer."""
    kimi.script(Reply("We are open every day, Sundays included."))
    kim = await desk.customer("kim").says("are you open on sundays?")
    await desk.agent("ana").reject(await desk.card_for(kim), reason="we are closed on sundays")

    kimi.script(Reply("You can return it within 30 days of delivery."))
    lee = await desk.customer("lee").says("how long do I have to send back my mug?")
    await desk.agent("ben").edit(await desk.card_for(lee), "You can return it within 14 days of delivery.")
    await desk.reply_to(lee)

    kimi.script(
        CallTools([("get_order_status", {"order_id": "#W2611340"})]),
        Reply("Your order #W2611340 ships today."),
    )
    sam = await desk.customer("sam").says("where is my order #W2611340?")
    await desk.agent("ana").approve(await desk.card_for(sam))
    await desk.reply_to(sam)
    await desk.settle()

    async with sessionmaker(desk.bot.engine)() as session:
        drafts = list(await session.scalars(select(Draft).order_by(Draft.created_at)))
    by_text = {d.text: d for d in drafts}
    sam_draft = by_text["Your order #W2611340 ships today."]
    assert desk.bot.core is not None
    async with desk.bot.core.db.write() as conn:
        assert await feedback_rows.record(conn, Feedback(sam_draft.id, FeedbackKind.REPLY, -1, "sam"), utcnow())
    return {
        "kim": by_text["We are open every day, Sundays included."].conversation_id[:8],
        "lee": by_text["You can return it within 30 days of delivery."].conversation_id[:8],
        "sam": sam_draft.conversation_id[:8],
    }


def proposals_from(ids: dict[str, str], *also: dict[str, object]) -> CallTools:
    """Kimi's scripted answer: the return window from the edit, opening hours from the rejection
    and the thumbs down; ``also``: more policy changes."""
    window = {
        "key": "refunds.window_days",
        "value": 14,
        "why": "Agents correct the return window from 30 to 14 days.",
        "conversations": [ids["lee"]],
    }
    hours = {
        "name": "opening-hours",
        "text": "# Opening hours\n\nWe are open Monday to Saturday, 9:00 to 18:00. Closed on Sundays.",
        "why": "A draft said we open on Sundays; the agent rejected it.",
        "conversations": [ids["kim"], ids["sam"]],
    }
    answer = {"policy_changes": [window, *also], "knowledge_entries": [hours]}
    return CallTools([("propose_changes", answer)])


async def test_suggest_prints_a_diff_from_the_desk_s_corrections_and_write_applies_it_only_when_valid(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY, orders=sample_orders(), database_url=database_url) as desk:
        ids = await a_month_of_corrections(desk, kimi)
        url = desk.bot.settings.database_url
    env = {"DATABASE_URL": url, "MOONSHOT_API_KEY": KIMI_KEY, "KIMI_BASE_URL": kimi.base_url, "KIMI_MAX_RETRIES": "0"}
    policy = tmp_path / "policy.toml"

    # Kimi failing: one line, nothing changed.
    kimi.script(Fail(500, "server_error", "the engine is down"))
    failed = await asyncio.to_thread(supportbot, tmp_path, "suggest", "--write", **env)
    assert failed.returncode == EXIT_RUNTIME, failed.stderr
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("error: could not ask Kimi for proposals: ") and line.endswith("; nothing was changed")
    assert policy.read_text() == POLICY

    # A model answer that breaks the shape: a clear error, nothing changed.
    kimi.script(CallTools([("propose_changes", {"policy_changes": [{"key": "refunds.window_days", "value": 14}]})]))
    broken = await asyncio.to_thread(supportbot, tmp_path, "suggest", "--write", **env)
    assert broken.returncode == EXIT_RUNTIME, broken.stderr
    assert broken.stderr.strip().splitlines() == [
        "error: Kimi's proposals do not have the expected shape: policy_changes.0.why: Field required (and 1 more)"
    ]
    assert policy.read_text() == POLICY

    # The proposals as a diff, with the conversations behind each; nothing written.
    kimi.script(proposals_from(ids))
    shown = await asyncio.to_thread(supportbot, tmp_path, "suggest", "--since", "30d", **env)
    assert shown.returncode == EXIT_OK, shown.stderr
    print(shown.stdout)  # the note shows it (pytest -s)
    out = shown.stdout
    assert "1. set refunds.window_days = 14" in out
    lee_quote = 'edited "…return it within 30 days of delivery." to "…return it within 14 days of delivery."'
    assert f"   - conversation {ids['lee']}: {lee_quote}" in out
    assert (
        f'   - conversation {ids["kim"]}: rejected "We are open every day, Sundays included.": we are closed on sundays'
        in out
    )
    assert f'   - conversation {ids["sam"]}: customer scored -1 on "Your order #W2611340 ships today."' in out
    assert "--- a/policy.toml\n+++ b/policy.toml\n" in out
    assert "-window_days = 30  # days after delivery\n+window_days = 14  # days after delivery\n" in out
    assert '+[knowledge]\n+files = ["knowledge/opening-hours.md"]\n' in out
    assert "--- /dev/null\n+++ b/knowledge/opening-hours.md\n" in out and "+We are open Monday to Saturday" in out
    assert "nothing was changed; run again with --write" in out
    assert policy.read_text() == POLICY and not (tmp_path / "knowledge").exists()

    asked = [r.body for r in kimi.requests if isinstance(r.body, dict) and "tools" in r.body]
    [request] = [body for body in asked if body["tools"][0]["function"]["name"] == "propose_changes"][-1:]
    prompt = request["messages"][1]["content"]
    assert "agent sent instead: You can return it within 14 days of delivery." in prompt
    assert "rejected because: we are closed on sundays" in prompt and "customer's score: -1" in prompt
    assert "window_days = 30" in prompt

    # A proposal that breaks the policy's rules is refused with policy check's error, untouched.
    lots: dict[str, object] = {
        "key": "refunds.max_amount",
        "value": "lots",
        "why": "More.",
        "conversations": [ids["lee"]],
    }
    kimi.script(proposals_from(ids, lots))
    refused = await asyncio.to_thread(supportbot, tmp_path, "suggest", "--write", **env)
    assert refused.returncode == EXIT_CONFIG, refused.stderr
    [error] = refused.stderr.strip().splitlines()
    assert error.startswith("policy.toml: invalid policy: line 4") and "max_amount" in error, error
    assert policy.read_text() == POLICY and not (tmp_path / "knowledge" / "opening-hours.md").exists()

    # --write applies it, and policy check agrees.
    kimi.script(proposals_from(ids))
    written = await asyncio.to_thread(supportbot, tmp_path, "suggest", "--write", **env)
    assert written.returncode == EXIT_OK, written.stderr
    assert "wrote policy.toml (policy version " in written.stdout and "knowledge/opening-hours.md" in written.stdout
    after = policy.read_text()
    assert (
        after.startswith("# The managers' policy for the shop.\n")
        and "window_days = 14  # days after delivery" in after
    )
    assert "Closed on Sundays." in (tmp_path / "knowledge" / "opening-hours.md").read_text()
    checked = await asyncio.to_thread(supportbot, tmp_path, "policy", "check", "policy.toml")
    assert checked.returncode == EXIT_OK and "OK (policy version" in checked.stdout, checked.stderr

    # The same proposals again: the knowledge file is there already, so nothing is written.
    kimi.script(proposals_from(ids))
    twice = await asyncio.to_thread(supportbot, tmp_path, "suggest", "--write", **env)
    assert twice.returncode == EXIT_CONFIG
    assert twice.stderr.strip() == (
        "policy.toml: invalid policy: knowledge/opening-hours.md exists already; nothing was written"
    )
    assert policy.read_text() == after

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            purposes = (await conn.execute(select(UsageRecord.purpose, UsageRecord.cost_microusd))).all()
    finally:
        await engine.dispose()
    suggesting = [cost for purpose, cost in purposes if purpose == "suggesting"]
    assert len(suggesting) == 5 and all(cost > 0 for cost in suggesting), "every call is in the usage ledger"


async def test_suggest_with_nothing_corrected_asks_kimi_nothing(tmp_path: Path, kimi: FakeKimi) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY) as desk:
        url = desk.bot.settings.database_url
    before = len(kimi.requests)
    done = await asyncio.to_thread(
        supportbot, tmp_path, "suggest", DATABASE_URL=url, MOONSHOT_API_KEY=KIMI_KEY, KIMI_BASE_URL=kimi.base_url
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert "nothing to learn from" in done.stdout and len(kimi.requests) == before
