"""The review desk in a Discord staff channel: cards as embeds, decisions from buttons and modals.

Buttons are :class:`discord.ui.DynamicItem` s whose ``custom_id`` carries the action and the
draft id (``supportbot:approve:<draft>``), so a click on a card posted before a restart is
still understood: nothing is kept in memory per card. Modal submissions are routed the same
way, by their ``custom_id`` (``supportbot:edit-form:<draft>``), from ``on_interaction``.

Everything on a card that a customer, the model, a tool or an agent wrote is shown literally
(:mod:`adapters.discord.markup`): names, places and messages escaped, the draft and the sent text
in code blocks, so a masked link, a spoiler or a heading shows as written; card messages allow
no mentions except the on-call role of an escalation.

The adapter decides nothing: every click becomes a :class:`ReviewDecision` for
:meth:`Core.decide`, and the :class:`DecisionOutcome` message is shown to the clicker only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

import discord

from adapters.discord.client import SupportbotClient
from adapters.discord.markup import literal, verbatim
from adapters.discord.outbound import NONCE_LENGTH, ClientSource, platform_errors_told, split_message
from bot.errors import PlatformNotFound
from bot.events import Actor, DecisionAction, ReviewDecision
from bot.ports import CardState, Core, DecisionOutcome, ReviewCard

log = logging.getLogger(__name__)

DRAFT_ID_PATTERN = r"[A-Za-z0-9_-]+"
BUTTON_TEMPLATE = (
    r"supportbot:(?P<action>approve|edit|reject|regenerate|take_over|hand_back|claim|resolve)"
    rf":(?P<draft>{DRAFT_ID_PATTERN})"
)
FORM_TEMPLATE = rf"supportbot:(?P<form>edit|regenerate)-form:(?P<draft>{DRAFT_ID_PATTERN})"
_FORM_ID = re.compile(FORM_TEMPLATE)
_DRAFT_ID = re.compile(DRAFT_ID_PATTERN)
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

#: Discord limits (embeds, text inputs, custom ids).
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_FIELD_LIMIT = 1024
EMBED_TOTAL_LIMIT = 6000
FOOTER_LIMIT = 2048
_KEY_MARK = "key "
#: How many recent messages of the review channel :meth:`DiscordReviewDesk.find_card` reads.
CARD_SEARCH_LIMIT = 200
_KEY_MEMORY = 4096
TEXT_INPUT_LIMIT = 4000
CUSTOM_ID_LIMIT = 100
#: Room kept for the description (customer message and draft) when fields are long.
_DESCRIPTION_RESERVE = 2000
_MIN_FIELD_LIMIT = 128
#: Core calls made before answering a click (the edit form) must leave room in Discord's 3 s.
EDIT_FORM_TIMEOUT_SECONDS = 2.0
#: A click is acknowledged (deferred) first; the core's decision is awaited this long at most.
DECIDE_TIMEOUT_SECONDS = 10.0
COULD_NOT_RECORD = "Could not record your decision, please click again."
SENT_TEXT = "Sent text"

_BUTTONS: dict[DecisionAction, tuple[str, discord.ButtonStyle]] = {
    DecisionAction.APPROVE: ("Approve", discord.ButtonStyle.success),
    DecisionAction.EDIT: ("Edit", discord.ButtonStyle.primary),
    DecisionAction.REJECT: ("Reject", discord.ButtonStyle.danger),
    DecisionAction.REGENERATE: ("Regenerate", discord.ButtonStyle.secondary),
}
#: The conversation's buttons (issue 19), offered on any card whose conversation is not resolved.
_CONVERSATION_BUTTONS: dict[DecisionAction, tuple[str, discord.ButtonStyle]] = {
    DecisionAction.TAKE_OVER: ("Take over", discord.ButtonStyle.secondary),
    DecisionAction.HAND_BACK: ("Hand back", discord.ButtonStyle.secondary),
    DecisionAction.CLAIM: ("Claim", discord.ButtonStyle.secondary),
    DecisionAction.RESOLVE: ("Resolve", discord.ButtonStyle.secondary),
}

_STATE_LOOK: dict[CardState, tuple[str, discord.Colour]] = {
    CardState.DRAFTING: ("Kimi is writing this draft…", discord.Colour.greyple()),
    CardState.AWAITING_REVIEW: ("Draft awaiting review", discord.Colour.blurple()),
    CardState.APPROVED: ("Approved", discord.Colour.green()),
    CardState.EDITED: ("Edited and approved", discord.Colour.teal()),
    CardState.REJECTED: ("Rejected", discord.Colour.red()),
    CardState.SUPERSEDED: ("Superseded", discord.Colour.light_grey()),  # the notice says by what
    CardState.FAILED: ("Drafting failed", discord.Colour.orange()),
    CardState.SENT: ("Sent to the customer", discord.Colour.dark_green()),
    CardState.SEND_FAILED: ("Sending failed", discord.Colour.dark_red()),
}


def button_custom_id(action: DecisionAction, draft_id: str) -> str:
    """The ``custom_id`` of a review button; raises ValueError for ids Discord cannot carry."""
    custom_id = f"supportbot:{action.value}:{draft_id}"
    if not _DRAFT_ID.fullmatch(draft_id) or len(custom_id) > CUSTOM_ID_LIMIT:
        raise ValueError(f"draft id {draft_id!r} cannot be carried in a Discord custom_id")
    return custom_id


class ReviewButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=BUTTON_TEMPLATE):
    """One of Approve / Edit / Reject / Regenerate (or a conversation's Take over / Hand back /
    Claim / Resolve) on a card, rebuilt from its ``custom_id``."""

    def __init__(self, action: DecisionAction, draft_id: str) -> None:
        label, style = _BUTTONS.get(action) or _CONVERSATION_BUTTONS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=button_custom_id(action, draft_id)))
        self.action = action
        self.draft_id = draft_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        return cls(DecisionAction(match["action"]), match["draft"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, SupportbotClient):
            await client.handlers.on_review_click(interaction, self.action, self.draft_id)


def review_buttons(card: ReviewCard) -> discord.ui.View | None:
    """The card's buttons (the draft's while it awaits review, on the first row; the
    conversation's on the second), or None when it offers none."""
    actions = list(_BUTTONS) if card.actionable else []
    if not actions and not card.conversation.actions:
        return None
    view = discord.ui.View(timeout=None)
    for action in actions:
        view.add_item(ReviewButton(action, card.draft_id))
    for action in card.conversation.actions:
        button = ReviewButton(action, card.draft_id)
        button.item.row = 1
        view.add_item(button)
    return view


def render_card(card: ReviewCard, key: str = "") -> discord.Embed:
    """Render a :class:`ReviewCard` as one embed within Discord's embed limits (long fields
    are shortened first so the customer message and the draft keep most of the room). The
    card's idempotency ``key`` goes last in the footer, where :func:`card_key_of` finds it."""
    title, colour = _STATE_LOOK.get(card.state, (card.state.value, discord.Colour.default()))
    embed = discord.Embed(title=title, colour=colour)
    fields = _card_fields(card)
    footer = f"draft {card.draft_id} · revision {card.revision}" + (f" · {card.model}" if card.model else "")
    if key:
        footer = f"{footer[: FOOTER_LIMIT - len(key) - len(_KEY_MARK) - 3]} · {_KEY_MARK}{key}"
    embed.set_footer(text=footer[:FOOTER_LIMIT])
    limit = EMBED_FIELD_LIMIT
    while limit > _MIN_FIELD_LIMIT and len(embed) + sum(
        len(name) + min(len(value), limit) for name, value, _ in fields
    ) > (EMBED_TOTAL_LIMIT - _DESCRIPTION_RESERVE):
        limit -= 64
    for name, value, inline in fields:
        shown = verbatim(value, limit) if name == SENT_TEXT else _clip(value, limit)
        embed.add_field(name=name, value=shown, inline=inline)
    embed.description = _description(card, EMBED_TOTAL_LIMIT - len(embed) - 16)
    return embed


def card_nonce(idempotency_key: str) -> str:
    """The nonce a card is posted with: a retried post within Discord's nonce window returns
    the card already created instead of a second one (``enforce_nonce``)."""
    return hashlib.sha256(f"card\x00{idempotency_key}".encode()).hexdigest()[:NONCE_LENGTH]


def card_key_of(message: discord.Message) -> str | None:
    """The idempotency key in a card's embed footer, when the message is one of our cards."""
    for embed in message.embeds:
        footer = embed.footer.text or ""
        _, mark, key = footer.rpartition(f" · {_KEY_MARK}")
        if mark and key:
            return key
    return None


Field = tuple[str, str, bool]


def _card_fields(card: ReviewCard) -> list[Field]:
    """The embed's fields; every value but the card's own markup is escaped (the sent text is
    raw here and becomes a code block when the field is added)."""
    return [
        ("Asked by", literal(card.asked_by or "?"), True),
        ("Where", literal(card.where or "?"), True),
        *_check_fields(card),
        *_translation_fields(card),
        *_proposal_fields(card),
        *_note_fields(card),
        *_decision_fields(card),
        *_conversation_fields(card),
    ]


def _check_fields(card: ReviewCard) -> list[Field]:
    """Identity and flags: what to check before approving."""
    fields: list[Field] = []
    if card.identity:  # guards (issue 8): who is verified, and what the checks flagged
        fields.append(("Identity", literal(card.identity), False))
    if card.flags:
        fields.append(("🛑 Check before approving", "\n".join(f"• {literal(flag)}" for flag in card.flags), False))
    return fields


def _translation_fields(card: ReviewCard) -> list[Field]:
    """The customer's message and the draft in the desk's language, marked as a translation."""
    t = card.translation
    if t is None:
        return []
    return [
        ("🌐 Their message, translated", literal(t.customer_line()), False),
        ("🌐 The draft, translated (the reply goes out as drafted)", literal(t.draft_line()), False),
    ]


def _proposal_fields(card: ReviewCard) -> list[Field]:
    """What the drafter looked up and the actions it proposes, each with the policy's verdict."""
    fields: list[Field] = []
    if card.lookups:
        lines = [f"{'✅' if item.ok else '⚠️'} {_tool(item.name)}: {literal(item.summary)}" for item in card.lookups]
        fields.append(("Tool lookups", "\n".join(lines), False))
    if card.proposals:
        lines = [
            f"{'✅' if item.allowed else '⛔'} **{literal(item.kind)}** ({literal(item.status)}): "
            f"{literal(item.summary)}\n↳ {literal(item.verdict)}"
            for item in card.proposals
        ]
        fields.append(("Proposals", "\n".join(lines), False))
    return fields


def _note_fields(card: ReviewCard) -> list[Field]:
    """Attachments, a failure, a notice and an escalation."""
    fields: list[Field] = []
    if card.attachments:
        fields.append(("Attachments", "\n".join(f"📎 {literal(name)}" for name in card.attachments), False))
    notes = (
        ("⏰ Overdue", card.overdue),
        ("⚠️ Failure", card.failure),
        ("ℹ️ Notice", card.notice),
        ("🚨 Escalation", card.escalation),
    )
    fields.extend((name, literal(text), False) for name, text in notes if text)
    return fields


def _decision_fields(card: ReviewCard) -> list[Field]:
    """The text as sent when an agent changed it, and who decided when."""
    fields: list[Field] = []
    if card.sent_text and card.sent_text != card.draft_text:
        fields.append((SENT_TEXT, card.sent_text, False))
    if card.decided_by or card.decided_at:
        when = f" · <t:{int(card.decided_at.timestamp())}:f>" if card.decided_at else ""
        fields.append(("Decided by", f"{literal(card.decided_by or '?')}{when}", True))
    return fields


def _conversation_fields(card: ReviewCard) -> list[Field]:
    """What the customer wrote since (while a human answers) and the conversation's life."""
    fields: list[Field] = []
    if card.conversation.customer_wrote:
        fields.append(("💬 The customer wrote since (no draft)", literal(card.conversation.customer_wrote), False))
    fields.append(("Conversation", literal(card.conversation.line), False))
    return fields


def _tool(name: str) -> str:
    """A tool's name in inline code; a name the model made up that code cannot hold, escaped."""
    return f"`{name}`" if _TOOL_NAME.fullmatch(name) else literal(name)


def _description(card: ReviewCard, budget: int) -> str:
    budget = max(0, min(budget, EMBED_DESCRIPTION_LIMIT))
    quoted = "\n".join(f"> {literal(line)}" for line in (card.customer_text or "(no text)").splitlines())
    customer = "**Customer message**\n" + _clip(quoted, max(200, budget // 3))
    if not card.draft_text:
        return _clip(customer, budget)
    heading = "\n\n**Draft reply** (as written: links and formatting shown literally)\n"
    return customer + heading + verbatim(card.draft_text, budget - len(customer) - len(heading))


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…" if limit > 0 else ""


def actor_of(user: discord.User | discord.Member) -> Actor:
    """The agent behind an interaction; ``groups`` are the ids of their roles in the guild."""
    roles = user.roles if isinstance(user, discord.Member) else []
    return Actor(
        platform="discord",
        id=str(user.id),
        display_name=user.display_name,
        groups=frozenset(str(role.id) for role in roles),
    )


def edit_modal(draft_id: str, text: str, refund_amount: str | None) -> discord.ui.Modal:
    """The Edit form: the reply text, and the refund amount when the draft proposes one."""
    modal = discord.ui.Modal(title="Edit the reply", custom_id=f"supportbot:edit-form:{draft_id}")
    modal.add_item(
        discord.ui.Label(
            text="Reply to the customer",
            component=discord.ui.TextInput(
                custom_id="text",
                style=discord.TextStyle.paragraph,
                default=text,
                max_length=TEXT_INPUT_LIMIT,
                required=True,
            ),
        )
    )
    if refund_amount is not None:
        modal.add_item(
            discord.ui.Label(
                text="Refund amount",
                description="The amount to refund, e.g. 12.50",
                component=discord.ui.TextInput(
                    custom_id="refund_amount", default=refund_amount, max_length=32, required=True
                ),
            )
        )
    return _unstored(modal)


def regenerate_modal(draft_id: str) -> discord.ui.Modal:
    """The Regenerate form: an optional instruction for the model."""
    modal = discord.ui.Modal(title="Regenerate the draft", custom_id=f"supportbot:regenerate-form:{draft_id}")
    modal.add_item(
        discord.ui.Label(
            text="Instruction (optional)",
            description='e.g. "shorter" or "offer store credit instead"',
            component=discord.ui.TextInput(
                custom_id="instruction",
                style=discord.TextStyle.paragraph,
                max_length=1000,
                required=False,
            ),
        )
    )
    return _unstored(modal)


def _unstored(modal: discord.ui.Modal) -> discord.ui.Modal:
    # A stopped modal is not kept in discord.py's view store when sent: submissions are routed
    # by custom_id in on_interaction instead, which survives restarts and never leaks modals
    # that were dismissed without submitting.
    modal.stop()
    return modal


def submitted_values(components: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``custom_id -> value`` of every input in a modal submission (action rows or labels)."""
    values: dict[str, str] = {}
    for component in components:
        nested = component.get("components")
        if isinstance(nested, list):
            values.update(submitted_values(nested))
        inner = component.get("component")
        if isinstance(inner, Mapping):
            values.update(submitted_values([inner]))
        custom_id, value = component.get("custom_id"), component.get("value")
        if isinstance(custom_id, str) and isinstance(value, str):
            values[custom_id] = value
    return values


class ReviewInteractions:
    """Turns clicks and modal submissions on cards into decisions for the core."""

    def __init__(self, core: Callable[[], Core]) -> None:
        self._core = core

    async def on_click(self, interaction: discord.Interaction[Any], action: DecisionAction, draft_id: str) -> None:
        if action is DecisionAction.EDIT:
            await self._open_edit_form(interaction, draft_id)
            return
        if action is DecisionAction.REGENERATE:
            await interaction.response.send_modal(regenerate_modal(draft_id))
            return
        # Acknowledge first (Discord allows 3 s); the card itself shows the result.
        await interaction.response.defer()
        await self._decide(interaction, ReviewDecision(draft_id, action, actor_of(interaction.user)))

    async def on_modal_submit(self, interaction: discord.Interaction[Any]) -> bool:
        """Handle a submission of one of our forms; False when the interaction is not ours."""
        data: Mapping[str, Any] = interaction.data or {}
        match = _FORM_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return False
        values = submitted_values(data.get("components", []))
        await interaction.response.defer()
        actor = actor_of(interaction.user)
        draft_id = match["draft"]
        if match["form"] == "edit":
            decision = ReviewDecision(
                draft_id,
                DecisionAction.EDIT,
                actor,
                edited_text=values.get("text", ""),
                refund_amount=values["refund_amount"].strip() if "refund_amount" in values else None,
            )
        else:
            decision = ReviewDecision(
                draft_id,
                DecisionAction.REGENERATE,
                actor,
                instruction=values.get("instruction", "").strip() or None,
            )
        await self._decide(interaction, decision)
        return True

    async def _open_edit_form(self, interaction: discord.Interaction[Any], draft_id: str) -> None:
        try:
            form = await asyncio.wait_for(self._core().edit_form(draft_id), EDIT_FORM_TIMEOUT_SECONDS)
        except TimeoutError:
            await interaction.response.send_message("The draft took too long to load; try again.", ephemeral=True)
            return
        if form is None:
            await interaction.response.send_message("This draft can no longer be edited.", ephemeral=True)
            return
        if len(form.text) > TEXT_INPUT_LIMIT:
            await interaction.response.send_message(
                f"This draft is {len(form.text)} characters long; Discord forms hold at most "
                f"{TEXT_INPUT_LIMIT}. Reject it or regenerate it with an instruction instead.",
                ephemeral=True,
            )
            return
        await interaction.response.send_modal(edit_modal(draft_id, form.text, form.refund_amount))

    async def _decide(self, interaction: discord.Interaction[Any], decision: ReviewDecision) -> None:
        try:
            outcome = await asyncio.wait_for(self._core().decide(decision), DECIDE_TIMEOUT_SECONDS)
        except TimeoutError:
            log.error(
                "the decision of %s on draft %s was not recorded within %.0f s",
                decision.actor.id,
                decision.draft_id,
                DECIDE_TIMEOUT_SECONDS,
            )
            outcome = DecisionOutcome(ok=False, message=COULD_NOT_RECORD)
        except Exception:
            log.exception(
                "the decision (%s) of %s on draft %s could not be recorded",
                decision.action,
                decision.actor.id,
                decision.draft_id,
            )
            outcome = DecisionOutcome(ok=False, message=COULD_NOT_RECORD)
        if outcome.ok and not outcome.message:
            return
        text = outcome.message or "Your decision could not be applied."
        try:
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.warning("could not tell %s the outcome on draft %s: %s", decision.actor.id, decision.draft_id, exc)


class DiscordReviewDesk:
    """Cards in the staff channel ``DISCORD_REVIEW_CHANNEL``; refs are ``"<channel>:<message>"``.

    A card is posted with a nonce derived from its idempotency key (``enforce_nonce``: a retry
    within Discord's window returns the same message) and carries the key in its embed footer,
    so :meth:`find_card` recognises it in the channel's history after a restart (fetched
    messages carry no nonce). Updates keep the key while this process remembers it.
    """

    name = "discord"

    def __init__(self, client: ClientSource, channel_id: int) -> None:
        self._client = client
        self.channel_id = channel_id
        self._keys: OrderedDict[str, str] = OrderedDict()

    def _remember(self, draft_id: str, key: str) -> None:
        self._keys[draft_id] = key
        self._keys.move_to_end(draft_id)
        while len(self._keys) > _KEY_MEMORY:
            self._keys.popitem(last=False)

    def cards_changed(self) -> None:
        """Nothing on Discord lists the cards apart from the staff channel."""

    @platform_errors_told
    async def post_card(self, card: ReviewCard, *, idempotency_key: str) -> str:
        channel = self._client().get_partial_messageable(self.channel_id)
        view = review_buttons(card)
        embed = render_card(card, idempotency_key)
        nonce = card_nonce(idempotency_key)
        content, mentions = None, discord.AllowedMentions.none()
        if card.escalation and card.on_call.isdigit():
            # Tag the on-call role, and only that role.
            content = f"<@&{card.on_call}> 🚨 {literal(card.escalation)}"[:2000]
            mentions = discord.AllowedMentions(
                everyone=False, users=False, roles=[discord.Object(id=int(card.on_call))]
            )
        if view is None:
            message = await channel.send(content, embed=embed, allowed_mentions=mentions, nonce=nonce)
        else:
            message = await channel.send(content, embed=embed, view=view, allowed_mentions=mentions, nonce=nonce)
        self._remember(card.draft_id, idempotency_key)
        return f"{self.channel_id}:{message.id}"

    @platform_errors_told
    async def find_card(self, idempotency_key: str) -> str | None:
        """The ref of the card carrying this key among the channel's recent messages."""
        client = self._client()
        channel = client.get_partial_messageable(self.channel_id)
        me = client.user.id if client.user is not None else None
        async for message in channel.history(limit=CARD_SEARCH_LIMIT):
            if (me is None or message.author.id == me) and card_key_of(message) == idempotency_key:
                return f"{self.channel_id}:{message.id}"
        return None

    @platform_errors_told
    async def update_card(self, ref: str, card: ReviewCard) -> None:
        channel_id, _, message_id = ref.partition(":")
        if not channel_id.isdigit() or not message_id.isdigit():
            raise PlatformNotFound("Discord", f"not a Discord card reference: {ref!r}")
        channel = self._client().get_partial_messageable(int(channel_id))
        message = channel.get_partial_message(int(message_id))
        await message.edit(
            embed=render_card(card, self._keys.get(card.draft_id, "")),
            view=review_buttons(card),
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @platform_errors_told
    async def post_in_card_thread(self, ref: str, text: str, *, on_call: str = "") -> None:
        """A reply to the card's message, tagging the on-call role (and only that role)."""
        channel_id, _, message_id = ref.partition(":")
        if not channel_id.isdigit() or not message_id.isdigit():
            raise ValueError(f"not a Discord card reference: {ref!r}")
        channel = self._client().get_partial_messageable(int(channel_id))
        card = channel.get_partial_message(int(message_id))
        content, mentions = literal(text), discord.AllowedMentions.none()
        if on_call.isdigit():
            content = f"<@&{on_call}> {content}"
            mentions = discord.AllowedMentions(everyone=False, users=False, roles=[discord.Object(id=int(on_call))])
        await channel.send(content[:2000], reference=card, allowed_mentions=mentions, mention_author=False)

    @platform_errors_told
    async def post_notice(self, text: str) -> None:
        channel = self._client().get_partial_messageable(self.channel_id)
        for part in split_message(text):
            await channel.send(part, allowed_mentions=discord.AllowedMentions.none())
