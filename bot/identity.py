"""Who the customer is, established in code (never by what the model or the customer's text says).

A conversation is verified as one shop customer once one of these holds, as the policy's
``[identity]`` section allows:

* the chat account writing is linked to the customer (``customer_accounts`` in the orders
  import, or ``supportbot customers link``);
* the platform profile e-mail (Slack ``users.info``, filled in by the adapter as
  ``Author.email``) equals an order's ``customer_email`` (checked by the order tools);
* the customer states the order's e-mail, or name and postal code, and ``verify_customer``
  compares it, at most ``max_attempts`` times.

The verified customer id is stored on the conversation and shown on the review card. The
functions here build the tools' :class:`~tools.ToolContext`, save what the tools established,
and say on the card what the agent must know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from bot.policy import Policy
from bot.store.conversations import ConversationState as Conversation
from tools import RefundRules, ToolContext
from tools.orders import linked_customer
from tools.refunds import RefundProposal

__all__ = [
    "Identity",
    "account_of",
    "card_line",
    "escalation",
    "identity_flags",
    "identity_values",
    "refund_owner",
    "resolve",
    "tool_context",
]


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


def tool_context(conversation: Conversation, policy: Policy, identity: Identity) -> ToolContext:
    """The tools' context for one draft: the refund rules, who asks, who is verified."""
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


def escalation(ctx: ToolContext) -> str:
    """Why the on-call group is needed for identity reasons ("" when it is not)."""
    if ctx.verification_in_conversation and ctx.verification_locked and not ctx.verified_customer_id:
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
        flags.append(f"Verification failed {ctx.verify_attempts} times: nothing was revealed; a human must take over.")
    return flags
