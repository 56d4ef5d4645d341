"""Block Kit for review cards and modals. Rendering only: the card's content is decided by
the core (:class:`bot.ports.ReviewCard`).

Every text on a card that a customer, a model, a tool or an agent wrote is escaped (``&``, ``<``,
``>``: Slack's rule), in sections, context elements and the notification ``text`` alike, so a
Discord nickname ``<!channel>`` or a server name ``<https://evil|Approve here>`` shows as written
and pings or links nothing. The only live markup is the card's own: the on-call tag of an
escalation (from the policy) and, for a Slack customer, the ``<@U…>`` / ``<#C…>`` this adapter's
intake wrote itself (recognised by the whole location having the intake's exact shape, which no
other platform's location has). The draft is shown verbatim in a code block: what the model wrote,
masked links and all, not what a renderer would make of it."""

from __future__ import annotations

import json
import re
from typing import Any

from adapters.slack.mrkdwn import escape
from bot.events import DecisionAction
from bot.ports import CardState, ReviewCard

SECTION_LIMIT = 2900
APPROVE, EDIT, REJECT, REGENERATE = "approve_draft", "edit_draft", "reject_draft", "regenerate_draft"
EDIT_MODAL, REGENERATE_MODAL = "edit_draft_modal", "regenerate_draft_modal"
#: The reply's 👍 / 👎 (a ``feedback_buttons`` element): each button's value is "<vote>:<draft id>".
FEEDBACK = "rate_reply"
#: The conversation's buttons (issue 19): action id and label per decision.
CONVERSATION_BUTTONS: dict[DecisionAction, tuple[str, str]] = {
    DecisionAction.TAKE_OVER: ("take_over_conversation", "Take over"),
    DecisionAction.HAND_BACK: ("hand_back_conversation", "Hand back"),
    DecisionAction.CLAIM: ("claim_conversation", "Claim"),
    DecisionAction.RESOLVE: ("resolve_conversation", "Resolve"),
}

_STATE_LINES = {
    CardState.DRAFTING: ":hourglass_flowing_sand: Kimi is writing this draft; the buttons come when it is done.",
    CardState.APPROVED: ":white_check_mark: Approved by {who}{when}; sending…",
    CardState.EDITED: ":pencil2: Edited and approved by {who}{when}; sending…",
    CardState.SENT: ":incoming_envelope: Approved by {who}{when} and sent to the customer.",
    CardState.REJECTED: ":x: Rejected by {who}{when}. Nothing was sent.",
    CardState.SUPERSEDED: ":arrows_counterclockwise: Superseded{by}.",
    CardState.FAILED: ":warning: No draft: answer the customer by hand.",
    CardState.SEND_FAILED: (
        ":rotating_light: Approved by {who}{when}, but sending failed. Nothing reached the customer."
    ),
}


#: The locations the Slack intake writes (``adapters.slack.intake``): only these are Slack's own.
_SLACK_LOCATION = re.compile(r"Slack(?: Connect)? · (?:<#[A-Z0-9]+>|direct message)")
_SLACK_USER = re.compile(r"<@[A-Z0-9]+>")
_FENCE = "```"
_BROKEN_FENCE = "`\u200b``"  # a ``` in the draft, shown without ending the preformatted block


def _from_slack(card: ReviewCard) -> bool:
    """Whether the asker and location are the intake's own Slack mention and channel link."""
    return bool(_SLACK_LOCATION.fullmatch(card.where) and _SLACK_USER.fullmatch(card.asked_by))


def _asker(card: ReviewCard) -> str:
    return card.asked_by if _from_slack(card) else escape(card.asked_by)


def _where(card: ReviewCard) -> str:
    return card.where if _from_slack(card) else escape(card.where)


def origin(asked_by: str, where: str) -> tuple[str, str]:
    """Who asked and where, as mrkdwn: the intake's own ``<@U…>`` and ``<#C…>`` kept (Slack shows
    the person's and the channel's names), anything else escaped text."""
    if _SLACK_LOCATION.fullmatch(where) and _SLACK_USER.fullmatch(asked_by):
        return asked_by, where
    return escape(asked_by), escape(where)


def agent_name(name: str) -> str:
    """The deciding (or assigned) agent: a Slack click's actor is the mention ``<@U…>`` this desk
    wrote, shown as a mention; any other name is escaped text."""
    return name if _SLACK_USER.fullmatch(name) else escape(name)


def _verbatim(text: str) -> str:
    """``text`` in a preformatted block, shown exactly as written (escaped; a ``` inside it
    cannot close the block early)."""
    return _FENCE + escape(text).replace(_FENCE, _BROKEN_FENCE) + _FENCE


def _verbatim_chunks(text: str, limit: int) -> list[str]:
    """``text`` as preformatted blocks of at most ``limit`` characters each once escaped."""
    blocks: list[str] = []
    for chunk in _chunks(text, limit):
        shown = _verbatim(chunk)
        if len(shown) > limit and len(chunk) > 1:
            blocks.extend(_verbatim_chunks(chunk, max(1, len(chunk) // 2)) if limit > 1 else [shown])
        else:
            blocks.append(shown)
    return blocks


def _chunks(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    chunks: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    chunks.append(text)
    return chunks


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _quote(text: str) -> str:
    return "\n".join(f">{line}" for line in escape(text).splitlines() or [""])


def _button(
    action_id: str,
    text: str,
    draft_id: str,
    style: str | None = None,
    confirm: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": draft_id,
        "text": {"type": "plain_text", "text": text},
    }
    if style:
        button["style"] = style
    if confirm:
        title, body, yes = confirm
        button["confirm"] = {
            "title": {"type": "plain_text", "text": title},
            "text": {"type": "plain_text", "text": body},
            "confirm": {"type": "plain_text", "text": yes},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
    return button


def mention(on_call: str) -> str:
    """The mention of an on-call id: a user group (``S…``) or a person (``U…``); empty for none."""
    if not on_call:
        return ""
    return f"<!subteam^{on_call}>" if on_call.startswith("S") else f"<@{on_call}>"


def card_blocks(card: ReviewCard) -> list[dict[str, Any]]:
    """The card as Block Kit (≤ 50 blocks, every section ≤ 3,000 characters)."""
    blocks = [
        *_customer_blocks(card),
        *_check_blocks(card),
        *_draft_blocks(card),
        *_proposal_blocks(card),
        _context(_meta_line(card)[:2900]),
        *_decision_blocks(card),
    ]
    return (blocks[:47] + _conversation_blocks(card))[:50]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _customer_blocks(card: ReviewCard) -> list[dict[str, Any]]:
    """Who asked where, what they wrote, and what they attached."""
    blocks = [
        _section(f"*{_asker(card)}* asked in {_where(card)}:\n{_quote(card.customer_text[: SECTION_LIMIT - 200])}")
    ]
    if card.attachments:
        blocks.append(_context("Attachments: " + escape(", ".join(card.attachments))[:2900]))
    if card.translation is not None:
        blocks.append(_context(":globe_with_meridians: " + escape(card.translation.customer_line())[:2900]))
    return blocks


def _check_blocks(card: ReviewCard) -> list[dict[str, Any]]:
    """Identity, flags, escalation and a drafting failure: what to check before approving."""
    blocks: list[dict[str, Any]] = []
    if card.identity:  # guards (issue 8): who is verified, and what the checks flagged
        blocks.append(_context(escape(card.identity)[:2900]))
    if card.flags:
        flag_lines = "\n".join(f"• {escape(flag)}" for flag in card.flags)
        blocks.append(_section(f":octagonal_sign: *Check before approving:*\n{flag_lines}"))
    if card.overdue:
        blocks.append(_section(f":alarm_clock: *{escape(card.overdue)}*"))
    if card.escalation:
        tag = f"{mention(card.on_call)} " if card.on_call else ""
        blocks.append(_section(f":rotating_light: {tag}Escalation: {escape(card.escalation)}"))
    if card.failure:
        blocks.append(
            _section(f":warning: *Drafting failed*: {escape(card.failure[:1500])}\nPlease answer the customer by hand.")
        )
    return blocks


def _draft_blocks(card: ReviewCard) -> list[dict[str, Any]]:
    """The draft (or the sent reply) shown literally, in at most six sections."""
    if not card.draft_text:
        return []
    label = "*Reply sent*" if card.state is CardState.SENT else "*Draft reply*"
    label += " (as written: links and formatting shown literally)"
    chunks = _verbatim_chunks(card.draft_text, SECTION_LIMIT - 100)[:6]
    blocks = [_section(f"{label}\n{shown}" if index == 0 else shown) for index, shown in enumerate(chunks)]
    if card.translation is not None:  # for reading: the reply goes out as written above
        blocks.append(_context(":globe_with_meridians: " + escape(card.translation.draft_line())[:2900]))
    return blocks


def _proposal_blocks(card: ReviewCard) -> list[dict[str, Any]]:
    """What the drafter looked up and the actions it proposes, each with the policy's verdict."""
    blocks: list[dict[str, Any]] = []
    if card.lookups:
        lines = [f"• `{escape(lookup.name)}`: {escape(lookup.summary)}" for lookup in card.lookups[:15]]
        blocks.append(_section("*Looked up*\n" + "\n".join(lines)))
    for proposal in card.proposals[:5]:
        icon = ":moneybag:" if proposal.allowed else ":no_entry:"
        blocks.append(
            _section(
                f"{icon} *Proposed {escape(proposal.kind)}* ({escape(proposal.status)})\n{escape(proposal.summary)}\n"
                f"_Policy: {escape(proposal.verdict)}_"
            )
        )
    return blocks


def _meta_line(card: ReviewCard) -> str:
    meta = f"Draft `{card.draft_id[:8]}` · rev {card.revision}" + (f" · {escape(card.model)}" if card.model else "")
    return meta + (f" · {escape(card.notice)}" if card.notice else "")


def _decision_blocks(card: ReviewCard) -> list[dict[str, Any]]:
    """The draft's buttons while it can be decided, else the line saying who decided what."""
    if card.actionable:
        return [
            {
                "type": "actions",
                "block_id": f"draft_actions:{card.draft_id}:{card.revision}",
                "elements": _draft_buttons(card.draft_id),
            }
        ]
    line = _STATE_LINES.get(card.state, "")
    when = f" at {card.decided_at:%Y-%m-%d %H:%M} UTC" if card.decided_at else ""
    by = f" ({escape(card.notice)})" if card.notice and card.state is CardState.SUPERSEDED else ""
    text = line.format(who=agent_name(card.decided_by), when=when, by=by)
    return [_context(text)] if text else []


def _draft_buttons(draft_id: str) -> list[dict[str, Any]]:
    return [
        _button(
            APPROVE,
            "Approve & send",
            draft_id,
            "primary",
            ("Send to customer?", "This posts the reply in the customer's thread.", "Send"),
        ),
        _button(EDIT, "Edit", draft_id),
        _button(REJECT, "Reject", draft_id, "danger", ("Reject draft?", "Nothing will be sent.", "Reject")),
        _button(REGENERATE, "Regenerate", draft_id),
    ]


def _conversation_blocks(card: ReviewCard) -> list[dict[str, Any]]:
    """The conversation's life (status, who answers, assignee), what the customer wrote since
    while a human answers, and its buttons."""
    view = card.conversation
    blocks: list[dict[str, Any]] = []
    if view.customer_wrote:
        blocks.append(
            _section(f":speech_balloon: *The customer wrote since* (no draft):\n{_quote(view.customer_wrote[:2500])}")
        )
    # The assignee is a click's actor, ``<@U…>``: shown as a mention, like the deciding agent.
    blocks.append(_context(f"{escape(view.life)[:2500]} · {view.assigned(agent_name(view.assignee))}"))
    if view.actions:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"conversation_actions:{card.draft_id}",
                "elements": [
                    _button(CONVERSATION_BUTTONS[a][0], CONVERSATION_BUTTONS[a][1], card.draft_id) for a in view.actions
                ],
            }
        )
    return blocks


def card_fallback_text(card: ReviewCard) -> str:
    """The message's ``text``: what notifications show, escaped like the blocks."""
    asker = _asker(card) if len(card.asked_by) <= 200 else escape(card.asked_by[:200])
    return f"Draft for {asker}: {card.state.value.replace('_', ' ')}"


def edit_modal(draft_id: str, text: str, refund_amount: str | None, card_channel: str) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {
            "type": "input",
            "block_id": "draft_block",
            "label": {"type": "plain_text", "text": "Reply to the customer"},
            "element": {
                "type": "plain_text_input",
                "action_id": "draft_input",
                "multiline": True,
                "max_length": 3000,
                "initial_value": text[:3000],
            },
        }
    ]
    if refund_amount is not None:
        blocks.append(
            {
                "type": "input",
                "block_id": "refund_block",
                "label": {"type": "plain_text", "text": "Refund amount"},
                "hint": {
                    "type": "plain_text",
                    "text": "Checked against the policy again before anything happens.",
                },
                "element": {
                    "type": "plain_text_input",
                    "action_id": "refund_input",
                    "initial_value": refund_amount,
                },
            }
        )
    return {
        "type": "modal",
        "callback_id": EDIT_MODAL,
        "title": {"type": "plain_text", "text": "Edit draft"},
        "submit": {"type": "plain_text", "text": "Approve & send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"draft_id": draft_id, "channel": card_channel}),
        "blocks": blocks,
    }


def regenerate_modal(draft_id: str, card_channel: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": REGENERATE_MODAL,
        "title": {"type": "plain_text", "text": "Regenerate draft"},
        "submit": {"type": "plain_text", "text": "Regenerate"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"draft_id": draft_id, "channel": card_channel}),
        "blocks": [
            {
                "type": "input",
                "block_id": "instruction_block",
                "optional": True,
                "label": {"type": "plain_text", "text": "Instruction (optional)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "instruction_input",
                    "max_length": 500,
                    "placeholder": {"type": "plain_text", "text": "shorter; offer store credit instead"},
                },
            }
        ],
    }


def reply_with_feedback(text: str, draft_id: str) -> list[dict[str, Any]]:
    """A customer reply's blocks: its text (in sections of at most 3,000 characters) and a
    ``context_actions`` block whose ``feedback_buttons`` rate the reply of ``draft_id``."""
    buttons = {
        "type": "feedback_buttons",
        "action_id": FEEDBACK,
        "positive_button": {
            "text": {"type": "plain_text", "text": "👍"},
            "value": f"up:{draft_id}",
            "accessibility_label": "This answer helped",
        },
        "negative_button": {
            "text": {"type": "plain_text", "text": "👎"},
            "value": f"down:{draft_id}",
            "accessibility_label": "This answer did not help",
        },
    }
    sections = [_section(chunk) for chunk in _chunks(text)]
    return [*sections, {"type": "context_actions", "block_id": f"feedback-{draft_id}", "elements": [buttons]}]
