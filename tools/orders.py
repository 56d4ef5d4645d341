"""Orders, refunds, and the backends that hold them.

Two backends implement :class:`OrderBackend`:

* :class:`SqlOrderBackend` keeps orders in the ``orders`` and ``order_refunds`` tables defined
  on :data:`metadata` (filled by ``supportbot orders import``). Works on SQLite and PostgreSQL.
* :class:`HttpOrderBackend` asks the shop's own API, following the contract below.

Order ids are opaque strings (``#W2611340``, ``40021``, ``ORD-77``). They are never parsed; a
lookup strips surrounding whitespace and tries the exact id, then the id with one leading ``#``
removed or added. Money is integer minor units (cents).

HTTP contract (``HttpOrderBackend``)
------------------------------------
Every request carries ``Accept: application/json`` and, when a token is configured,
``Authorization: Bearer <token>``. ``{id}`` is the order id percent-encoded as one path segment
(``#W1`` becomes ``%23W1``).

``GET {base}/orders/{id}``
    200 with the order as JSON, field names as on :class:`Order`::

        {"order_id": "#W2611340", "customer_id": "c-17", "customer_name": "Ana Lima",
         "customer_email": "ana@example.com", "status": "shipped", "currency": "USD",
         "total_cents": 4990, "refunded_cents": 0,
         "placed_at": "2026-11-20T09:30:00Z", "delivered_at": null,
         "carrier": "UPS", "tracking_number": "1Z999", "estimated_delivery": "2026-11-30",
         "items": [{"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price_cents": 2495}]}

    Only ``order_id``, ``status``, ``currency``, ``total_cents`` and ``placed_at`` are required.
    Datetimes are ISO 8601 (without an offset they are taken as UTC). 404 means no such order.

``POST {base}/orders/{id}/refunds``
    Body ``{"amount_cents": 1200, "reason": "..."}`` and header ``Idempotency-Key: <key>``.
    The shop answers 200 or 201 with ``{"refund_id": "...", "amount_cents": 1200,
    "created_at": "<ISO 8601>"}``. A request repeating an earlier key must move no more money
    and answer with the *first* refund, marked by the header ``Idempotent-Replayed: true`` or
    ``"replayed": true`` in the body. Errors are 4xx with ``{"error": "<code>", ...}``:
    ``exceeds_refundable`` (409/422), ``not_found`` (404), ``idempotency_conflict`` (the key was
    used for a different refund); any other 4xx is reported as ``rejected``.

Transport failures, timeouts, 429 and 5xx become ``ToolError("unavailable")``; nothing is retried
here. Retrying ``execute_refund`` with the same idempotency key is safe.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Protocol
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tools.base import ToolError
from tools.money import Money

__all__ = [
    "ORDER_STATUSES",
    "HttpOrderBackend",
    "Order",
    "OrderBackend",
    "OrderItem",
    "RefundReceipt",
    "SqlOrderBackend",
    "customer_accounts_table",
    "link_account",
    "linked_customer",
    "metadata",
    "order_refunds_table",
    "orders_table",
]

log = logging.getLogger(__name__)

ORDER_STATUSES: tuple[str, ...] = ("pending", "processing", "shipped", "delivered", "cancelled", "returned")
"""Every status an order may have."""

MAX_ORDER_ID_LENGTH = 64
MAX_IDEMPOTENCY_KEY_LENGTH = 200


# --------------------------------------------------------------------------------------------
# Domain types


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One line of an order."""

    sku: str
    name: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the shop knows it. Datetimes are timezone-aware UTC; ``status`` is one of
    :data:`ORDER_STATUSES`."""

    order_id: str
    customer_id: str | None
    customer_name: str | None
    customer_email: str | None
    status: str
    currency: str
    total_cents: int
    refunded_cents: int
    placed_at: datetime
    delivered_at: datetime | None
    carrier: str | None
    tracking_number: str | None
    estimated_delivery: date | None
    items: tuple[OrderItem, ...]
    customer_postal_code: str | None = None

    @property
    def refundable_cents(self) -> int:
        """What may still be refunded: the total less what was refunded already."""
        return max(self.total_cents - self.refunded_cents, 0)


@dataclass(frozen=True, slots=True)
class RefundReceipt:
    """A refund that was executed. ``replayed`` is true when the idempotency key had been used
    before: this is the first refund made with it, and no more money moved."""

    refund_id: str
    order_id: str
    amount_cents: int
    idempotency_key: str
    created_at: datetime
    replayed: bool = False


class OrderBackend(Protocol):
    """Where orders live. Lookups are read-only; ``execute_refund`` moves money and is called by
    the core only after a human approved the refund."""

    async def get_order(self, order_id: str) -> Order | None:
        """The order, or ``None`` when there is none with this id."""
        ...

    async def holds_no_orders(self) -> bool:
        """True only when the backend knows it holds no order at all (a store nothing was imported
        into yet); a shop's API cannot say, and answers False."""
        ...

    async def execute_refund(
        self, order_id: str, amount_cents: int, reason: str, idempotency_key: str
    ) -> RefundReceipt:
        """Refund ``amount_cents`` on the order, once per ``idempotency_key``.

        Repeating a key returns the first receipt with ``replayed=True`` and moves no money.
        Raises ``ToolError`` ``not_found`` (unknown order), ``exceeds_refundable`` (more than is
        left to refund), ``idempotency_conflict`` (key used for a different refund), ``invalid``
        (amount not positive, empty key), or ``unavailable``/``rejected`` (remote shop).
        """
        ...


def _id_candidates(order_id: str) -> list[str]:
    """The ids a lookup tries, in order: exact (stripped), then with one leading '#' toggled;
    then the same for its NFKC form when that differs (``＃Ｗ２６１１３４０``, as a Chinese or
    Japanese input method types ``#W2611340``)."""
    candidates: list[str] = []
    for form in dict.fromkeys((order_id.strip(), unicodedata.normalize("NFKC", order_id).strip())):
        if form:
            candidates += [form, form[1:]] if form.startswith("#") else [form, f"#{form}"]
    # Never an empty id, nor "." / ".." (dot segments would change an HTTP path).
    return list(dict.fromkeys(c for c in candidates if c.strip(".")))


def _check_refund_request(amount_cents: int, idempotency_key: str) -> None:
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        raise ToolError("invalid", "A refund amount must be a positive number of cents")
    if not idempotency_key.strip() or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ToolError("invalid", f"An idempotency key must have 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")


def _as_replay(earlier: RefundReceipt, order_id: str, amount_cents: int) -> RefundReceipt:
    """The first receipt for a repeated key, after checking the request is the same refund."""
    if earlier.order_id not in _id_candidates(order_id) or earlier.amount_cents != amount_cents:
        raise ToolError(
            "idempotency_conflict",
            f"This idempotency key was already used for a refund of {Money.of_cents(earlier.amount_cents).format()} "
            f"on order {earlier.order_id}",
        )
    return dataclasses.replace(earlier, replayed=True)


# --------------------------------------------------------------------------------------------
# Validation of orders read from a database row or a shop's JSON


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class _ItemPayload(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    sku: str
    name: str = ""
    quantity: StrictInt = Field(ge=1)
    unit_price_cents: StrictInt = Field(ge=0)


class _OrderPayload(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    order_id: str = Field(min_length=1)
    customer_id: str | None = None
    customer_name: str | None = None
    customer_email: str | None = None
    status: str
    currency: str
    total_cents: StrictInt = Field(ge=0)
    refunded_cents: StrictInt = Field(default=0, ge=0)
    placed_at: _UtcDatetime
    delivered_at: _UtcDatetime | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    estimated_delivery: date | None = None
    items: list[_ItemPayload] = Field(default_factory=list)
    customer_postal_code: str | None = None

    def to_order(self) -> Order:
        return Order(
            order_id=self.order_id,
            customer_id=self.customer_id,
            customer_name=self.customer_name,
            customer_email=self.customer_email,
            status=self.status.lower(),
            currency=self.currency.upper(),
            total_cents=self.total_cents,
            refunded_cents=self.refunded_cents,
            placed_at=self.placed_at,
            delivered_at=self.delivered_at,
            carrier=self.carrier,
            tracking_number=self.tracking_number,
            estimated_delivery=self.estimated_delivery,
            items=tuple(
                OrderItem(sku=i.sku, name=i.name, quantity=i.quantity, unit_price_cents=i.unit_price_cents)
                for i in self.items
            ),
            customer_postal_code=self.customer_postal_code,
        )


class _RefundPayload(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    refund_id: str = Field(min_length=1)
    amount_cents: StrictInt = Field(gt=0)
    created_at: _UtcDatetime
    replayed: bool = False


# --------------------------------------------------------------------------------------------
# SQL storage

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
"""The tables of the order store; the core's migrations create them."""

orders_table = Table(
    "orders",
    metadata,
    Column("order_id", String(MAX_ORDER_ID_LENGTH), primary_key=True),
    Column("customer_id", String(200)),
    Column("customer_name", String(200)),
    Column("customer_email", String(320)),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("refunded_cents", BigInteger, nullable=False, server_default="0"),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Column("carrier", String(64)),
    Column("tracking_number", String(128)),
    Column("estimated_delivery", Date),
    # [{"sku": str, "name": str, "quantity": int, "unit_price_cents": int}, ...]
    Column("items", JSON, nullable=False),
    Column("customer_postal_code", String(32)),
    CheckConstraint("total_cents >= 0", name="total_not_negative"),
    CheckConstraint("refunded_cents >= 0 AND refunded_cents <= total_cents", name="refunded_within_total"),
)

order_refunds_table = Table(
    "order_refunds",
    metadata,
    Column("refund_id", String(64), primary_key=True),
    Column("order_id", String(MAX_ORDER_ID_LENGTH), ForeignKey("orders.order_id"), nullable=False, index=True),
    Column("amount_cents", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("idempotency_key", String(MAX_IDEMPOTENCY_KEY_LENGTH), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount_cents > 0", name="amount_positive"),
)

customer_accounts_table = Table(
    "customer_accounts",
    metadata,
    # "slack:U0123" or "discord:4567": a platform account linked to the shop's customer.
    Column("account", String(160), primary_key=True),
    Column("customer_id", String(200), nullable=False, index=True),
    Column("source", String(16), nullable=False),  # import | cli
    Column("linked_at", DateTime(timezone=True), nullable=False),
)

#: ``<platform>:<account id>``, the platform as its adapter names itself (slack, discord, playground).
ACCOUNT_PATTERN = re.compile(r"[a-z][a-z0-9-]{1,31}:[A-Za-z0-9_.-]{1,140}")
"""A linked account as written in the orders file and on the command line."""


async def linked_customer(db: AsyncEngine | AsyncConnection, account: str) -> str | None:
    """The shop customer a platform account (``slack:U0123``) is linked to, if any (on a
    connection: inside the caller's transaction)."""
    query = select(customer_accounts_table.c.customer_id).where(customer_accounts_table.c.account == account)
    if isinstance(db, AsyncConnection):
        found = await db.scalar(query)
    else:
        async with db.connect() as conn:
            found = await conn.scalar(query)
    return str(found) if found is not None else None


async def link_account(engine: AsyncEngine, account: str, customer_id: str, source: str = "cli") -> None:
    """Link a platform account to a shop customer (replacing an earlier link of that account)."""
    if not ACCOUNT_PATTERN.fullmatch(account):
        raise ToolError("invalid", f"not an account such as slack:U0123 or discord:4567 ({account!r})")
    if not customer_id.strip() or len(customer_id) > 200:
        raise ToolError("invalid", "a customer id must have 1 to 200 characters")
    t = customer_accounts_table
    async with engine.begin() as conn:
        await conn.execute(t.delete().where(t.c.account == account))
        await conn.execute(
            insert(t).values(
                account=account, customer_id=customer_id.strip(), source=source, linked_at=datetime.now(UTC)
            )
        )


class SqlOrderBackend:
    """Orders kept in this database (see :data:`metadata`).

    A refund is one transaction: it inserts the refund row (its idempotency key is unique) and
    raises ``refunded_cents`` with a conditional update that only matches while the order has
    room left. Two concurrent refunds can therefore never refund more than the total, and one
    key never refunds twice. Statements are ordered write-first so SQLite takes its write lock
    (waiting for the busy timeout) before reading anything.
    """

    def __init__(self, engine: AsyncEngine, *, reads: AsyncEngine | None = None) -> None:
        """``reads`` is an optional engine for lookups (e.g. a pool of SQLite readers that never
        wait for the writer); refunds always go through ``engine``."""
        self._engine = engine
        self._reads = reads or engine

    async def get_order(self, order_id: str) -> Order | None:
        try:
            return await self._get_order(order_id)
        except DBAPIError:
            log.exception("order lookup failed in the database")
            raise ToolError("unavailable", "The order database is unavailable") from None

    async def execute_refund(
        self, order_id: str, amount_cents: int, reason: str, idempotency_key: str
    ) -> RefundReceipt:
        try:
            return await self._execute_refund(order_id, amount_cents, reason, idempotency_key)
        except DBAPIError:
            log.exception("refund failed in the database")
            raise ToolError(
                "unavailable",
                "The order database failed during the refund; retry with the same idempotency key",
            ) from None

    async def holds_no_orders(self) -> bool:
        try:
            async with self._reads.connect() as conn:
                return (await conn.execute(select(orders_table.c.order_id).limit(1))).first() is None
        except DBAPIError:
            log.exception("order lookup failed in the database")
            raise ToolError("unavailable", "The order database is unavailable") from None

    async def _get_order(self, order_id: str) -> Order | None:
        candidates = _id_candidates(order_id)
        if not candidates:
            return None
        async with self._reads.connect() as conn:
            result = await conn.execute(select(orders_table).where(orders_table.c.order_id.in_(candidates)))
            rows = {row["order_id"]: dict(row) for row in result.mappings()}
        for candidate in candidates:
            if candidate in rows:
                return _OrderPayload.model_validate(rows[candidate]).to_order()
        return None

    async def _execute_refund(
        self, order_id: str, amount_cents: int, reason: str, idempotency_key: str
    ) -> RefundReceipt:
        _check_refund_request(amount_cents, idempotency_key)
        async with self._engine.connect() as conn:
            earlier = await _receipt_for_key(conn, idempotency_key)
        if earlier is not None:
            return _as_replay(earlier, order_id, amount_cents)
        order = await self._get_order(order_id)
        if order is None:
            raise ToolError("not_found", f"No order with id {order_id.strip()}")

        receipt = RefundReceipt(
            refund_id=f"rf_{uuid.uuid4().hex}",
            order_id=order.order_id,
            amount_cents=amount_cents,
            idempotency_key=idempotency_key,
            created_at=datetime.now(UTC),
        )
        refunded = orders_table.c.refunded_cents
        try:
            async with self._engine.begin() as conn:
                # The unique key makes a concurrent repeat of this key fail here (PostgreSQL
                # waits for the other transaction, then raises IntegrityError).
                await conn.execute(
                    insert(order_refunds_table).values(
                        refund_id=receipt.refund_id,
                        order_id=receipt.order_id,
                        amount_cents=amount_cents,
                        reason=reason,
                        idempotency_key=idempotency_key,
                        created_at=receipt.created_at,
                    )
                )
                bumped = await conn.execute(
                    update(orders_table)
                    .where(
                        orders_table.c.order_id == order.order_id,
                        refunded + amount_cents <= orders_table.c.total_cents,
                    )
                    .values(refunded_cents=refunded + amount_cents)
                )
                if bumped.rowcount != 1:
                    left = await conn.scalar(
                        select(orders_table.c.total_cents - refunded).where(orders_table.c.order_id == order.order_id)
                    )
                    raise ToolError(  # rolls the refund row back
                        "exceeds_refundable",
                        f"A refund of {Money.of_cents(amount_cents, order.currency)} exceeds the "
                        f"{Money.of_cents(max(left or 0, 0), order.currency)} still refundable on "
                        f"order {order.order_id}",
                    )
        except IntegrityError:
            async with self._engine.connect() as conn:
                earlier = await _receipt_for_key(conn, idempotency_key)
            if earlier is None:
                raise
            return _as_replay(earlier, order_id, amount_cents)
        return receipt


async def _receipt_for_key(conn: AsyncConnection, idempotency_key: str) -> RefundReceipt | None:
    t = order_refunds_table
    row = (
        (
            await conn.execute(
                select(t.c.refund_id, t.c.order_id, t.c.amount_cents, t.c.created_at).where(
                    t.c.idempotency_key == idempotency_key
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return RefundReceipt(
        refund_id=row["refund_id"],
        order_id=row["order_id"],
        amount_cents=row["amount_cents"],
        idempotency_key=idempotency_key,
        created_at=_utc(row["created_at"]),
    )


# --------------------------------------------------------------------------------------------
# HTTP shop

_ERROR_CODES_PASSED_ON = frozenset({"exceeds_refundable", "not_found", "idempotency_conflict"})
_ERROR_CODE_SHAPE = re.compile(r"[a-z][a-z0-9_]{0,40}")


class HttpOrderBackend:
    """Orders held by the shop's own API (see the module docstring for the contract).

    Pass an ``httpx.AsyncClient`` to share a connection pool; otherwise the backend makes one and
    :meth:`aclose` closes it. Error messages never contain the token or the base URL.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:
        return f"HttpOrderBackend(token={'set' if self._token else 'none'})"

    async def aclose(self) -> None:
        """Close the HTTP client if this backend made it."""
        if self._owns_client:
            await self._client.aclose()

    async def holds_no_orders(self) -> bool:
        """The shop's API cannot say it holds no orders: an unknown order stays "verification
        needed" for an unverified asker."""
        return False

    async def get_order(self, order_id: str) -> Order | None:
        for candidate in _id_candidates(order_id):
            response = await self._send("GET", candidate, "")
            if response.status_code == 404:
                continue
            _raise_for_status(response, "order lookup")
            try:
                return _OrderPayload.model_validate(response.json()).to_order()
            except (ValueError, ValidationError):
                raise ToolError("unavailable", "The order service sent an unreadable order") from None
        return None

    async def execute_refund(
        self, order_id: str, amount_cents: int, reason: str, idempotency_key: str
    ) -> RefundReceipt:
        _check_refund_request(amount_cents, idempotency_key)
        for candidate in _id_candidates(order_id):
            response = await self._send(
                "POST",
                candidate,
                "/refunds",
                json={"amount_cents": amount_cents, "reason": reason},
                headers={"Idempotency-Key": idempotency_key},
            )
            if response.status_code == 404 and _error_code(response) in (None, "not_found"):
                continue
            _raise_for_status(response, "refund")
            try:
                body = _RefundPayload.model_validate(response.json())
            except (ValueError, ValidationError):
                raise ToolError(
                    "unavailable",
                    "The order service answered the refund unreadably; it may have been made. "
                    "Retry with the same idempotency key to find out",
                ) from None
            replayed = body.replayed or response.headers.get("Idempotent-Replayed", "").lower() == "true"
            return RefundReceipt(
                refund_id=body.refund_id,
                order_id=candidate,
                amount_cents=body.amount_cents,
                idempotency_key=idempotency_key,
                created_at=body.created_at,
                replayed=replayed,
            )
        raise ToolError("not_found", f"No order with id {order_id.strip()}")

    async def _send(
        self,
        method: str,
        order_id: str,
        suffix: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = f"{self._base_url}/orders/{quote(order_id, safe='')}{suffix}"
        all_headers = {"Accept": "application/json", **(headers or {})}
        if self._token:
            all_headers["Authorization"] = f"Bearer {self._token}"
        try:
            return await self._client.request(method, url, json=json, headers=all_headers, timeout=self._timeout)
        except httpx.TimeoutException:
            raise ToolError("unavailable", "The order service did not answer in time") from None
        except httpx.HTTPError:
            raise ToolError("unavailable", "The order service could not be reached") from None


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE_SHAPE.fullmatch(code) else None


def _raise_for_status(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500 or status < 400:
        log.warning("order service answered HTTP %s to a %s", status, what)
        raise ToolError("unavailable", f"The order service failed the {what} (HTTP {status})")
    code = _error_code(response)
    if code is not None and code in _ERROR_CODES_PASSED_ON:
        raise ToolError(code, f"The order service refused the {what}: {code} (HTTP {status})")
    detail = f": {code}" if code else ""
    raise ToolError("rejected", f"The order service rejected the {what}{detail} (HTTP {status})")
