"""The tools the drafting agent calls, and the order backends behind them.

Order stores are real SQLite files (set SUPPORTBOT_TEST_POSTGRES_URL to also run the SQL backend
against PostgreSQL); the HTTP shop is a real aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import ast
import asyncio
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.evaluation.simulator import LoopbackServer
from tools import (
    HttpOrderBackend,
    KnowledgeBase,
    RefundRules,
    SqlOrderBackend,
    ToolContext,
    ToolError,
    default_tools,
    import_orders,
)
from tools.knowledge import SearchKnowledge, SearchKnowledgeArgs
from tools.money import Money
from tools.order_tools import (
    CheckRefundEligibility,
    GetOrderStatus,
    OrderIdArgs,
    ProposeRefund,
    ProposeRefundArgs,
)
from tools.orders import order_refunds_table
from tools.refunds import OrderFacts, RefundProposal

CTX = ToolContext(conversation_id="conv-1", identity_checks=False)  # identity: tests/test_guards.py
TODAY = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)

ORDERS: list[dict[str, Any]] = [
    {
        "order_id": "#W2611340",
        "customer_name": "Ana Lima",
        "status": "shipped",
        "currency": "USD",
        "total": "49.90",
        "placed_at": "2026-11-20T09:30:00Z",
        "carrier": "UPS",
        "tracking_number": "1Z999",
        "estimated_delivery": "2026-11-30",
        "items": [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": "24.95"}],
    },
    {
        "order_id": "40021",
        "status": "shipped",
        "currency": "EUR",
        "total": "20.00",
        "placed_at": "2026-12-01T10:00:00Z",
        "carrier": "DHL",
    },
    {
        "order_id": "ORD-77",
        "status": "delivered",
        "currency": "USD",
        "total": "100.00",
        "refunded": "10.00",
        "placed_at": "2026-11-25T10:00:00Z",
        "delivered_at": "2026-12-01T10:00:00Z",
        "items": [
            {"sku": "LAMP", "name": "Lamp", "quantity": 1, "unit_price": "70.00"},
            {"sku": "BULB", "name": "Bulb", "quantity": 3, "unit_price": "10.00"},
        ],
    },
    {
        "order_id": "OLD-1",
        "status": "delivered",
        "currency": "USD",
        "total": "30.00",
        "placed_at": "2026-09-01T10:00:00Z",
        "delivered_at": "2026-09-05T10:00:00Z",
    },
]


@pytest.fixture
async def engine(order_store: AsyncEngine, tmp_path: Path) -> AsyncEngine:
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(json.dumps(order) for order in ORDERS), encoding="utf-8")
    await import_orders(order_store, path)
    return order_store


@pytest.fixture
def backend(engine: AsyncEngine) -> SqlOrderBackend:
    return SqlOrderBackend(engine)


async def refund_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(order_refunds_table)) or 0)


# --------------------------------------------------------------------------------------------
# get_order_status


async def test_customer_asks_where_a_shipped_order_is(backend: SqlOrderBackend) -> None:
    result = await GetOrderStatus(backend).run(OrderIdArgs(order_id=" W2611340 "), CTX)

    assert result.summary == "#W2611340: shipped via UPS 1Z999, ETA 2026-11-30"
    assert result.proposal is None
    assert result.data == {
        "order_id": "#W2611340",
        "status": "shipped",
        "customer_name": "Ana Lima",
        "currency": "USD",
        "total": "49.90",
        "refunded": "0.00",
        "items": [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": "24.95"}],
        "carrier": "UPS",
        "tracking_number": "1Z999",
        "placed_at": "2026-11-20T09:30:00+00:00",
        "delivered_at": None,
        "estimated_delivery": "2026-11-30",
        "estimate_basis": "shop_estimate",
    }


async def test_an_order_id_typed_full_width_by_a_chinese_or_japanese_input_method_is_found(
    backend: SqlOrderBackend,
) -> None:
    result = await GetOrderStatus(backend).run(OrderIdArgs(order_id="＃Ｗ２６１１３４０"), CTX)

    assert result.summary == "#W2611340: shipped via UPS 1Z999, ETA 2026-11-30"


async def test_a_shipped_order_without_an_estimate_is_expected_five_days_after_it_was_placed(
    backend: SqlOrderBackend,
) -> None:
    result = await GetOrderStatus(backend).run(OrderIdArgs(order_id="#40021"), CTX)

    assert result.data["estimated_delivery"] == "2026-12-06"
    assert result.data["estimate_basis"] == "placed_at_plus_5_days"
    assert result.summary == "40021: shipped via DHL, ETA ~2026-12-06"


async def test_a_delivered_order_reports_its_delivery_date_and_no_estimate(backend: SqlOrderBackend) -> None:
    result = await GetOrderStatus(backend).run(OrderIdArgs(order_id="ORD-77"), CTX)

    assert result.summary == "ORD-77: delivered 2026-12-01"
    assert result.data["delivered_at"] == "2026-12-01T10:00:00+00:00"
    assert (result.data["estimated_delivery"], result.data["estimate_basis"]) == (None, None)


async def test_an_unknown_order_is_not_found(backend: SqlOrderBackend) -> None:
    with pytest.raises(ToolError) as caught:
        await GetOrderStatus(backend).run(OrderIdArgs(order_id="W0000000"), CTX)

    assert (caught.value.code, caught.value.message) == ("not_found", "No order with id W0000000")


# --------------------------------------------------------------------------------------------
# check_refund_eligibility


async def test_a_delivered_order_inside_the_window_is_eligible(backend: SqlOrderBackend) -> None:
    tool = CheckRefundEligibility(backend, clock=lambda: TODAY)

    result = await tool.run(OrderIdArgs(order_id="ORD-77"), CTX)

    assert result.data["eligible"] is True
    assert result.data["days_since_delivery"] == 9
    assert result.data["within_window"] is True
    assert (result.data["refunded"], result.data["refundable"]) == ("10.00", "90.00")
    assert result.data["reasons"] == [
        "status delivered allows a refund",
        "delivered 9 days ago, within the 30-day refund window",
        "90.00 USD is still refundable (10.00 USD refunded so far)",
    ]
    assert result.summary == "ORD-77: eligible, up to 90.00 USD"


async def test_eligibility_outside_the_window_says_so(backend: SqlOrderBackend) -> None:
    tool = CheckRefundEligibility(backend, clock=lambda: TODAY)

    result = await tool.run(OrderIdArgs(order_id="OLD-1"), CTX)

    assert result.data["eligible"] is False
    assert (result.data["days_since_delivery"], result.data["window_days"]) == (96, 30)
    assert result.data["within_window"] is False
    assert "delivered 96 days ago, outside the 30-day refund window" in result.data["reasons"]
    assert result.summary == "OLD-1: not eligible (delivered 96 days ago, outside the 30-day refund window)"


async def test_eligibility_follows_the_rules_in_the_context(backend: SqlOrderBackend) -> None:
    tool = CheckRefundEligibility(backend, clock=lambda: TODAY)
    lenient = ToolContext(
        conversation_id="conv-2",
        refund_rules=RefundRules(window_days=120, max_amount_cents=2000, refundable_statuses=("delivered",)),
        identity_checks=False,
    )

    old = await tool.run(OrderIdArgs(order_id="OLD-1"), lenient)
    in_transit = await tool.run(OrderIdArgs(order_id="40021"), lenient)

    assert old.data["eligible"] is True
    assert "a single refund is capped at 20.00 USD" in old.data["reasons"]
    assert in_transit.data["eligible"] is False
    assert in_transit.data["status_refundable"] is False
    assert in_transit.data["days_since_delivery"] is None
    assert in_transit.data["reasons"][0] == "status shipped does not allow a refund (allowed: delivered)"


# --------------------------------------------------------------------------------------------
# propose_refund


async def test_a_proposed_refund_moves_no_money(engine: AsyncEngine, backend: SqlOrderBackend) -> None:
    args = ProposeRefundArgs(order_id="ORD-77", amount="20", reason="Bulbs arrived broken", items=["BULB"])

    result = await ProposeRefund(backend).run(args, CTX)

    assert result.proposal == RefundProposal(
        # THE refund rule re-checks the order's facts at approval and execution (tools/refunds.py)
        order=OrderFacts(
            order_id="ORD-77",
            customer_id=None,
            status="delivered",
            currency="USD",
            total_cents=10000,
            refunded_cents=1000,
            delivered_at=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
            items={"LAMP": (1, 7000), "BULB": (3, 1000)},
        ),
        amount=Money(Decimal("20.00"), "USD"),
        reason="Bulbs arrived broken",
        items=("BULB",),
    )
    assert result.data["status"] == "proposed"
    assert "PROPOSED" in result.data["note"]
    assert "No money has moved" in result.data["note"]
    assert result.summary == "Proposed refund of 20.00 USD on ORD-77: Bulbs arrived broken"
    order = await backend.get_order("ORD-77")
    assert order is not None
    assert order.refunded_cents == 1000
    assert await refund_rows(engine) == 0


async def test_proposing_more_than_is_refundable_or_an_unknown_item_is_refused(
    backend: SqlOrderBackend,
) -> None:
    tool = ProposeRefund(backend)

    too_much = await tool.run(ProposeRefundArgs(order_id="ORD-77", amount="90.01", reason="all of it"), CTX)
    with pytest.raises(ToolError) as unknown_item:
        await tool.run(ProposeRefundArgs(order_id="ORD-77", amount="5", reason="x", items=["SOFA"]), CTX)
    with pytest.raises(ToolError) as unknown_order:
        await tool.run(ProposeRefundArgs(order_id="NOPE", amount="5", reason="x"), CTX)

    # Too much is still only a proposal; the core's policy check refuses it (tests/test_refunds.py).
    assert too_much.proposal is not None
    assert (too_much.proposal.amount.cents, too_much.proposal.order.refundable_cents) == (9001, 9000)
    assert (unknown_item.value.code, unknown_item.value.message) == (
        "invalid",
        "Order ORD-77 has no item with SKU SOFA",
    )
    assert unknown_order.value.code == "not_found"


@pytest.mark.parametrize("amount", ["12.345", "-5", "1e3", "12,50", "", "12345678"])
def test_refund_amounts_the_model_writes_must_be_plain_decimals(amount: str) -> None:
    with pytest.raises(ValidationError):
        ProposeRefundArgs(order_id="ORD-77", amount=amount, reason="x")


# --------------------------------------------------------------------------------------------
# SqlOrderBackend.execute_refund


async def test_the_same_refund_executed_twice_with_one_key_moves_money_once(
    engine: AsyncEngine, backend: SqlOrderBackend
) -> None:
    first = await backend.execute_refund("ORD-77", 2000, "Bulbs broken", "approval-41")
    again = await backend.execute_refund("#ORD-77", 2000, "Bulbs broken", "approval-41")

    assert first.replayed is False
    assert again.replayed is True
    assert (again.refund_id, again.created_at, again.order_id) == (
        first.refund_id,
        first.created_at,
        "ORD-77",
    )
    order = await backend.get_order("ORD-77")
    assert order is not None
    assert order.refunded_cents == 3000
    assert await refund_rows(engine) == 1


async def test_a_key_reused_for_a_different_refund_is_refused(backend: SqlOrderBackend) -> None:
    await backend.execute_refund("ORD-77", 2000, "Bulbs broken", "approval-42")

    with pytest.raises(ToolError) as caught:
        await backend.execute_refund("ORD-77", 2500, "Bulbs broken", "approval-42")

    assert caught.value.code == "idempotency_conflict"


async def test_two_concurrent_refunds_that_together_exceed_the_total_one_succeeds_one_is_refused(
    engine: AsyncEngine, backend: SqlOrderBackend
) -> None:
    outcomes = await asyncio.gather(
        backend.execute_refund("ORD-77", 6000, "agent A", "approval-A"),
        backend.execute_refund("ORD-77", 6000, "agent B", "approval-B"),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, ToolError)]
    succeeded = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(succeeded) == 1
    assert len(refused) == 1
    assert refused[0].code == "exceeds_refundable"
    assert "30.00 USD still refundable" in refused[0].message
    order = await backend.get_order("ORD-77")
    assert order is not None
    assert order.refunded_cents == 7000
    assert await refund_rows(engine) == 1


async def test_the_same_key_executed_concurrently_refunds_once(engine: AsyncEngine, backend: SqlOrderBackend) -> None:
    receipts = await asyncio.gather(
        *(backend.execute_refund("ORD-77", 9000, "full refund", "approval-same") for _ in range(3))
    )

    assert len({r.refund_id for r in receipts}) == 1
    assert sorted(r.replayed for r in receipts) == [False, True, True]
    order = await backend.get_order("ORD-77")
    assert order is not None
    assert order.refunded_cents == 10000
    assert await refund_rows(engine) == 1


async def test_refunding_an_unknown_order_or_a_non_positive_amount_is_refused(
    backend: SqlOrderBackend,
) -> None:
    with pytest.raises(ToolError) as unknown:
        await backend.execute_refund("NOPE", 100, "x", "k-1")
    with pytest.raises(ToolError) as zero:
        await backend.execute_refund("ORD-77", 0, "x", "k-2")

    assert unknown.value.code == "not_found"
    assert zero.value.code == "invalid"


# --------------------------------------------------------------------------------------------
# HttpOrderBackend against a shop-like server

TOKEN = "shop-secret-token"


class FakeShop:
    """A shop API that checks credentials and idempotency keys like a real one would."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {
            "#W1": {
                "order_id": "#W1",
                "status": "delivered",
                "currency": "USD",
                "total_cents": 5000,
                "refunded_cents": 0,
                "placed_at": "2026-11-20T09:30:00Z",
                "delivered_at": "2026-11-23T10:00:00",
                "estimated_delivery": None,
                "items": [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price_cents": 2500}],
            }
        }
        self.refunds: dict[str, dict[str, Any]] = {}
        self.refund_requests: list[dict[str, Any]] = []
        self.fail_next_with: int | None = None
        self.base_url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/api/orders/{order_id}", self.get_order),
                web.post("/api/orders/{order_id}/refunds", self.refund),
            ]
        )
        return app

    def refused(self, request: web.Request) -> web.Response | None:
        if self.fail_next_with is not None:
            status, self.fail_next_with = self.fail_next_with, None
            return web.json_response({"error": "boom", "detail": f"token was {TOKEN}"}, status=status)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return None

    async def get_order(self, request: web.Request) -> web.Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response(order)

    async def refund(self, request: web.Request) -> web.Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        key = request.headers.get("Idempotency-Key")
        body = await request.json()
        self.refund_requests.append({"key": key, "path_id": request.match_info["order_id"], **body})
        if not key:
            return web.json_response({"error": "idempotency_key_required"}, status=400)
        if key in self.refunds:
            return web.json_response(self.refunds[key], headers={"Idempotent-Replayed": "true"})
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            return web.json_response({"error": "not_found"}, status=404)
        if order["refunded_cents"] + body["amount_cents"] > order["total_cents"]:
            return web.json_response({"error": "exceeds_refundable"}, status=409)
        order["refunded_cents"] += body["amount_cents"]
        refund = {
            "refund_id": f"re_{len(self.refunds) + 1}",
            "amount_cents": body["amount_cents"],
            "created_at": "2026-12-10T12:00:00Z",
        }
        self.refunds[key] = refund
        return web.json_response(refund, status=201)


@pytest.fixture
async def shop() -> AsyncIterator[FakeShop]:
    fake = FakeShop()
    async with LoopbackServer(fake.app()) as server:
        fake.base_url = f"{server.origin}/api/"
        yield fake


@pytest.fixture
async def http_backend(shop: FakeShop) -> AsyncIterator[HttpOrderBackend]:
    backend = HttpOrderBackend(shop.base_url, TOKEN, timeout=5.0)
    yield backend
    await backend.aclose()


async def test_the_http_shop_backend_looks_orders_up_by_any_spelling_of_the_id(
    http_backend: HttpOrderBackend,
) -> None:
    order = await http_backend.get_order("W1")

    assert order is not None
    assert order.order_id == "#W1"
    assert order.delivered_at == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert order.items[0].unit_price_cents == 2500
    assert await http_backend.get_order("W2") is None
    full_width = await http_backend.get_order("Ｗ１")  # "W1" as a CJK input method types it
    assert full_width is not None and full_width.order_id == "#W1"


async def test_the_http_shop_backend_sends_idempotency_key_and_a_replay_returns_the_first_refund(
    shop: FakeShop, http_backend: HttpOrderBackend
) -> None:
    first = await http_backend.execute_refund("#W1", 1500, "Mug chipped", "approval-7")
    again = await http_backend.execute_refund("#W1", 1500, "Mug chipped", "approval-7")

    assert (first.refund_id, first.replayed, first.order_id) == ("re_1", False, "#W1")
    assert (again.refund_id, again.replayed) == ("re_1", True)
    assert first.created_at == datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
    assert shop.orders["#W1"]["refunded_cents"] == 1500
    assert shop.refund_requests == [
        {"key": "approval-7", "path_id": "#W1", "amount_cents": 1500, "reason": "Mug chipped"},
        {"key": "approval-7", "path_id": "#W1", "amount_cents": 1500, "reason": "Mug chipped"},
    ]


async def test_the_http_shop_refusing_a_refund_becomes_a_tool_error_without_secrets(
    shop: FakeShop, http_backend: HttpOrderBackend
) -> None:
    with pytest.raises(ToolError) as too_much:
        await http_backend.execute_refund("#W1", 5001, "x", "approval-8")
    shop.fail_next_with = 503
    with pytest.raises(ToolError) as down:
        await http_backend.execute_refund("#W1", 100, "x", "approval-9")
    shop.fail_next_with = 400
    with pytest.raises(ToolError) as bad:
        await http_backend.get_order("#W1")

    assert too_much.value.code == "exceeds_refundable"
    assert (down.value.code, down.value.message) == (
        "unavailable",
        "The order service failed the refund (HTTP 503)",
    )
    assert (bad.value.code, bad.value.message) == (
        "rejected",
        "The order service rejected the order lookup: boom (HTTP 400)",
    )
    assert shop.orders["#W1"]["refunded_cents"] == 0


async def test_wrong_credentials_or_an_unreachable_shop_are_reported_plainly(shop: FakeShop) -> None:
    wrong = HttpOrderBackend(shop.base_url, "not-the-token")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    gone = HttpOrderBackend(f"http://user:{TOKEN}@127.0.0.1:{closed_port}", TOKEN, timeout=2.0)
    try:
        with pytest.raises(ToolError) as refused:
            await wrong.get_order("#W1")
        with pytest.raises(ToolError) as unreachable:
            await gone.execute_refund("#W1", 100, "x", "approval-10")
    finally:
        await wrong.aclose()
        await gone.aclose()

    assert refused.value.code == "rejected"
    assert unreachable.value.code == "unavailable"
    assert TOKEN not in str(unreachable.value)
    assert TOKEN not in repr(gone)


async def test_order_tools_work_the_same_over_the_http_backend(http_backend: HttpOrderBackend) -> None:
    result = await GetOrderStatus(http_backend).run(OrderIdArgs(order_id="W1"), CTX)

    assert result.summary == "#W1: delivered 2026-11-23"
    assert result.data["total"] == "50.00"


# --------------------------------------------------------------------------------------------
# search_knowledge

HANDBOOK = """\
# Shipping

Orders ship within two business days. Tracking numbers are emailed when the parcel leaves.

# Returns policy

Items can be returned within 30 days of delivery for a full refund. Items must be unused and in
their original packaging.

Damaged items are refunded without a return.

# Accounts

To reset a password, use the link on the sign-in page.
"""


@pytest.fixture
def knowledge(tmp_path: Path) -> KnowledgeBase:
    handbook = tmp_path / "handbook.md"
    handbook.write_text(HANDBOOK, encoding="utf-8")
    faq = tmp_path / "faq.txt"
    faq.write_text("Gift cards\n\nGift cards never expire and cannot be refunded.\n", encoding="utf-8")
    return KnowledgeBase.from_files([handbook, faq])


async def test_knowledge_search_finds_the_returns_policy_passage(knowledge: KnowledgeBase) -> None:
    result = await SearchKnowledge(knowledge).run(SearchKnowledgeArgs(query="Can I return my order?"), CTX)

    top = result.data["results"][0]
    assert top["source"] == "handbook.md"
    assert top["heading"] == "Returns policy"
    assert top["text"].startswith("Items can be returned within 30 days of delivery")
    assert len(result.data["results"]) <= 3
    assert result.summary.startswith("3 passage(s) for 'Can I return my order?': handbook.md › Returns policy")


async def test_knowledge_search_without_a_match_returns_no_results(knowledge: KnowledgeBase) -> None:
    nothing = await SearchKnowledge(knowledge).run(SearchKnowledgeArgs(query="warranty for the toaster"), CTX)
    only_stop_words = await SearchKnowledge(knowledge).run(SearchKnowledgeArgs(query="what is the"), CTX)

    assert nothing.data == {"query": "warranty for the toaster", "results": []}
    assert only_stop_words.data["results"] == []


async def test_long_passages_are_cut_to_about_800_characters(tmp_path: Path) -> None:
    path = tmp_path / "long.md"
    path.write_text("# Warranty\n\n" + "warranty " * 300, encoding="utf-8")

    result = await SearchKnowledge(KnowledgeBase.from_files([path])).run(SearchKnowledgeArgs(query="warranty"), CTX)

    text = result.data["results"][0]["text"]
    assert len(text) <= 800
    assert text.endswith("…")


def test_a_knowledge_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("café".encode("latin-1"))

    with pytest.raises(ValueError, match=r"latin\.txt is not UTF-8 text"):
        KnowledgeBase.from_files([path])


# --------------------------------------------------------------------------------------------
# The tool set as the agent sees it


def test_default_tools_come_in_a_stable_order_with_simple_schemas(knowledge: KnowledgeBase) -> None:
    backend = SqlOrderBackend(create_async_engine("sqlite+aiosqlite://"))

    with_knowledge = default_tools(backend, knowledge)
    without = default_tools(backend, None)

    assert [t.name for t in with_knowledge] == [
        "get_order_status",
        "check_refund_eligibility",
        "propose_refund",
        "verify_customer",
        "search_knowledge",
        "no_reply_needed",
    ]
    assert [t.name for t in without] == [
        "get_order_status",
        "check_refund_eligibility",
        "propose_refund",
        "verify_customer",
        "no_reply_needed",
    ]
    assert [t.kind for t in with_knowledge] == ["read", "read", "action", "read", "read", "read"]
    schemas = json.dumps(with_knowledge.definitions())
    assert "anyOf" not in schemas
    assert "null" not in schemas
    assert json.dumps(default_tools(backend, knowledge).definitions()) == schemas


def test_tools_import_nothing_from_the_core_or_the_adapters() -> None:
    for path in (Path(__file__).parent.parent / "tools").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in {"bot", "adapters"}, f"{path.name} imports {module}"
