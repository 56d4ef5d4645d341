"""Import orders from a CSV or JSON Lines file into the ``orders`` table.

The file type comes from the suffix: ``.csv`` (a header row, then one order per row) or
``.jsonl``/``.ndjson`` (one JSON object per line). Columns (or keys)::

    order_id, customer_id, customer_name, customer_email, status, currency, total, refunded,
    placed_at, delivered_at, carrier, tracking_number, estimated_delivery, items,
    customer_postal_code, customer_accounts

``order_id``, ``status``, ``currency``, ``total`` and ``placed_at`` are required; the others may
be missing or empty. ``total``, ``refunded`` and an item's ``unit_price`` are decimal amounts
(``"49.90"``; in JSON Lines a JSON number is read exactly, never as a float). Dates are ISO 8601
(a date-time without an offset is UTC). ``items`` is a JSON array of
``{"sku", "name", "quantity", "unit_price"}``: a JSON string in a CSV cell, a real array in JSON
Lines. ``customer_postal_code`` lets a customer verify with their name and postal code;
``customer_accounts`` links chat accounts to the order's ``customer_id`` (which it then requires):
``slack:U0123`` or ``discord:4567``, several separated by spaces or commas.

Every row is checked before anything is written. If any row has a problem the whole file is
rejected with :class:`OrderImportError`, whose ``problems`` name each line (physical line
numbers; a CSV header is line 1) and field. Otherwise all rows are upserted in one transaction:
an order already in the table is updated, except that ``refunded_cents`` never goes below what
it already is (refunds executed through supportbot are not undone by an older export).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import case, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tools.base import ToolError
from tools.json_input import loads, quoted
from tools.money import Money
from tools.orders import ACCOUNT_PATTERN, MAX_ORDER_ID_LENGTH, ORDER_STATUSES, customer_accounts_table, orders_table

__all__ = ["COLUMNS", "REQUIRED_COLUMNS", "OrderImportError", "import_orders"]

COLUMNS: tuple[str, ...] = (
    "order_id",
    "customer_id",
    "customer_name",
    "customer_email",
    "status",
    "currency",
    "total",
    "refunded",
    "placed_at",
    "delivered_at",
    "carrier",
    "tracking_number",
    "estimated_delivery",
    "items",
    "customer_postal_code",
    "customer_accounts",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("order_id", "status", "currency", "total", "placed_at")

_TEXT_LIMITS = {
    "order_id": MAX_ORDER_ID_LENGTH,
    "customer_id": 200,
    "customer_name": 200,
    "customer_email": 320,
    "carrier": 64,
    "tracking_number": 128,
    "customer_postal_code": 32,
}
_ITEM_KEYS = ("sku", "name", "quantity", "unit_price")
_CURRENCY = re.compile(r"[A-Z]{3}")
_SHOWN_PROBLEMS = 5
#: More of one item than any order holds (a quantity of 10**30 is a typo, not an order).
MAX_QUANTITY = 1_000_000
#: Digits an integer in a JSON line may have (an amount has at most 12 before the point).
_MAX_INTEGER_DIGITS = 40


class OrderImportError(ToolError):
    """An orders file was rejected and nothing was imported. ``problems`` holds one line per
    problem, e.g. ``"line 4: total: not a decimal amount ('abc')"``."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        if len(problems) > _SHOWN_PROBLEMS:
            shown += f"; and {len(problems) - _SHOWN_PROBLEMS} more"
        prefix = f"{source}: " if source else ""
        super().__init__("invalid_file", f"{prefix}nothing imported, {len(problems)} problem(s): {shown}")


async def import_orders(engine: AsyncEngine, path: Path) -> int:
    """Check every order in ``path``, then upsert them all in one transaction; return how many.

    Raises :class:`OrderImportError` (and imports nothing) if the file has any problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise OrderImportError(
            [f"unsupported file type {path.suffix or '(none)'!r}: use .csv, .jsonl or .ndjson"], path.name
        )
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise OrderImportError([f"cannot read the file: {exc.strerror}"], path.name) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise OrderImportError(
            [f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"], path.name
        ) from None
    if not text.strip():
        raise OrderImportError(["the file is empty"], path.name)

    problems: list[str] = []
    raw_rows = _csv_rows(text, problems) if suffix == ".csv" else _jsonl_rows(text, problems)
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    lines: list[int] = []
    for line, raw in raw_rows:
        row = _check_row(line, raw, problems)
        if row is None:
            continue
        earlier = first_line.setdefault(row["order_id"], line)
        if earlier != line:
            problems.append(f"line {line}: order_id: duplicate of line {earlier} ({row['order_id']!r})")
            continue
        rows.append(row)
        lines.append(line)
    if not rows and not problems:
        problems.append("the file has no orders")
    if problems:
        raise OrderImportError(problems, path.name)

    accounts: dict[str, str] = {}
    for row in rows:
        for account in row.pop("accounts"):
            accounts[account] = row["customer_id"]
    try:
        async with engine.begin() as conn:
            await _upsert(conn, rows)
            await _link_accounts(conn, accounts)
    except IntegrityError:
        below = await _totals_below_refunded(engine, rows, lines)
        if not below:
            raise
        raise OrderImportError(below, path.name) from None
    return len(rows)


# --------------------------------------------------------------------------------------------
# Reading rows


def _csv_rows(text: str, problems: list[str]) -> Iterator[tuple[int, dict[str, object]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        while not any(cell.strip() for cell in header):
            header = next(reader)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: not valid CSV ({exc})")
        return
    except StopIteration:
        problems.append("the file has no header row")
        return
    header_line = reader.line_num
    columns = [cell.strip().lower() for cell in header]
    if not _header_ok(columns, header_line, problems):
        return

    end_of_previous = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problems.append(f"line {end_of_previous + 1}: not valid CSV ({exc})")
            return
        line = end_of_previous + 1
        end_of_previous = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            problems.append(f"line {line}: expected {len(columns)} fields, found {len(cells)}")
            continue
        yield line, dict(zip(columns, cells, strict=True))


def _header_ok(columns: list[str], line: int, problems: list[str]) -> bool:
    before = len(problems)
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            problems.append(f"line {line}: column {column!r} appears twice")
        elif column not in COLUMNS:
            problems.append(f"line {line}: unknown column {column!r} (known: {', '.join(COLUMNS)})")
        seen.add(column)
    missing = [column for column in REQUIRED_COLUMNS if column not in seen]
    if missing:
        problems.append(f"line {line}: missing required column(s): {', '.join(missing)}")
    return len(problems) == before


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def _load_json(text: str) -> Any:
    """One JSON value of the file: numbers exact (``Decimal``), no NaN/Infinity, no 5,000-digit
    integer, nothing nested beyond :data:`tools.json_input.MAX_DEPTH`."""
    return loads(text, parse_float=Decimal, parse_int=_bounded_int, parse_constant=_refuse_constant)


def _jsonl_rows(text: str, problems: list[str]) -> Iterator[tuple[int, dict[str, object]]]:
    for line, raw_line in enumerate(text.split("\n"), start=1):
        content = raw_line.removeprefix("\ufeff")  # files joined with cat keep each one's BOM
        if not content.strip():
            continue
        try:
            value = _load_json(content)
        except json.JSONDecodeError as exc:
            problems.append(f"line {line}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except ValueError as exc:
            problems.append(f"line {line}: not valid JSON ({exc})")
            continue
        if not isinstance(value, dict):
            problems.append(f"line {line}: expected a JSON object, found {_json_type(value)}")
            continue
        unknown = [key for key in value if key not in COLUMNS]
        if unknown:
            problems.append(f"line {line}: unknown field(s): {', '.join(map(quoted, unknown))}")
            continue
        yield line, value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | Decimal):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --------------------------------------------------------------------------------------------
# Checking one row

_Report = Callable[[str, str], None]


def _check_row(line: int, raw: Mapping[str, object], problems: list[str]) -> dict[str, Any] | None:
    """The database row for one order, or ``None`` after adding its problems to ``problems``."""
    before = len(problems)

    def bad(field: str, message: str) -> None:
        problems.append(f"line {line}: {field}: {message}")

    values = {key: None if isinstance(v, str) and not v.strip() else v for key, v in raw.items()}
    for field in REQUIRED_COLUMNS:
        if values.get(field) is None:
            bad(field, "required")

    texts = {field: _text(values.get(field), field, limit, bad) for field, limit in _TEXT_LIMITS.items()}
    status = _text(values.get("status"), "status", 32, bad)
    if status is not None and status.lower() not in ORDER_STATUSES:
        bad("status", f"unknown status {status!r} (expected one of: {', '.join(ORDER_STATUSES)})")
    currency = _text(values.get("currency"), "currency", 3, bad)
    if currency is not None and not _CURRENCY.fullmatch(currency.upper()):
        bad("currency", f"not a 3-letter currency code ({currency!r})")
    total = _amount(values.get("total"), "total", bad)
    refunded = _amount(values.get("refunded"), "refunded", bad)
    if total is not None and refunded is not None and refunded > total:
        bad("refunded", f"more than the total ({Money.of_cents(refunded).format()} > {Money.of_cents(total).format()})")
    placed_at = _datetime(values.get("placed_at"), "placed_at", bad)
    delivered_at = _datetime(values.get("delivered_at"), "delivered_at", bad)
    estimated_delivery = _date(values.get("estimated_delivery"), "estimated_delivery", bad)
    items = _items(values.get("items"), bad)
    accounts = _accounts(values.get("customer_accounts"), bad)
    if accounts and texts.get("customer_id") is None:
        bad("customer_accounts", "needs a customer_id on the same order")

    if len(problems) > before:
        return None
    assert status is not None and currency is not None and total is not None and placed_at is not None
    return {
        **texts,
        "status": status.lower(),
        "currency": currency.upper(),
        "total_cents": total,
        "refunded_cents": refunded or 0,
        "placed_at": placed_at,
        "delivered_at": delivered_at,
        "estimated_delivery": estimated_delivery,
        "items": items,
        "accounts": accounts,
    }


def _accounts(value: object, bad: _Report) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        bad("customer_accounts", f"expected text such as 'slack:U0123 discord:4567', found {_json_type(value)}")
        return []
    accounts = [part for part in re.split(r"[\s,]+", value.strip()) if part]
    wrong = [a for a in accounts if not ACCOUNT_PATTERN.fullmatch(a)]
    if wrong:
        bad("customer_accounts", f"not an account such as slack:U0123 or discord:4567 ({quoted(wrong[0])})")
        return []
    return list(dict.fromkeys(accounts))


def _text(value: object, field: str, limit: int, bad: _Report) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        bad(field, f"expected text, found {_json_type(value)}")
        return None
    text = value.strip()
    if len(text) > limit:
        bad(field, f"longer than {limit} characters")
        return None
    return text


def _amount(value: object, field: str, bad: _Report) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str | int | Decimal):
        bad(field, f"not a decimal amount (found {_json_type(value)})")
        return None
    try:
        return Money.parse(value).cents
    except ValueError as exc:
        bad(field, str(exc))
        return None


def _datetime(value: object, field: str, bad: _Report) -> datetime | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        bad(field, f"not an ISO 8601 date-time ({_show(value)})")
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _date(value: object, field: str, bad: _Report) -> date | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text)
        except ValueError:
            try:
                return datetime.fromisoformat(text).date()
            except ValueError:
                pass
    bad(field, f"not an ISO 8601 date ({_show(value)})")
    return None


def _show(value: object) -> str:
    return quoted(value) if isinstance(value, str) else _json_type(value)


def _items(value: object, bad: _Report) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = _load_json(value)
        except ValueError:
            bad("items", "not a JSON array of items")
            return []
    if not isinstance(value, list):
        bad("items", f"expected a JSON array, found {_json_type(value)}")
        return []
    items = []
    for number, item in enumerate(value, start=1):
        field = f"items: item {number}"
        if not isinstance(item, dict):
            bad(field, f"expected an object, found {_json_type(item)}")
            continue
        unknown = [key for key in item if key not in _ITEM_KEYS]
        if unknown:
            bad(field, f"unknown key(s): {', '.join(map(quoted, unknown))}")
        raw_sku = item.get("sku")
        if raw_sku is None or (isinstance(raw_sku, str) and not raw_sku.strip()):
            bad(f"{field}: sku", "required")
        sku = _text(raw_sku, f"{field}: sku", 64, bad)
        name = _text(item.get("name"), f"{field}: name", 200, bad) or ""
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
            shown = repr(quantity) if isinstance(quantity, int) else _show(quantity)
            bad(f"{field}: quantity", f"not a whole number from 1 to {MAX_QUANTITY} ({shown})")
        if item.get("unit_price") is None:
            bad(f"{field}: unit_price", "required")
        unit_price = _amount(item.get("unit_price"), f"{field}: unit_price", bad)
        items.append({"sku": sku, "name": name, "quantity": quantity, "unit_price_cents": unit_price})
    return items


# --------------------------------------------------------------------------------------------
# Writing


async def _upsert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    t = orders_table
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        stmt = sqlite.insert(t) if dialect == "sqlite" else postgresql.insert(t)
        excluded = stmt.excluded
        changes: dict[str, Any] = {
            column.name: excluded[column.name] for column in t.columns if column.name != "order_id"
        }
        changes["refunded_cents"] = case(
            (t.c.refunded_cents > excluded.refunded_cents, t.c.refunded_cents),
            else_=excluded.refunded_cents,
        )
        await conn.execute(stmt.on_conflict_do_update(index_elements=[t.c.order_id], set_=changes), rows)
        return

    # Any other database: look the ids up, then update and insert.
    existing: dict[str, int] = {}
    ids = [row["order_id"] for row in rows]
    for start in range(0, len(ids), 500):
        found = await conn.execute(
            select(t.c.order_id, t.c.refunded_cents).where(t.c.order_id.in_(ids[start : start + 500]))
        )
        existing.update({order_id: refunded for order_id, refunded in found.all()})
    new = [row for row in rows if row["order_id"] not in existing]
    for row in rows:
        if row["order_id"] in existing:
            values = {**row, "refunded_cents": max(row["refunded_cents"], existing[row["order_id"]])}
            await conn.execute(update(t).where(t.c.order_id == row["order_id"]).values(values))
    if new:
        await conn.execute(insert(t), new)


async def _link_accounts(conn: AsyncConnection, accounts: dict[str, str]) -> None:
    """Link each account to its customer; a later file moves an account to its new customer."""
    if not accounts:
        return
    t = customer_accounts_table
    names = list(accounts)
    for start in range(0, len(names), 500):
        await conn.execute(t.delete().where(t.c.account.in_(names[start : start + 500])))
    now = datetime.now(UTC)
    await conn.execute(
        insert(t),
        [{"account": a, "customer_id": c, "source": "import", "linked_at": now} for a, c in accounts.items()],
    )


async def _totals_below_refunded(engine: AsyncEngine, rows: list[dict[str, Any]], lines: list[int]) -> list[str]:
    """Problems for rows whose new total is below what was already refunded on the order."""
    t = orders_table
    refunded: dict[str, int] = {}
    ids = [row["order_id"] for row in rows]
    async with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            found = await conn.execute(
                select(t.c.order_id, t.c.refunded_cents).where(t.c.order_id.in_(ids[start : start + 500]))
            )
            refunded.update({order_id: cents for order_id, cents in found.all()})
    return [
        f"line {line}: total: {Money.of_cents(row['total_cents']).format()} is below the "
        f"{Money.of_cents(refunded[row['order_id']]).format()} already refunded on this order"
        for line, row in zip(lines, rows, strict=True)
        if refunded.get(row["order_id"], 0) > row["total_cents"]
    ]
