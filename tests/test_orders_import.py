"""Importing orders from CSV and JSON Lines files into the order store.

Runs on a real SQLite file; set SUPPORTBOT_TEST_POSTGRES_URL (postgresql+asyncpg://...) to also
run against PostgreSQL (the tables are dropped and re-created there).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tools import OrderImportError, SqlOrderBackend, ToolContext, import_orders
from tools.order_tools import GetOrderStatus, OrderIdArgs
from tools.orders import orders_table

HEADER = (
    "order_id,customer_id,customer_name,customer_email,status,currency,total,refunded,placed_at,"
    "delivered_at,carrier,tracking_number,estimated_delivery,items"
)
MUGS = '"[{""sku"": ""MUG-1"", ""name"": ""Mug"", ""quantity"": 2, ""unit_price"": ""24.95""}]"'


@pytest.fixture
def engine(order_store: AsyncEngine) -> AsyncEngine:
    return order_store


def write(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def order_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(orders_table)) or 0)


async def rejected(engine: AsyncEngine, path: Path) -> list[str]:
    with pytest.raises(OrderImportError) as caught:
        await import_orders(engine, path)
    assert caught.value.code == "invalid_file"
    assert await order_count(engine) == 0
    return caught.value.problems


async def test_operator_imports_a_csv_of_three_orders_and_the_bot_can_look_each_up(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "orders.csv",
        HEADER,
        f"#W2611340,c-1,Ana Lima,ana@example.com,shipped,USD,49.90,,2026-11-20T09:30:00Z,,UPS,1Z999,2026-11-30,{MUGS}",
        "40021,c-2,Bo Chen,bo@example.com,delivered,eur,12.5,2.50,2026-11-01,2026-11-04T15:00:00+01:00,DHL,JD01,,",
        "ORD-77,,,,pending,GBP,100,0,2026-12-01T08:00:00,,,,,[]",
    )

    assert await import_orders(engine, path) == 3

    backend = SqlOrderBackend(engine)
    tool = GetOrderStatus(backend)
    ctx = ToolContext(conversation_id="conv-1", identity_checks=False)  # an operator sees every order
    first = await tool.run(OrderIdArgs(order_id="W2611340"), ctx)
    assert first.summary == "#W2611340: shipped via UPS 1Z999, ETA 2026-11-30"
    assert first.data["total"] == "49.90"
    assert first.data["items"] == [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price": "24.95"}]

    second = await backend.get_order("#40021")
    assert second is not None
    assert second.order_id == "40021"
    assert (second.currency, second.total_cents, second.refunded_cents) == ("EUR", 1250, 250)
    assert second.delivered_at == datetime(2026, 11, 4, 14, 0, tzinfo=UTC)
    assert second.placed_at == datetime(2026, 11, 1, tzinfo=UTC)
    assert second.estimated_delivery is None

    third = await backend.get_order(" ORD-77 ")
    assert third is not None
    assert third.customer_name is None
    assert third.items == ()
    assert third.placed_at.tzinfo is not None


async def test_a_bad_amount_on_line_3_is_rejected_naming_line_3_and_nothing_is_imported(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "orders.csv",
        HEADER,
        "A1,,,,shipped,USD,10.00,,2026-11-20,,,,,",
        "A2,,,,shipped,USD,abc,,2026-11-20,,,,,",
        "A3,,,,shipped,USD,5.00,,2026-11-20,,,,,",
    )

    problems = await rejected(engine, path)

    assert problems == ["line 3: total: not a decimal amount ('abc')"]


async def test_every_problem_in_a_file_is_reported_with_physical_line_numbers(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "orders.csv",
        HEADER,
        'B1,,"Name on\ntwo lines",,shipped,USD,10.00,,2026-11-20,,,,,',  # lines 2-3
        "B2,,,,lost,USD,10.001,,yesterday,,,,,",  # line 4
        "",  # line 5: blank, skipped
        "B3,,,,shipped,US,10.00,12.00,2026-11-20,,,,not-a-date,",  # line 6
        ',,,,shipped,USD,1,,2026-11-20,,,,,"[{""sku"": ""X"", ""quantity"": 0}]"',  # line 7
        "B1,,,,shipped,USD,10.00,,2026-11-20,,,,,",  # line 8: duplicate
        "B5,too,few",  # line 9
    )

    problems = await rejected(engine, path)

    assert problems == [
        "line 4: status: unknown status 'lost' (expected one of: pending, processing, shipped, delivered, "
        "cancelled, returned)",
        "line 4: total: more than 2 decimal places ('10.001')",
        "line 4: placed_at: not an ISO 8601 date-time ('yesterday')",
        "line 6: currency: not a 3-letter currency code ('US')",
        "line 6: refunded: more than the total (12.00 > 10.00)",
        "line 6: estimated_delivery: not an ISO 8601 date ('not-a-date')",
        "line 7: order_id: required",
        "line 7: items: item 1: quantity: not a whole number from 1 to 1000000 (0)",
        "line 7: items: item 1: unit_price: required",
        "line 8: order_id: duplicate of line 2 ('B1')",
        "line 9: expected 14 fields, found 3",
    ]


async def test_json_lines_import_reads_numbers_exactly_and_real_item_arrays(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    rows = [
        {
            "order_id": "#W1",
            "status": "delivered",
            "currency": "USD",
            "total": 0.30,
            "refunded": "0.10",
            "placed_at": "2026-11-01T10:00:00Z",
            "delivered_at": "2026-11-03T10:00:00Z",
            "items": [{"sku": "PEN", "name": "Pen", "quantity": 3, "unit_price": 0.10}],
        },
        {
            "order_id": 40021,
            "status": "processing",
            "currency": "JPY",
            "total": 1500,
            "placed_at": "2026-11-02",
        },
    ]
    # 0.30 and 0.10 written as JSON numbers: read as decimals, not floats.
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")

    assert await import_orders(engine, path) == 2

    backend = SqlOrderBackend(engine)
    pen = await backend.get_order("W1")
    assert pen is not None
    assert (pen.total_cents, pen.refunded_cents, pen.refundable_cents) == (30, 10, 20)
    assert pen.items[0].unit_price_cents == 10
    numeric = await backend.get_order("40021")
    assert numeric is not None
    assert numeric.total_cents == 150_000


J1 = {"order_id": "J1", "status": "shipped", "currency": "USD", "total": "1.00", "placed_at": "2026-11-01"}


async def test_json_lines_problems_name_their_lines(engine: AsyncEngine, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "orders.ndjson",
        json.dumps(J1),
        '{"order_id": "J2", "status": "shipped",',
        '["not", "an", "object"]',
        json.dumps({**J1, "order_id": "J4", "colour": "red"}),
        json.dumps({**J1, "order_id": "J5", "total": True, "items": "[]"}),
    )

    problems = await rejected(engine, path)

    assert problems == [
        "line 2: not valid JSON (Expecting property name enclosed in double quotes at column 40)",
        "line 3: expected a JSON object, found an array",
        "line 4: unknown field(s): 'colour'",
        "line 5: total: not a decimal amount (True)",
    ]


async def test_re_importing_updates_orders_but_never_undoes_executed_refunds(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    first = write(
        tmp_path,
        "monday.csv",
        HEADER,
        "#W9,,,,shipped,USD,80.00,0,2026-11-20,,UPS,1Z1,2026-11-25,",
        "#W10,,,,processing,USD,20.00,0,2026-11-21,,,,,",
    )
    assert await import_orders(engine, first) == 2
    backend = SqlOrderBackend(engine)
    await backend.execute_refund("#W9", 3000, "damaged", "refund-w9-1")

    second = write(
        tmp_path,
        "tuesday.csv",
        HEADER,
        "#W9,,,,delivered,USD,80.00,0,2026-11-20,2026-11-24T12:00:00Z,UPS,1Z1,2026-11-25,",
    )
    assert await import_orders(engine, second) == 1

    w9 = await backend.get_order("#W9")
    assert w9 is not None
    assert w9.status == "delivered"
    assert w9.delivered_at == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert w9.estimated_delivery == date(2026, 11, 25)
    assert w9.refunded_cents == 3000  # the file says 0; the executed refund stands
    assert await order_count(engine) == 2

    lower_total = write(
        tmp_path,
        "wednesday.csv",
        HEADER,
        "#W10,,,,shipped,USD,20.00,,2026-11-21,,,,,",
        "#W9,,,,delivered,USD,25.00,,2026-11-20,,,,,",
    )
    with pytest.raises(OrderImportError) as caught:
        await import_orders(engine, lower_total)
    assert caught.value.problems == ["line 3: total: 25.00 is below the 30.00 already refunded on this order"]
    w10 = await backend.get_order("#W10")
    assert w10 is not None
    assert w10.status == "processing"  # nothing from the rejected file was written


async def test_a_file_that_is_not_utf8_is_rejected_naming_the_line(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes((HEADER + "\n").encode() + "C1,,José,,shipped,USD,1.00,,2026-11-01,,,,,\n".encode("latin-1"))

    problems = await rejected(engine, path)

    assert problems == ["line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8"]


async def test_a_utf8_file_with_a_byte_order_mark_is_fine(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_bytes(("\ufeff" + HEADER + "\nC1,,José,,shipped,USD,1.00,,2026-11-01,,,,,\n").encode())

    assert await import_orders(engine, path) == 1


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("orders.csv", "", "the file is empty"),
        ("orders.jsonl", "\n  \n", "the file is empty"),
        ("orders.csv", HEADER + "\n", "the file has no orders"),
        (
            "orders.csv",
            "order_id,status,currency,placed_at\nD1,shipped,USD,2026-11-01\n",
            "line 1: missing required column(s): total",
        ),
        (
            "orders.csv",
            "order_id,status,currency,total,placed_at,shipping\nD1,shipped,USD,1,2026-11-01,x\n",
            "line 1: unknown column 'shipping' (known: "
            + HEADER.replace(",", ", ")
            + ", customer_postal_code, customer_accounts)",
        ),
        ("orders.xlsx", "whatever", "unsupported file type '.xlsx': use .csv, .jsonl or .ndjson"),
    ],
)
async def test_unusable_files_get_a_clear_problem(
    engine: AsyncEngine, tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    assert await rejected(engine, path) == [problem]


async def test_a_minimal_csv_with_only_the_required_columns_imports(engine: AsyncEngine, tmp_path: Path) -> None:
    path = write(tmp_path, "orders.csv", "Order_ID , status,currency,total,placed_at", "E1,Shipped,usd,7,2026-11-01")

    assert await import_orders(engine, path) == 1

    order = await SqlOrderBackend(engine).get_order("E1")
    assert order is not None
    assert (order.status, order.currency, order.total_cents, order.refunded_cents) == (
        "shipped",
        "USD",
        700,
        0,
    )
