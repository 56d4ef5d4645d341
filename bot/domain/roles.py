"""Who is speaking in a customer's thread: ONE vocabulary of roles and ONE classifier, used by
every rule that asks who someone is (intake's routing, who may decide on a card).

The adapters only report facts about an author (:class:`bot.events.Author`: a bot or not, the
groups or roles held, the workspace, review-channel membership); the policy says what those
facts mean (``[approvers]`` and ``[desk]``); this module decides.
"""

from __future__ import annotations

from enum import StrEnum

from bot.events import Author
from bot.policy import Policy


class Role(StrEnum):
    """A speaker in a customer's thread."""

    #: The conversation's customer (or, with ``[desk] outsiders = "customers"``, any asker).
    CUSTOMER = "customer"
    #: Support staff: answers by hand, takes the conversation over.
    AGENT = "agent"
    #: Someone else in the thread: their words are context, never a request to draft for.
    OUTSIDER = "outsider"
    #: Another program: ignored.
    BOT = "bot"


def listed(author_id: str, groups: frozenset[str], ids: tuple[str, ...]) -> bool:
    """Whether a user (or one of their groups / roles) is on a policy list of ids."""
    return author_id in ids or bool(groups & set(ids))


def is_agent(author: Author, policy: Policy) -> bool:
    """An agent by the policy: on an approver or manager list, or by a ``[desk] agents`` source."""
    approvers = policy.approvers
    if listed(author.id, author.groups, approvers.agents + approvers.managers):
        return True
    sources = policy.desk.agents
    if "review_channel" in sources and author.review_member:
        return True
    if "workspace" in sources and author.home_workspace:
        return True
    roles = {entry.removeprefix("role:") for entry in sources if entry.startswith("role:")}
    return bool(roles & author.groups)


def classify(author: Author, customer_id: str | None, policy: Policy) -> Role:
    """Who ``author`` is in a conversation whose customer is ``customer_id`` (None: the
    conversation starts with this message, so its author is its customer)."""
    if author.is_bot:
        return Role.BOT
    if customer_id is None or author.id == customer_id:
        return Role.CUSTOMER
    if is_agent(author, policy):
        return Role.AGENT
    if policy.desk.outsiders == "customers":
        return Role.CUSTOMER
    return Role.OUTSIDER
