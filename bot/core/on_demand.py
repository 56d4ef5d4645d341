"""Copilot on demand: an agent asks the bot for a draft on a message that did not mention it (a
Slack message shortcut), or asks it something (``/supportbot``). The rules live here; an adapter
only translates the request and shows the answer to the agent alone.

* Only an agent (:func:`bot.domain.roles.is_agent`) may ask; anyone else is refused politely.
* A draft on request is the message taken as the customer's, through intake exactly as a mention
  (:meth:`bot.core.intake.Intake.receive`): the same one short transaction (the request is stored
  before it is acknowledged), the same drafting, guards and card. When it opens the conversation,
  the thread's earlier messages the adapter read are stored with it as context. The same rules hold: a workspace
  not served or a channel not watched is refused, a message the bot already has is not drafted
  again, a bot's, an agent's or an outsider's message is no customer's.
* A conversation a human took over is theirs: the agent is told so and to Hand back on its card
  first; nothing is drafted (intake drafts nothing in a human's conversation either).
* ``/supportbot order <id>``: the order's status and expected delivery by the drafting's own
  ``get_order_status`` tool. The asker is staff, who see every order on the cards already, so
  the customer identity checks do not apply (``identity_checks`` off, as for operator tools);
  the answer is the agent's alone and carries only the status and the dates.
* ``/supportbot summary``: the conversation's rolling summary (:mod:`bot.core.memory`) and its
  state, for the thread the command names.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from bot.core.intake import Intake
from bot.core.memory import summary_segments
from bot.domain.roles import Role, classify, is_agent
from bot.domain.states import ConversationOwner
from bot.events import AgentCommand, Author, DraftRequest
from bot.policy import Policy, PolicyStore
from bot.store import Database
from bot.store import conversations as conversation_rows
from tools import ToolContext, ToolError, ToolRegistry

NOT_AN_AGENT = "Sorry, only the support team can ask supportbot for drafts and lookups."
BOT_MESSAGE = "That is a bot's message: supportbot drafts replies to customers' messages only."
AGENT_MESSAGE = "That message is from the support team: pick a customer's message to draft a reply to."
NOT_SERVED = "supportbot does not serve this workspace, so it drafts nothing here."
NOT_WATCHED = "supportbot does not watch this channel (the policy's [channels] watch), so it drafts nothing here."
ALREADY = "supportbot already has this message: its card is on the review desk (use Regenerate there for a new draft)."
HELP = (
    "*supportbot* (the answers are yours alone):\n"
    "• `/supportbot order <order id>`: the order's status and expected delivery\n"
    "• `/supportbot summary <link to a message in the thread>`: the conversation's rolling summary\n"
    "• `/supportbot help`: this help\n"
    "To have a reply drafted for a customer's message that did not mention the bot, use the message's "
    "menu: *Draft a reply with supportbot*."
)
ORDER_USAGE = "Usage: `/supportbot order <order id>`, e.g. `/supportbot order #W2611340`."
SUMMARY_NO_THREAD = (
    "Which thread? `/supportbot summary <link to a message in the thread>` "
    "(Slack does not tell a command the thread it was typed in: use the message's *Copy link*)."
)


def is_requester_agent(requester: Author, policy: Policy) -> bool:
    """Whether the person asking is support staff (a bot never is)."""
    return not requester.is_bot and is_agent(requester, policy)


class OnDemand:
    """What an agent asks the bot for outside a mention: a draft on a message, a lookup."""

    def __init__(
        self, db: Database, policy: PolicyStore, intake: Intake, tools: Callable[[Policy], ToolRegistry]
    ) -> None:
        self.db = db
        self.policy = policy
        self.intake = intake
        self.tools = tools

    async def draft(self, request: DraftRequest) -> str:
        """Draft a reply to ``request.message`` as a mention would; what the agent is told."""
        policy = self.policy.current
        message = request.message
        if not is_requester_agent(request.requester, policy):
            return NOT_AN_AGENT
        if message.author.is_bot:
            return BOT_MESSAGE
        if not self.intake.served(message.thread):
            return NOT_SERVED
        if not self.intake.watched(message):
            return NOT_WATCHED
        async with self.db.read() as conn:
            conversation_id = await conversation_rows.conversation_at(conn, message.thread)
            conversation = (
                None if conversation_id is None else await conversation_rows.load_conversation(conn, conversation_id)
            )
        customer = conversation.customer_id if conversation is not None else None
        if message.author.id != customer and is_agent(message.author, policy):
            return AGENT_MESSAGE
        if classify(message.author, customer, policy) is Role.OUTSIDER:
            who = customer_name(conversation)
            return f"That message is not from this conversation's customer ({who}): pick one of theirs."
        if conversation is not None and conversation.owner is ConversationOwner.HUMAN:
            return taken_over(conversation)
        if not await self.intake.receive(message, requested_by=request.requester.id, earlier=request.earlier):
            return ALREADY
        who = message.author.display_name or message.author.id
        return f"Drafting a reply to {who}'s message: its card will be on the review desk."

    async def command(self, command: AgentCommand) -> str:
        """Answer ``/supportbot …``; the text the agent alone sees."""
        if not is_requester_agent(command.requester, self.policy.current):
            return NOT_AN_AGENT
        verb, _, rest = command.text.strip().partition(" ")
        verb = verb.lower()
        if verb == "order":
            return await self.order(command, rest.strip())
        if verb == "summary":
            return await self.summary(command)
        if verb in ("", "help"):
            return HELP
        return f"Unknown command `{verb[:40]}`.\n{HELP}"

    async def order(self, command: AgentCommand, order_id: str) -> str:
        tool = self.tools(self.policy.current).get("get_order_status")
        if tool is None:
            return "Order lookups are off: the bot has no order tools."
        try:
            args = tool.Args(order_id=order_id)
        except ValidationError:
            return ORDER_USAGE
        ctx = ToolContext(conversation_id="", asker=f"{command.platform}:{command.requester.id}", identity_checks=False)
        try:
            data = (await tool.run(args, ctx)).data
        except ToolError as exc:
            return f"{exc.message}."
        line = f"*Order {data['order_id']}*: {data['status']}"
        if data.get("delivered_at") and data["status"] == "delivered":
            line += f", delivered {str(data['delivered_at'])[:10]}"
        if data.get("estimated_delivery"):
            rough = data.get("estimate_basis") == "placed_at_plus_5_days"
            line += f", expected {data['estimated_delivery']}" + (" (a rough guess: placed + 5 days)" if rough else "")
        if data.get("carrier"):
            line += f" (carrier: {data['carrier']})"
        return line

    async def summary(self, command: AgentCommand) -> str:
        if command.thread is None:
            return SUMMARY_NO_THREAD
        async with self.db.read() as conn:
            conversation_id = await conversation_rows.conversation_at(conn, command.thread)
            if conversation_id is None:
                return "supportbot has no conversation in that thread."
            conversation = await conversation_rows.load_conversation(conn, conversation_id)
        owner = "the bot drafts" if conversation.owner is ConversationOwner.BOT else "a human answers"
        if conversation.owner is ConversationOwner.HUMAN and conversation.assignee:
            owner += f" ({conversation.assignee})"
        head = f"*Conversation with {customer_name(conversation)}*: {conversation.status.value}, {owner}."
        segments = summary_segments(conversation.summary)
        if not segments:
            return head + "\nNo rolling summary yet: the conversation is still short (its messages are on its card)."
        return head + "\n" + "\n".join(f"• {segment.strip()}" for segment in segments)


def customer_name(conversation: conversation_rows.ConversationState | None) -> str:
    if conversation is None:
        return "its customer"
    return conversation.customer_name or conversation.customer_id


def taken_over(conversation: conversation_rows.ConversationState) -> str:
    """The refusal in a conversation a human answers: it is theirs until handed back."""
    who = conversation.assignee or "a human"
    return (
        f"This conversation was taken over: {who} answers it, so supportbot drafts nothing here. "
        "To have the bot draft again, click Hand back on its card first, then ask again."
    )
