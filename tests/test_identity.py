"""Identity at the tool level (issue 8): linked accounts from the orders import and the command
line, what an unverified asker may see, and verify_customer's bounded, silent comparison.
Real SQLite order stores; the command line runs as a real subprocess."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.processes import supportbot
from tests.test_operator import sqlite_url
from tools import OrderImportError, SqlOrderBackend, ToolContext, ToolError, import_orders
from tools.order_tools import (
    CheckRefundEligibility,
    GetOrderStatus,
    OrderIdArgs,
    ProposeRefund,
    ProposeRefundArgs,
    VerifyCustomer,
    VerifyCustomerArgs,
)
from tools.orders import linked_customer, metadata

ROWS: list[dict[str, Any]] = [
    {
        "order_id": "A-1",
        "customer_id": "C-ANA",
        "customer_name": "Ana Lima",
        "customer_email": "ana@example.com",
        "customer_postal_code": "SW1A 1AA",
        "customer_accounts": "slack:U0ANA, discord:4567",
        "status": "shipped",
        "currency": "USD",
        "total": "49.90",
        "placed_at": "2026-11-20T09:30:00Z",
        "carrier": "UPS",
        "tracking_number": "1Z999ANA",
        "estimated_delivery": "2026-11-30",
        "items": [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": "24.95"}],
    },
    {
        "order_id": "B-2",
        "customer_id": "C-BO",
        "customer_name": "Bo Chen",
        "customer_email": "bo@example.com",
        "status": "delivered",
        "currency": "USD",
        "total": "20.00",
        "placed_at": "2026-11-20T09:30:00Z",
        "delivered_at": "2026-11-25T09:30:00Z",
    },
]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    await import_orders(engine, path)
    yield engine
    await engine.dispose()


def asker(verified: str | None = None, **kwargs: Any) -> ToolContext:
    return ToolContext(conversation_id="conv-1", asker="slack:U0X", verified_customer_id=verified, **kwargs)


async def test_the_import_links_accounts_to_the_orders_customer(engine: AsyncEngine) -> None:
    assert await linked_customer(engine, "slack:U0ANA") == "C-ANA"
    assert await linked_customer(engine, "discord:4567") == "C-ANA"
    assert await linked_customer(engine, "slack:U0BO") is None
    order = await SqlOrderBackend(engine).get_order("A-1")
    assert order is not None and order.customer_postal_code == "SW1A 1AA"


async def test_bad_accounts_in_the_orders_file_are_named_and_nothing_is_imported(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "order_id,customer_id,status,currency,total,placed_at,customer_accounts\n"
        "X-1,C-9,shipped,USD,1,2026-11-01,Telegram 42\n"
        "X-2,,shipped,USD,1,2026-11-01,slack:U0NOBODY\n"
    )
    with pytest.raises(OrderImportError) as caught:
        await import_orders(engine, path)
    assert caught.value.problems == [
        "line 2: customer_accounts: not an account such as slack:U0123 or discord:4567 ('Telegram')",
        "line 3: customer_accounts: needs a customer_id on the same order",
    ]
    assert await linked_customer(engine, "slack:U0NOBODY") is None


async def test_an_unverified_asker_gets_only_verification_needed(engine: AsyncEngine) -> None:
    backend = SqlOrderBackend(engine)
    ctx = asker()
    result = await GetOrderStatus(backend).run(OrderIdArgs(order_id="A-1"), ctx)
    assert result.data == {
        "order_id": "A-1",
        "verification": "needed",
        "note": result.data["note"],
    }
    assert result.summary == "A-1: verification needed, nothing personal shown"
    assert ctx.foreign_orders == {"A-1"}
    assert {"Ana Lima", "ana@example.com", "1Z999ANA", "SW1A 1AA"} <= ctx.withheld

    # An order that does not exist looks the same: no enumeration of order ids.
    missing = await GetOrderStatus(backend).run(OrderIdArgs(order_id="NOPE-1"), ctx)
    assert missing.data["verification"] == "needed"
    eligibility = await CheckRefundEligibility(backend).run(OrderIdArgs(order_id="B-2"), ctx)
    assert eligibility.data["verification"] == "needed" and "eligible" not in eligibility.data


async def test_the_policy_may_let_an_unverified_asker_see_bare_status_and_eta(engine: AsyncEngine) -> None:
    result = await GetOrderStatus(SqlOrderBackend(engine)).run(
        OrderIdArgs(order_id="A-1"), asker(unverified_may_see_status=True)
    )
    assert result.data["status"] == "shipped" and result.data["estimated_delivery"] == "2026-11-30"
    assert not {"customer_name", "items", "tracking_number", "carrier"} & set(result.data)


async def test_the_verified_owner_sees_the_order_and_someone_else_does_not(engine: AsyncEngine) -> None:
    backend = SqlOrderBackend(engine)
    mine = await GetOrderStatus(backend).run(OrderIdArgs(order_id="A-1"), asker("C-ANA"))
    assert mine.data["customer_name"] == "Ana Lima" and mine.data["tracking_number"] == "1Z999ANA"
    other = await GetOrderStatus(backend).run(OrderIdArgs(order_id="A-1"), asker("C-BO"))
    assert other.data["verification"] == "needed"
    with pytest.raises(ToolError) as caught:  # a verified customer may learn an order does not exist
        await GetOrderStatus(backend).run(OrderIdArgs(order_id="NOPE-1"), asker("C-BO"))
    assert caught.value.code == "not_found"


async def test_a_refund_proposed_for_someone_elses_order_says_so_and_records_the_owner(engine: AsyncEngine) -> None:
    args = ProposeRefundArgs(order_id="B-2", amount="5.00", reason="late")
    result = await ProposeRefund(SqlOrderBackend(engine)).run(args, asker("C-ANA"))
    assert result.proposal is not None and result.proposal.order.customer_id == "C-BO"
    assert "Verification needed" in result.data["note"] and "will be refused" in result.data["note"]


async def test_verify_customer_compares_in_code_with_bounded_attempts(engine: AsyncEngine) -> None:
    tool = VerifyCustomer(SqlOrderBackend(engine))
    ctx = asker(max_verify_attempts=3)
    for guess in ("x@example.com", "bo@example.com"):
        miss = await tool.run(VerifyCustomerArgs(order_id="A-1", email=guess), ctx)
        assert miss.data["verified"] is False and set(miss.data) == {"verified", "attempts_left", "note"}
    wrong_order = await tool.run(VerifyCustomerArgs(order_id="NOPE-1", email="ana@example.com"), ctx)
    assert wrong_order.data == {"verified": False, "attempts_left": 0, "note": wrong_order.data["note"]}
    assert ctx.verify_attempts == 3 and ctx.verification_locked
    with pytest.raises(ToolError) as caught:
        await tool.run(VerifyCustomerArgs(order_id="A-1", email="ana@example.com"), ctx)
    assert caught.value.code == "locked" and ctx.verified_customer_id is None


async def test_verify_customer_by_name_and_postal_code(engine: AsyncEngine) -> None:
    tool = VerifyCustomer(SqlOrderBackend(engine))
    ctx = asker()
    with pytest.raises(ToolError):
        await tool.run(VerifyCustomerArgs(order_id="A-1", name="Ana Lima"), ctx)  # the postal code is needed too
    hit = await tool.run(VerifyCustomerArgs(order_id="A-1", name="ana lima", postal_code="sw1a1aa"), ctx)
    assert hit.data == {"verified": True, "order_id": "A-1"}
    assert (ctx.verified_customer_id, ctx.verify_attempts) == ("C-ANA", 0)


async def test_a_customer_typing_full_width_as_a_japanese_input_method_does_is_verified_first_time(
    engine: AsyncEngine,
) -> None:
    tool = VerifyCustomer(SqlOrderBackend(engine))
    by_name, by_email = asker(), asker()
    hit = await tool.run(
        VerifyCustomerArgs(order_id="Ａ－１", name="Ａｎａ　Ｌｉｍａ", postal_code="ＳＷ１Ａ　１ＡＡ"),
        by_name,
    )
    assert hit.data == {"verified": True, "order_id": "A-1"}
    assert (by_name.verified_customer_id, by_name.verify_attempts) == ("C-ANA", 0), "no attempt spent"
    mail = await tool.run(VerifyCustomerArgs(order_id="A-1", email="ａｎａ＠example.com"), by_email)
    assert mail.data["verified"] is True and by_email.verified_customer_id == "C-ANA"


def test_an_operator_links_an_account_on_the_command_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "bot.db")
    linked = supportbot(tmp_path, "customers", "link", "slack:U0KIM", "C-17", DATABASE_URL=url)
    assert linked.returncode == 0, linked.stderr
    assert "slack:U0KIM is now customer C-17" in linked.stdout
    bad = supportbot(tmp_path, "customers", "link", "U0KIM", "C-17", DATABASE_URL=url)
    assert bad.returncode == 2 and "not an account such as slack:U0123" in bad.stderr

    async def check() -> str | None:
        engine = create_async_engine(url)
        try:
            return await linked_customer(engine, "slack:U0KIM")
        finally:
            await engine.dispose()

    assert asyncio.run(check()) == "C-17"
