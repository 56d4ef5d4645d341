"""Who the customer is, established in code (never by what the model or the customer's text says).

A conversation is verified as one shop customer once one of these holds, as the policy's
``[identity]`` section allows:

* the chat account writing is linked to the customer (``customer_accounts`` in the orders
  import, or ``supportbot customers link``);
* the platform profile e-mail (Slack ``users.info``, filled in by the adapter as
  ``Author.email``) equals an order's ``customer_email`` (checked by the order tools);
* the customer states the order's e-mail, or name and postal code, and ``verify_customer``
  compares it, at most ``max_attempts`` times.

Failed checks are counted across conversations and platforms (:class:`AttemptLedger`): per chat
account and per shop customer guessed, within ``attempt_window_hours``; at the limit verification
is locked for ``lockout_minutes``. A new thread starts nowhere near zero. The profile e-mail counts
only for members of the installing workspace (:func:`trusted_email`) unless the policy says so.

The verified customer id is stored on the conversation and shown on the review card. The
functions here build the tools' :class:`~tools.ToolContext`, save what the tools established,
and say on the card what the agent must know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import public_places
from bot.events import Author
from bot.policy import IdentitySection, Policy
from bot.store import AuditEvent, Database, utcnow
from bot.store.conversations import ConversationState as Conversation
from bot.store.schema import table_of
from tools import Attempts, RefundRules, ToolContext
from tools.orders import linked_customer
from tools.refunds import RefundProposal

__all__ = [
    "AttemptLedger",
    "Identity",
    "account_of",
    "card_line",
    "escalation",
    "identity_flags",
    "identity_values",
    "refund_owner",
    "resolve",
    "tool_context",
    "trusted_email",
]

#: The audit trail's kind for one failed identity check (actor: the asker; detail: the target).
FAILED_CHECK = "verify_failed"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the conversation is verified as (``customer_id`` empty: nobody) and how."""

    asker: str
    customer_id: str = ""
    via: str = ""
    attempts: int = 0


def account_of(platform: str, author_id: str) -> str:
    """The account name used for links: ``slack:U0123``, ``discord:4567``."""
    return f"{platform}:{author_id}"


async def resolve(conn: AsyncConnection, conversation: Conversation, policy: Policy, author_id: str = "") -> Identity:
    """The identity of the person whose message is being answered, before drafting: what was
    verified earlier in this conversation, else a linked account. Someone else writing in the
    customer's thread never inherits the customer's verification."""
    author = author_id or conversation.customer_id
    asker = account_of(conversation.platform, author)
    own = author == conversation.customer_id
    if own and conversation.verified_customer_id:
        verified = conversation.verified_customer_id
        return Identity(asker, verified, conversation.verified_via, conversation.verify_attempts)
    attempts = conversation.verify_attempts if own else 0
    if policy.identity.linked_accounts:
        customer = await linked_customer(conn, asker)
        if customer:
            return Identity(asker, customer, "linked account", attempts)
    return Identity(asker, attempts=attempts)


def refund_owner(conversation: Conversation, proposals: Sequence[RefundProposal]) -> str:
    """Who a draft's refunds may go to, at approval and execution: the conversation's verified
    customer, or, when someone else in the thread asked, what was verified for them in code
    when the refund was proposed."""
    own = account_of(conversation.platform, conversation.customer_id)
    askers = {p.asked_by or own for p in proposals}
    if askers <= {own}:
        return conversation.verified_customer_id
    recorded = {p.asker_verified_as for p in proposals}
    return recorded.pop() if len(recorded) == 1 and len(askers) == 1 else ""


def trusted_email(author: Author, policy: Policy) -> str:
    """The author's profile e-mail as the conversation keeps it for verification (which also
    needs ``profile_email``), else "". In a Slack Connect channel a member of another
    organisation has an e-mail their organisation sets: it is kept only with
    ``profile_email_outside_workspace``."""
    rules = policy.identity
    if author.home_workspace is False and not rules.profile_email_outside_workspace:
        return ""
    return author.email


class AttemptLedger:
    """Failed identity checks in the audit trail (kind ``verify_failed``), counted per asker and
    per target within the policy's window: the :class:`tools.AttemptLedger` the tools call. Each
    failure is written at once, in its own transaction, so a parallel draft in another thread
    sees it."""

    def __init__(
        self, db: Database, rules: IdentitySection, conversation_id: str, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._db = db
        self._rules = rules
        self._conversation_id = conversation_id
        self._clock = clock

    async def check(self, asker: str, target: str) -> Attempts:
        async with self._db.read() as conn:
            return await self._count(conn, asker, target)

    async def failed(self, asker: str, target: str) -> Attempts:
        async with self._db.write() as conn:
            await conn.execute(
                insert(table_of(AuditEvent)).values(
                    conversation_id=self._conversation_id,
                    kind=FAILED_CHECK,
                    actor=asker[:255],
                    summary=f"identity check failed on {target}"[:300],
                    detail={"target": target},
                    created_at=self._clock(),
                )
            )
            return await self._count(conn, asker, target)

    async def _count(self, conn: AsyncConnection, asker: str, target: str) -> Attempts:
        rules, now = self._rules, self._clock()
        e = AuditEvent.__table__.c
        rows = await conn.execute(
            select(e.actor, e.detail, e.created_at).where(
                e.kind == FAILED_CHECK,
                e.created_at >= now - timedelta(hours=rules.attempt_window_hours),
                or_(e.actor == asker, e.detail["target"].as_string() == target),
            )
        )
        mine: list[datetime] = []
        on_target: list[datetime] = []
        for actor, detail, at in rows:
            if actor == asker:
                mine.append(at)
            if isinstance(detail, dict) and detail.get("target") == target:
                on_target.append(at)
        lockout = timedelta(minutes=rules.lockout_minutes)
        ends = [
            max(times) + lockout
            for times, limit in ((mine, rules.max_attempts), (on_target, rules.max_attempts_per_target))
            if len(times) >= limit
        ]
        until = max((end for end in ends if end > now), default=None)
        return Attempts(failures=len(mine), locked_until=until)


def tool_context(
    conversation: Conversation, policy: Policy, identity: Identity, attempts: AttemptLedger | None = None
) -> ToolContext:
    """The tools' context for one draft: the refund rules, who asks, who is verified, where
    failed checks are counted across conversations, and whether order details stay out of a
    public place (:mod:`bot.public_places`)."""
    r, rules = policy.refunds, policy.identity
    return ToolContext(
        conversation_id=conversation.id,
        refund_rules=RefundRules(
            window_days=r.window_days,
            max_amount_cents=r.max_amount,
            manager_threshold_cents=r.manager_threshold,
            two_approvers_threshold_cents=r.two_approvers_threshold,
            max_per_customer_per_day_cents=r.max_per_customer_per_day,
            refundable_statuses=r.refundable_statuses,
        ),
        asker=identity.asker,
        asker_email=conversation.asker_email if rules.profile_email else "",
        verified_customer_id=identity.customer_id or None,
        verified_via=identity.via,
        unverified_may_see_status=rules.unverified_may_see == "status",
        verify_attempts=identity.attempts,
        max_verify_attempts=rules.max_attempts,
        verification_in_conversation=rules.in_conversation,
        attempts=attempts,
        public_place=public_places.withholds(conversation.place, rules),
    )


def identity_values(conversation: Conversation, ctx: ToolContext, policy: Policy) -> dict[str, object]:
    """What the tools established (a verification, failed attempts) as conversation columns,
    when the person answered is the conversation's customer ({} otherwise)."""
    if ctx.asker != account_of(conversation.platform, conversation.customer_id):
        return {}
    values: dict[str, object] = {}
    if ctx.verified_customer_id:
        values |= {"verified_customer_id": ctx.verified_customer_id, "verified_via": ctx.verified_via[:120]}
    if policy.identity.in_conversation:
        values["verify_attempts"] = ctx.verify_attempts
    return values


def card_line(conversation: Conversation, author_id: str = "") -> str:
    """What the card says about who is asking (``author_id``: who wrote the message answered)."""
    asker = account_of(conversation.platform, conversation.customer_id)
    if author_id and author_id != conversation.customer_id:
        other = account_of(conversation.platform, author_id)
        return f"Asked by {other}, not the customer who opened this conversation ({asker}): verified only by a link"
    if conversation.verified_customer_id:
        return f"Verified customer {conversation.verified_customer_id} ({conversation.verified_via or 'verified'})"
    tail = f", {conversation.verify_attempts} failed verification attempt(s)" if conversation.verify_attempts else ""
    return f"Unverified asker ({asker}){tail}"


def _locked(ctx: ToolContext) -> str:
    until = f" until {ctx.locked_until:%H:%M} UTC" if ctx.locked_until is not None else ""
    return f"verification locked for this customer{until} ({ctx.verify_attempts} failed attempts counted)"


def escalation(ctx: ToolContext) -> str:
    """Why the on-call group is needed for identity reasons ("" when it is not)."""
    if ctx.verification_in_conversation and ctx.verification_locked and not ctx.verified_customer_id:
        if ctx.locked_until is not None:
            return _locked(ctx)
        return f"identity verification failed {ctx.verify_attempts} times"
    return ""


def identity_flags(ctx: ToolContext) -> list[str]:
    """Warnings for the card from what the tools saw: someone else's orders, a locked verification."""
    flags = []
    for order_id in sorted(ctx.foreign_orders):
        whose = "someone other than the verified customer" if ctx.verified_customer_id else "a customer not verified"
        flags.append(
            f"Order {order_id} belongs to {whose}: its personal data was withheld and no refund on it is possible."
        )
    if ctx.verification_in_conversation and ctx.verification_locked and not ctx.verified_customer_id:
        if ctx.locked_until is not None:
            flags.append(f"{_locked(ctx)[0].upper()}{_locked(ctx)[1:]}: nothing was revealed; a human must take over.")
        else:
            flags.append(
                f"Verification failed {ctx.verify_attempts} times: nothing was revealed; a human must take over."
            )
    return flags
