"""``supportbot eval export`` (issue 21, point 6): approved and edited conversations become eval
cases in EVAL.md's format, the sent text's facts as expectations, ids and personal data replaced
by placeholders; the cases load with the eval's own loader and run under the scripted model."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from bot.cli_ops import EXIT_OK, EXIT_RUNTIME
from bot.evaluation.cases import load_cases
from bot.evaluation.export import Pseudonyms, facts_of
from bot.store.exports import SentTurn, UsedTool
from bot.testing import TestDesk
from tests.desks import CallTools, FakeKimi, Reply, open_desk
from tests.harness import KIMI_KEY, sample_orders
from tests.processes import supportbot

EVALS = Path(__file__).resolve().parent.parent / "evals"
POLICY = """
[refunds]
window_days = 3650
max_amount = "500.00"
manager_threshold = "100.00"

[approvers]
managers = ["mgr"]
"""


def test_placeholders_are_consistent_and_facts_come_from_the_tools_not_personal_data() -> None:
    names = Pseudonyms()
    assert names.order("#W2611340") == names.order("W2611340") == "#X0001"
    assert names.order("40021") == "#X0002"
    assert names.email("kim@example.com") == "customer1@example.com"
    assert names.name("Kim Lee") == "Customer 1"
    assert (
        names.scrub("Kim Lee (KIM@example.com, other@shop.test) asks about #W2611340 and order 40021")
        == "Customer 1 (customer1@example.com, customer2@example.com) asks about #X0001 and order #X0002"
    )
    assert names.scrub("Hi Kim!") == "Hi Customer!"

    result = {
        "order_id": "#W2611340",
        "status": "shipped",
        "carrier": "UPS",
        "customer_name": "Kim Lee",
        "total": "89.90",
    }
    turn = SentTurn(
        "where is it?",
        "draft",
        "Hi Kim Lee, #W2611340 is shipped with UPS (89.90 USD); ups tracking soon.",
        True,
        "U1",
        (UsedTool("get_order_status", {"order_id": "#W2611340"}, result),),
    )
    assert facts_of(turn) == ["#W2611340", "shipped", "UPS", "89.90"], "in text order; the name is no fact"


async def a_month_of_replies(desk: TestDesk, kimi: FakeKimi) -> None:
    """Kim's status question approved as drafted; Ana's refund edited by the manager; Max's
    question rejected (not exported)."""
    kimi.script(
        CallTools([("get_order_status", {"order_id": "#W2611340"})]),
        Reply("Hi Kim, your order #W2611340 is on its way with UPS, tracking 1Z999AA10123456784."),
    )
    kim = await desk.customer("kim", display_name="Kim Lee", email="kim@example.com").says(
        "Hi, Kim Lee here (kim@example.com): where is my order #W2611340?"
    )
    await desk.agent("ana").approve(await desk.card_for(kim))
    await desk.reply_to(kim)

    kimi.script(
        CallTools([("propose_refund", {"order_id": "40021", "amount": "150.00", "reason": "arrived broken"})]),
        Reply("Sorry about the chair. I've asked the team to refund 150.00 USD."),
    )
    ana = await desk.customer("ana", display_name="Ana Diaz").says(
        "My chair from order 40021 arrived broken, I want my money back. Ana Diaz"
    )
    await desk.agent("mgr").edit(
        await desk.card_for(ana), "Sorry about the chair, Ana. We refund 150.00 USD on order 40021 today."
    )
    await desk.reply_to(ana)

    kimi.script(Reply("We are open every day."))
    max_ = await desk.customer("max").says("are you open on sundays?")
    await desk.agent("ana").reject(await desk.card_for(max_), reason="closed on sundays")
    await desk.settle()


async def test_sent_conversations_become_cases_without_personal_data_that_load_and_run(
    tmp_path: Path, kimi: FakeKimi, database_url: str
) -> None:
    async with open_desk(tmp_path, kimi, policy=POLICY, database_url=database_url) as desk:
        linked = {"#W2611340": {"customer_accounts": desk.account("kim")}}
        linked["40021"] = {"customer_accounts": desk.account("ana"), "customer_postal_code": "75011"}
        rows = [dict(r, customer_accounts="") | linked.get(str(r["order_id"]), {}) for r in sample_orders()]
        await desk.import_orders(rows)
        await a_month_of_replies(desk, kimi)
        url = desk.bot.settings.database_url

    out = tmp_path / "exported"
    done = await asyncio.to_thread(
        supportbot, tmp_path, "eval", "export", "--since", "30d", "--out", str(out), DATABASE_URL=url
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert f"wrote 2 cases to {out / 'cases.jsonl'}" in done.stdout

    text = (out / "cases.jsonl").read_text()
    for personal in ("Kim Lee", "kim@example.com", "Ana Diaz", "ana@example.com", "75011", "W2611340", "40021", "C-1"):
        assert personal.lower() not in text.lower(), f"{personal} is left in the export"
    assert not re.search(r"\b(kim|ana|lee|diaz)\b", text, re.IGNORECASE), "no first or last name, no chat id"

    status, refund = load_cases(out / "cases.jsonl")  # the eval's own loader
    assert status.customer.user_id == "U_CUSTOMER1" and status.customer.display_name == "Customer 1"
    assert status.customer.email == "customer1@example.com"
    assert status.turns[0].text == "Hi, Customer 1 here (customer1@example.com): where is my order #X0001?"
    assert [a.action for a in status.approver] == ["approve"]
    assert [(t.name, t.args) for t in status.expected.tool_calls_required] == [
        ("get_order_status", {"order_id": "#X0001"})
    ]
    assert status.expected.reply_must_include == ("#X0001", "UPS", "1Z999AA10123456784")
    assert status.expected.refunds_executed == ()
    order = status.orders[0]
    assert (order["order_id"], order["customer_name"], order["customer_email"]) == (
        "#X0001",
        "Customer 1",
        "customer1@example.com",
    )

    [edit] = refund.approver
    assert (
        edit.action == "edit"
        and edit.text == "Sorry about the chair, Customer. We refund 150.00 USD on order #X0002 today."
    )
    assert [(r.order_id, r.amount) for r in refund.expected.refunds_executed or ()] == [("#X0002", "150.00")]
    assert refund.customer.accounts_linked and refund.customer.customer_id == refund.orders[0]["customer_id"]
    assert refund.orders[0]["refunded"] == "0.00", "the order as it was before the conversation's refund"
    assert refund.orders[0]["customer_postal_code"] == "00001"
    assert refund.policy == {"approvers": {"managers": [edit.as_]}}

    again = await asyncio.to_thread(supportbot, tmp_path, "eval", "export", "--out", str(out), DATABASE_URL=url)
    assert again.returncode == EXIT_RUNTIME and "exists already" in again.stderr

    results = tmp_path / "results.json"
    ran = await asyncio.to_thread(
        supportbot,
        tmp_path,
        "eval",
        str(out / "cases.jsonl"),
        "--policy",
        str(EVALS / "policy.toml"),
        "--json",
        str(results),
        "-q",
        MOONSHOT_API_KEY=KIMI_KEY,
    )
    assert results.exists(), ran.stderr
    trials = {t["case"]: t for t in json.loads(results.read_text())["trials"]}
    assert trials[status.id]["passed"], trials[status.id]
    assert trials[refund.id]["passed"], trials[refund.id]
    assert ran.returncode == EXIT_OK, ran.stderr


def test_export_with_nothing_sent_writes_nothing_and_its_options_belong_to_it(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    done = supportbot(tmp_path, "eval", "export", "--out", "cases", DATABASE_URL=url)
    assert done.returncode == EXIT_OK, done.stderr
    assert "nothing to export" in done.stdout and not (tmp_path / "cases").exists()
    misplaced = supportbot(tmp_path, "eval", "cases.jsonl", "--since", "7d")
    assert (
        misplaced.returncode == EXIT_RUNTIME
        and "--since and --out belong to: supportbot eval export" in misplaced.stderr
    )
