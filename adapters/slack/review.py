"""The review desk's input side in Slack: card clicks, modal submissions, and the app's one
error handler.

A click is **decided before its ack**: the Approve/Reject handler awaits
:meth:`bot.ports.Core.decide` for at most :data:`DECIDE_TIMEOUT` seconds, then acks. When the
decision could not be recorded (an error, or no answer in time) the clicker is told at once,
ephemerally, "could not record your decision, please click again", and the card stays as it is,
which is the truth. A modal submission follows the same rule and, on failure, answers with
``response_action: errors`` so the modal stays open and says why.

Work after the ack (the ephemeral outcome, ``views.open`` for Edit and Regenerate) runs as a Bolt
*lazy listener*; each one logs its own failure with the draft id and the user, so nothing ends as
an unobserved task. Listener and middleware errors reach :meth:`SlackReview.on_error`
(``app.error``): a request no listener takes is answered 200 and named once at INFO; a malformed
payload is answered 200 and logged once with its reason (a submission of our modal keeps it open
with an error saying so); any other error is logged with its context and keeps Bolt's 500, so
Slack retries an event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import cards, wire
from adapters.slack.directory import SlackDirectory
from bot.events import Actor, DecisionAction, FeedbackClick, ReviewDecision
from bot.ports import Core, DecisionOutcome

log = logging.getLogger(__name__)

#: How long a click waits for the core's decision before its ack (Slack allows 3 s in all).
DECIDE_TIMEOUT = 2.0
#: The edit form is loaded before ``views.open``, whose trigger expires 3 s after the click.
EDIT_FORM_TIMEOUT = 2.0
COULD_NOT_RECORD = "Could not record your decision, please click again."
COULD_NOT_RECORD_VOTE = "Could not record your vote, please click again."
COULD_NOT_RECORD_FORM = "Could not record your decision, please submit again."
UNREADABLE_FORM = "This form could not be read. Close it and click the button on the card again."
#: The input block of each of our modals that carries a form-level error.
FORM_BLOCKS = {cards.EDIT_MODAL: "draft_block", cards.REGENERATE_MODAL: "instruction_block"}
#: The context key a handler leaves for the lazy listener that tells the clicker.
TELL = "supportbot_tell"
#: How many request types without a listener are remembered, to name each at INFO only once.
IGNORED_KINDS_REMEMBERED = 256


class SlackReview:
    """Card clicks and modal submissions become :class:`ReviewDecision` s for the core."""

    def __init__(
        self,
        *,
        core: Callable[[], Core],
        client: AsyncWebClient,
        directory: SlackDirectory,
        review_channel: str | None,
        decide_timeout: float = DECIDE_TIMEOUT,
    ) -> None:
        self._core = core
        self._client = client
        self._directory = directory
        self._review_channel = review_channel or ""
        self._decide_timeout = decide_timeout
        self._ignored_kinds: set[str] = set()

    def register(self, app: AsyncApp) -> None:
        app.action(cards.APPROVE)(ack=self.approve, lazy=[self.tell_clicker])
        app.action(cards.REJECT)(ack=self.reject, lazy=[self.tell_clicker])
        for action, (action_id, _label) in cards.CONVERSATION_BUTTONS.items():
            app.action(action_id)(ack=self._conversation_click(action), lazy=[self.tell_clicker])
        app.action(cards.FEEDBACK)(ack=self.rate_reply, lazy=[self.tell_clicker])
        app.action(cards.EDIT)(ack=self.ack_click, lazy=[self.open_edit_modal])
        app.action(cards.REGENERATE)(ack=self.ack_click, lazy=[self.open_regenerate_modal])
        app.view(cards.EDIT_MODAL)(ack=self.submit_edit, lazy=[self.tell_clicker])
        app.view(cards.REGENERATE_MODAL)(ack=self.submit_regenerate, lazy=[self.tell_clicker])
        app.error(self.on_error)

    # -- clicks -----------------------------------------------------------------------------

    async def approve(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await self._click(ack, body, context, DecisionAction.APPROVE)

    async def reject(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await self._click(ack, body, context, DecisionAction.REJECT)

    def _conversation_click(self, action: DecisionAction) -> Callable[..., Awaitable[None]]:
        """The ack listener of a conversation button (Take over, Hand back, Claim, Resolve)."""

        async def click(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
            await self._click(ack, body, context, action)

        return click

    async def _click(
        self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext, action: DecisionAction
    ) -> None:
        click = wire.parse_block_actions(body)
        user, draft_id = click["user"]["id"], click["actions"][0]["value"]
        channel = click["channel_id"] or self._review_channel
        outcome = await self._decide(user, draft_id, lambda actor: ReviewDecision(draft_id, action, actor))
        await ack()
        self._leave_message(context, outcome, channel, user, draft_id, COULD_NOT_RECORD)

    async def rate_reply(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """A 👍 / 👎 on a customer reply: the clicker's facts go to the core, which decides
        whether they may rate it; the answer reaches them ephemerally, in the customer's channel."""
        click = wire.parse_block_actions(body)
        user = click["user"]["id"]
        vote, draft_id = wire.parse_vote(click["actions"][0]["value"])

        async def run() -> DecisionOutcome:
            author = await self._directory.person(user, self._review_channel)
            return await self._core().rate(FeedbackClick(draft_id, vote, author))

        try:
            outcome: DecisionOutcome | None = await asyncio.wait_for(run(), self._decide_timeout)
        except Exception:
            log.exception("the vote of %s on the reply of draft %s could not be recorded", user, draft_id)
            outcome = None
        await ack()
        self._leave_message(context, outcome, click["channel_id"], user, draft_id, COULD_NOT_RECORD_VOTE)

    async def ack_click(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        wire.parse_block_actions(body)  # a malformed click is answered by on_error
        await ack()

    async def _decide(
        self, user: str, draft_id: str, decision: Callable[[Actor], ReviewDecision]
    ) -> DecisionOutcome | None:
        """The core's outcome, or None when the decision could not be recorded in time (the
        clicker's groups are looked up within the same bound)."""

        async def run() -> DecisionOutcome:
            actor = Actor("slack", user, f"<@{user}>", await self._directory.groups_of(user))
            return await self._core().decide(decision(actor))

        try:
            return await asyncio.wait_for(run(), self._decide_timeout)
        except TimeoutError:
            log.error(
                "the decision of %s on draft %s was not recorded within %.1f s", user, draft_id, self._decide_timeout
            )
        except Exception:
            log.exception("the decision of %s on draft %s could not be recorded", user, draft_id)
        return None

    @staticmethod
    def _leave_message(
        context: AsyncBoltContext,
        outcome: DecisionOutcome | None,
        channel: str,
        user: str,
        draft_id: str,
        failure: str,
    ) -> None:
        text = failure if outcome is None else outcome.message
        if text and channel:
            context[TELL] = {"channel": channel, "user": user, "text": text, "draft_id": draft_id}

    async def tell_clicker(self, context: AsyncBoltContext) -> None:
        """Lazy: the ephemeral outcome ("already approved by @x"), after the ack."""
        tell = context.get(TELL)
        if not isinstance(tell, dict):
            return
        try:
            await self._client.chat_postEphemeral(channel=tell["channel"], user=tell["user"], text=tell["text"])
        except Exception as exc:
            error = slack_error(exc) if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning(
                "could not tell %s the outcome on draft %s (%r): %s",
                tell["user"],
                tell["draft_id"],
                tell["text"],
                error,
            )

    # -- modals -----------------------------------------------------------------------------

    async def open_edit_modal(self, body: dict[str, Any]) -> None:
        """Lazy: load the edit form and open the modal (the trigger lives 3 s)."""
        click = wire.parse_block_actions(body)
        user, draft_id = click["user"]["id"], click["actions"][0]["value"]
        try:
            form = await asyncio.wait_for(self._core().edit_form(draft_id), EDIT_FORM_TIMEOUT)
            if form is None:
                await self._client.chat_postEphemeral(
                    channel=click["channel_id"] or self._review_channel,
                    user=user,
                    text="This draft can no longer be edited.",
                )
                return
            channel = click["channel_id"] or self._review_channel
            await self._client.views_open(
                trigger_id=click["trigger_id"], view=cards.edit_modal(draft_id, form.text, form.refund_amount, channel)
            )
        except SlackApiError as exc:  # an expired trigger, a channel the bot left: Slack's word is enough
            log.warning("could not open the edit form of draft %s for %s: %s", draft_id, user, slack_error(exc))
        except Exception:
            log.exception("could not open the edit form of draft %s for %s", draft_id, user)

    async def open_regenerate_modal(self, body: dict[str, Any]) -> None:
        """Lazy: open the Regenerate modal."""
        click = wire.parse_block_actions(body)
        user, draft_id = click["user"]["id"], click["actions"][0]["value"]
        try:
            await self._client.views_open(
                trigger_id=click["trigger_id"],
                view=cards.regenerate_modal(draft_id, click["channel_id"] or self._review_channel),
            )
        except SlackApiError as exc:
            log.warning("could not open the regenerate form of draft %s for %s: %s", draft_id, user, slack_error(exc))
        except Exception:
            log.exception("could not open the regenerate form of draft %s for %s", draft_id, user)

    async def submit_edit(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        submitted = wire.parse_view_submission(body)
        values = submitted["values"]
        text = (values.get("draft_block", {}).get("draft_input") or "").strip()
        if not text:
            await ack(response_action="errors", errors={"draft_block": "The reply cannot be empty."})
            return
        refund = values.get("refund_block", {}).get("refund_input")
        await self._submit(
            ack,
            context,
            submitted,
            "draft_block",
            lambda actor: ReviewDecision(
                submitted["metadata"]["draft_id"], DecisionAction.EDIT, actor, edited_text=text, refund_amount=refund
            ),
        )

    async def submit_regenerate(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        submitted = wire.parse_view_submission(body)
        instruction = submitted["values"].get("instruction_block", {}).get("instruction_input")
        await self._submit(
            ack,
            context,
            submitted,
            "instruction_block",
            lambda actor: ReviewDecision(
                submitted["metadata"]["draft_id"], DecisionAction.REGENERATE, actor, instruction=instruction
            ),
        )

    async def _submit(
        self,
        ack: AsyncAck,
        context: AsyncBoltContext,
        submitted: wire.ViewSubmission,
        block: str,
        decision: Callable[[Actor], ReviewDecision],
    ) -> None:
        user = submitted["user"]["id"]
        outcome = await self._decide(user, submitted["metadata"]["draft_id"], decision)
        if outcome is None:
            await ack(response_action="errors", errors={block: COULD_NOT_RECORD_FORM})
            return
        await ack()
        meta = submitted["metadata"]
        self._leave_message(context, outcome, meta["channel"] or self._review_channel, user, meta["draft_id"], "")

    # -- errors -----------------------------------------------------------------------------

    async def on_error(self, error: Exception, body: Any) -> BoltResponse | None:
        """``app.error``: a request no listener takes (a reaction, a slash command, a click on
        another app's button) and a malformed payload are ignored with a 200, so Slack neither
        retries nor shows the user an error; anything else keeps Bolt's 500 (Slack retries an
        event) and is logged with what the request was about."""
        if isinstance(error, BoltUnhandledRequestError):
            self._log_ignored(kind_of(body))
            return BoltResponse(status=200, body="")
        if isinstance(error, wire.MalformedPayload):
            log.warning("ignored a malformed Slack %s: %s", describe(body), error.reason)
            return unreadable_form_answer(body) or BoltResponse(status=200, body="")
        log.error("handling a Slack %s failed: %s", describe(body), error, exc_info=error)
        return None

    def _log_ignored(self, kind: str) -> None:
        """Each kind is named at INFO the first time, at DEBUG after (a flood of reactions is
        one line, not thousands)."""
        if kind in self._ignored_kinds or len(self._ignored_kinds) >= IGNORED_KINDS_REMEMBERED:
            log.debug("ignored a Slack %s: the bot has no listener for it", kind)
            return
        self._ignored_kinds.add(kind)
        log.info("ignored a Slack %s: the bot has no listener for it (said once per kind)", kind)


def slack_error(error: SlackApiError) -> str:
    """Slack's error code (``expired_trigger_id``...), or the HTTP status when it sent none."""
    response = error.response
    return str(response.get("error") or f"HTTP {response.status_code}")


def unreadable_form_answer(body: Any) -> BoltResponse | None:
    """For one of our modals submitted malformed: ``response_action: errors`` on its input
    block, so the modal stays open and tells the agent, instead of closing as if the decision
    had been taken. None for anything else."""
    view = body.get("view") if isinstance(body, dict) and body.get("type") == "view_submission" else None
    callback_id = view.get("callback_id") if isinstance(view, dict) else None
    block = FORM_BLOCKS.get(callback_id) if isinstance(callback_id, str) else None
    if block is None:
        return None
    answer = {"response_action": "errors", "errors": {block: UNREADABLE_FORM}}
    return BoltResponse(status=200, body=json.dumps(answer), headers={"content-type": "application/json"})


def kind_of(body: Any) -> str:
    """What kind of request this is, for the log: ``reaction_added event``, ``slash command
    /deploy``, ``block_actions request (approve)``... Each name is cut short and kept on one
    line (another app's action id is whatever that app chose)."""
    if not isinstance(body, dict):
        return "request"
    kind = body.get("type")
    if kind == "event_callback":
        event = _object(body.get("event"))
        subtype = event.get("subtype")
        return f"{_name(event.get('type'))}{f'/{_name(subtype)}' if subtype else ''} event"
    if kind is None and body.get("command"):
        return f"slash command {_name(body['command'])}"
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    view = _object(body.get("view"))
    action = first.get("action_id") or body.get("callback_id") or view.get("callback_id")
    return f"{_name(kind)} request" + (f" ({_name(action)})" if action else "")


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(value: Any) -> str:
    """A name from a payload as one short line."""
    return " ".join(str(value).split())[:40] or "?"


def describe(body: Any) -> str:
    """A short, secret-free description of a request for the logs."""
    if not isinstance(body, dict):
        return "request"
    kind = str(body.get("type") or "request")
    if kind == "event_callback":
        event = body.get("event")
        event_type = event.get("type") if isinstance(event, dict) else None
        return f"event {body.get('event_id', '?')} ({event_type})"
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    return f"{kind} from {user_id or '?'}"
