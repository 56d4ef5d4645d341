"""Block Kit for review cards and modals. Rendering only: the card's content is decided by
the core (:class:`bot.ports.ReviewCard`)."""

from __future__ import annotations

import json
import re
from typing import Any

from bot.ports import CardState, ReviewCard

SECTION_LIMIT = 2900
APPROVE, EDIT, REJECT, REGENERATE = "approve_draft", "edit_draft", "reject_draft", "regenerate_draft"
EDIT_MODAL, REGENERATE_MODAL = "edit_draft_modal", "regenerate_draft_modal"

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


def escape(text: str) -> str:
    """Slack mrkdwn escaping: customer or model text can never ping or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _name(name: str) -> str:
    """A Slack user mention stays a mention; any other name is escaped text."""
    return name if re.fullmatch(r"<@[A-Z0-9]+>", name) else escape(name)


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


def card_blocks(card: ReviewCard) -> list[dict[str, Any]]:
    """The card as Block Kit (≤ 50 blocks, every section ≤ 3,000 characters)."""
    blocks: list[dict[str, Any]] = [
        _section(
            f"*{_name(card.asked_by)}* asked in {card.where}:\n{_quote(card.customer_text[: SECTION_LIMIT - 200])}"
        )
    ]
    if card.attachments:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Attachments: " + escape(", ".join(card.attachments))[:2900]}],
            }
        )
    if card.identity:  # guards (issue 8): who is verified, and what the checks flagged
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(card.identity)[:2900]}]})
    if card.flags:
        flag_lines = "\n".join(f"• {escape(flag)}" for flag in card.flags)
        blocks.append(_section(f":octagonal_sign: *Check before approving:*\n{flag_lines}"))
    if card.escalation:
        tag = (
            f"<!subteam^{card.on_call}> "
            if card.on_call.startswith("S")
            else (f"<@{card.on_call}> " if card.on_call else "")
        )
        blocks.append(_section(f":rotating_light: {tag}Escalation: {escape(card.escalation)}"))
    if card.failure:
        blocks.append(
            _section(f":warning: *Drafting failed*: {escape(card.failure[:1500])}\nPlease answer the customer by hand.")
        )
    if card.draft_text:
        label = "*Reply sent*" if card.state is CardState.SENT else "*Draft reply*"
        for index, chunk in enumerate(_chunks(escape(card.draft_text))[:6]):
            blocks.append(_section(f"{label}\n{chunk}" if index == 0 else chunk))
    if card.lookups:
        lines = [f"• `{lookup.name}`: {escape(lookup.summary)}" for lookup in card.lookups[:15]]
        blocks.append(_section("*Looked up*\n" + "\n".join(lines)))
    for proposal in card.proposals[:5]:
        icon = ":moneybag:" if proposal.allowed else ":no_entry:"
        blocks.append(
            _section(
                f"{icon} *Proposed {proposal.kind}* ({proposal.status})\n{escape(proposal.summary)}\n"
                f"_Policy: {escape(proposal.verdict)}_"
            )
        )
    meta = f"Draft `{card.draft_id[:8]}` · rev {card.revision}" + (f" · {card.model}" if card.model else "")
    if card.notice:
        meta += f" · {escape(card.notice)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": meta[:2900]}]})
    if card.actionable:
        buttons = [
            _button(
                APPROVE,
                "Approve & send",
                card.draft_id,
                "primary",
                ("Send to customer?", "This posts the reply in the customer's thread.", "Send"),
            ),
            _button(EDIT, "Edit", card.draft_id),
            _button(
                REJECT,
                "Reject",
                card.draft_id,
                "danger",
                ("Reject draft?", "Nothing will be sent.", "Reject"),
            ),
            _button(REGENERATE, "Regenerate", card.draft_id),
        ]
        blocks.append(
            {
                "type": "actions",
                "block_id": f"draft_actions:{card.draft_id}:{card.revision}",
                "elements": buttons,
            }
        )
    else:
        line = _STATE_LINES.get(card.state, "")
        when = f" at {card.decided_at:%Y-%m-%d %H:%M} UTC" if card.decided_at else ""
        by = f" ({escape(card.notice)})" if card.notice and card.state is CardState.SUPERSEDED else ""
        text = line.format(who=_name(card.decided_by), when=when, by=by)
        if text:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
    return blocks[:50]


def card_fallback_text(card: ReviewCard) -> str:
    return f"Draft for {card.asked_by}: {card.state.value.replace('_', ' ')}"[:300]


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
