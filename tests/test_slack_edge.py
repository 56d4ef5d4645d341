"""The Slack adapter's edge, as a contract against the fake Slack: what comes in malformed, clicks
decided before their ack, cards found again after a lost reference, who the author is, and
whether the connection is live. The core is a small in-test fake (``EdgeCore``): the core's
business rules are not what these tests are about."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.slack.platform import SlackPlatform
from adapters.slack.review import COULD_NOT_RECORD, COULD_NOT_RECORD_FORM, UNREADABLE_FORM
from adapters.slack.settings import SlackSettings
from bot import metrics
from bot.errors import (
    ConfigError,
    PlatformError,
    PlatformNotFound,
    PlatformRateLimited,
    PlatformRefused,
    PlatformUnavailable,
)
from bot.evaluation.simulator import LoopbackServer
from bot.events import InboundMessage, ReviewDecision, ThreadRef
from bot.ports import CardState, DecisionOutcome, EditForm, ReviewCard
from bot.settings import Settings
from tests.fakes.slack import EMAIL_SCOPES, FakeSlack
from tests.fakes.slack_payloads import (
    SlackSender,
    action_body,
    app_mention,
    block_actions,
    event_body,
    message,
    sign,
    view_submission,
)
from tests.fakes.socket_mode import SocketModeSlack, events_api_envelope
from tests.harness import REVIEW_CHANNEL, SIGNING_SECRET, SLACK_TOKEN, until

APP_TOKEN = "xapp-1-A111-edge-app-token"


class EdgeCore:
    """Just enough core: records what the adapter hands over; ``decide`` can fail or be held."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.received: list[InboundMessage] = []
        self.decisions: list[ReviewDecision] = []
        self.outcome = DecisionOutcome(ok=True)
        self.decide_error: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.decided_at: float | None = None
        self.receive_error: Exception | None = None

    async def receive(self, message: InboundMessage) -> bool:
        if self.receive_error is not None:
            raise self.receive_error
        if any(m.event_id == message.event_id for m in self.received):
            return False
        self.received.append(message)
        return True

    async def has_conversation(self, thread: ThreadRef) -> bool:
        return any(m.thread == thread for m in self.received)

    async def decide(self, decision: ReviewDecision) -> DecisionOutcome:
        self.decisions.append(decision)
        if self.gate is not None:
            await self.gate.wait()
        if self.decide_error is not None:
            raise self.decide_error
        self.decided_at = time.monotonic()
        return self.outcome

    async def edit_form(self, draft_id: str) -> EditForm | None:
        return EditForm(draft_id, "Your mug ships today.")


def slack_settings(slack: FakeSlack, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": SLACK_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": slack.base_url,
        "slack_review_channel": REVIEW_CHANNEL,
    }
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]


@dataclass
class Edge:
    platform: SlackPlatform
    core: EdgeCore
    slack: FakeSlack
    sender: SlackSender
    loop_errors: list[dict[str, Any]] = field(default_factory=list)

    async def post(self, body: str, content_type: str | None = None) -> Any:
        return await self.sender.raw(body, sign(body, SIGNING_SECRET, content_type=content_type))


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=SLACK_TOKEN) as fake:
        yield fake


@contextlib.asynccontextmanager
async def serving(slack: FakeSlack) -> AsyncIterator[Edge]:
    """The Slack adapter serving /slack/events on loopback, started on an EdgeCore. Any task
    exception left unretrieved fails the test."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    settings = slack_settings(slack)
    platform = SlackPlatform(settings)
    core = EdgeCore(settings)
    app = web.Application()
    app.add_routes(platform.routes())
    server = LoopbackServer(app, handler_cancellation=False)
    origin = await server.start()
    await platform.start(core)
    sender = SlackSender(f"{origin}/slack/events", SIGNING_SECRET, mirror_to=slack)
    try:
        yield Edge(platform, core, slack, sender, errors)
    finally:
        await platform.stop()
        await server.stop()
        gc.collect()
        loop.set_exception_handler(None)
    assert not errors, f"unobserved task failures: {errors}"


@pytest.fixture
async def edge(slack: FakeSlack) -> AsyncIterator[Edge]:
    async with serving(slack) as running:
        yield running


@pytest.fixture
async def email_edge(slack: FakeSlack) -> AsyncIterator[Edge]:
    """The same, in a workspace that installed the app from slack-manifest-email-match.yaml."""
    slack.scopes |= EMAIL_SCOPES
    async with serving(slack) as running:
        yield running


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def edge_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("adapters.slack") and r.levelno >= logging.WARNING
    ]


def sample_card(draft_id: str = "d-1") -> ReviewCard:
    return ReviewCard(
        draft_id=draft_id,
        state=CardState.AWAITING_REVIEW,
        asked_by="<@U222>",
        where="Slack · <#C111>",
        customer_text="Where is my order #W2611340?",
        draft_text="It ships today.",
    )


# ------------------------------------------------------------------------------------ malformed


def _event(**changes: Any) -> str:
    envelope = app_mention("<@UBOT> where is my order?")
    envelope["event"].update(changes)
    return event_body(envelope)


def _click_without_actions() -> str:
    payload = block_actions("approve_draft", "d-1")
    del payload["actions"]
    return action_body(payload)


def _click_without_draft_id() -> str:
    payload = block_actions("approve_draft", "d-1")
    del payload["actions"][0]["value"]
    return action_body(payload)


def _modal(metadata: str) -> str:
    return action_body(view_submission("edit_draft_modal", metadata, {"draft_block": {"draft_input": "hi"}}))


def _modal_view(**changes: Any) -> str:
    """A submitted edit modal whose ``view`` fields are replaced (``None`` removes one)."""
    payload = view_submission(
        "edit_draft_modal", json.dumps({"draft_id": "d-1"}), {"draft_block": {"draft_input": "hi"}}
    )
    for key, value in changes.items():
        if value is None:
            payload["view"].pop(key)
        else:
            payload["view"][key] = value
    return action_body(payload)


DEEP = 100_000  # nesting deeper than Python's recursion limit

MALFORMED = [
    pytest.param(_event(ts="not-a-number"), 200, "event.ts is not a number", id="ts-not-a-number"),
    pytest.param(_event(ts=1712345678.5), 200, "event.ts is a number", id="ts-a-json-number"),
    pytest.param(_event(files="report.pdf"), 200, "event.files is a string, not a list", id="files-not-a-list"),
    pytest.param(_event(files=["report.pdf"]), 200, "event.files[0] is a string", id="files-of-strings"),
    pytest.param(_event(thread_ts={"ts": "1"}), 200, "event.thread_ts", id="thread-ts-an-object"),
    pytest.param(_event(text=["hi"]), 200, "event.text", id="text-an-array"),
    pytest.param(
        event_body({**app_mention("x"), "event": "app_mention"}), 200, "event is a string", id="event-a-string"
    ),
    pytest.param(event_body({**app_mention("x"), "event": None}), 200, "event is null", id="event-null"),
    pytest.param(_click_without_actions(), 200, "actions is missing", id="click-without-actions"),
    pytest.param(_click_without_draft_id(), 200, "actions[0].value", id="click-without-a-draft-id"),
    pytest.param(_modal("not json"), 200, "private_metadata is not JSON", id="metadata-not-json"),
    pytest.param(_modal("[1, 2]"), 200, "private_metadata is a JSON array", id="metadata-an-array"),
    pytest.param(_modal_view(private_metadata=["d-1"]), 200, "private_metadata is an array", id="metadata-a-list"),
    pytest.param(_modal_view(private_metadata=None), 200, "private_metadata is missing", id="metadata-absent"),
    pytest.param(_modal('{"draft_id": 5}'), 200, "draft_id is a number", id="metadata-draft-id-a-number"),
    pytest.param(_modal("[" * DEEP + "]" * DEEP), 200, "private_metadata is not JSON", id="metadata-deeply-nested"),
    pytest.param(_modal_view(state={"values": [1]}), 200, "view.state.values is not an object", id="values-a-list"),
    pytest.param(_modal_view(state="full"), 200, "view.state is a string", id="state-a-string"),
    pytest.param(
        _modal_view(state={"values": {"draft_block": {"draft_input": {"value": 5}}}}),
        200,
        "draft_input.value is not text",
        id="value-a-number",
    ),
    pytest.param(
        '{"type": "event_callback", "event": ' + "[" * DEEP + "]" * DEEP + "}",
        400,
        "nested too deeply",
        id="body-deeply-nested",
    ),
    pytest.param("payload=" + "%5B" * DEEP + "%5D" * DEEP, 400, "nested too deeply", id="form-payload-deeply-nested"),
    pytest.param(
        event_body({**app_mention("x"), "authorizations": "T1"}), 200, "Bolt cannot read it", id="authorizations-text"
    ),
    pytest.param(
        action_body({**view_submission("edit_draft_modal", "{}", {}), "response_urls": 5}),
        200,
        "Bolt cannot read it",
        id="response-urls-a-number",
    ),
    pytest.param("[1, 2, 3]", 400, "a JSON array", id="body-a-json-array"),
    pytest.param("null", 400, "the body is JSON null", id="body-null"),
    pytest.param("hello", 400, "neither JSON nor a form", id="body-not-json"),
    pytest.param("payload=%5B%5D", 400, "payload is a JSON array", id="form-payload-an-array"),
]


@pytest.mark.parametrize(("body", "status", "reason"), MALFORMED)
async def test_a_signed_but_malformed_payload_is_answered_without_a_500_or_a_traceback(
    edge: Edge, caplog: pytest.LogCaptureFixture, body: str, status: int, reason: str
) -> None:
    caplog.set_level(logging.INFO)
    response = await edge.post(body)

    assert response.status_code == status, response.text
    assert not tracebacks(caplog), "no traceback in the logs"
    told = [w for w in edge_warnings(caplog) if reason in w]
    assert len(told) == 1, f"logged once, with the reason {reason!r}: {edge_warnings(caplog)}"
    assert not edge.core.received and not edge.core.decisions


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_modal_view(private_metadata=["d-1"]), id="metadata-a-list"),
        pytest.param(_modal_view(private_metadata=None), id="metadata-absent"),
        pytest.param(_modal("{not json"), id="metadata-not-json"),
    ],
)
async def test_our_modal_submitted_malformed_stays_open_and_says_so(edge: Edge, body: str) -> None:
    response = await edge.post(body)

    assert response.status_code == 200
    assert response.json() == {"response_action": "errors", "errors": {"draft_block": UNREADABLE_FORM}}
    assert not edge.core.decisions


async def test_a_forged_signature_stays_401_even_for_a_malformed_body(edge: Edge) -> None:
    for body in ("[1, 2]", _event(ts="nope")):
        response = await edge.sender.raw(body, sign(body, "not-the-secret", content_type="application/json"))
        assert response.status_code == 401
    stale = sign("null", SIGNING_SECRET, int(time.time()) - 600, "application/json")
    assert (await edge.sender.raw("null", stale)).status_code == 401
    for headers in ({}, {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"}):
        assert (await edge.sender.raw("{}", {"Content-Type": "application/json", **headers})).status_code == 401


async def test_a_well_formed_mention_still_reaches_the_core(edge: Edge) -> None:
    envelope = app_mention("<@UBOT> where is my order #W2611340?", thread_ts=None)
    response = await edge.sender.event(envelope)
    assert response.status_code == 200
    [received] = edge.core.received
    assert received.text == "where is my order #W2611340?"
    assert received.message_id == envelope["event"]["ts"]


async def test_bots_edits_and_the_review_channel_are_dropped_by_the_middleware(edge: Edge) -> None:
    ignored = [
        message("beep", bot_id="B999", subtype="bot_message"),
        message("hello", channel=REVIEW_CHANNEL, user="U333"),
        app_mention("<@UBOT> check 40021 for me", channel=REVIEW_CHANNEL, user="U333"),
        message("no user", user=None),
    ]
    for envelope in ignored:
        assert (await edge.sender.event(envelope)).status_code == 200
    assert not edge.core.received


def vendored(name: str) -> dict[str, Any]:
    """A real payload from the Slack SDKs' own tests (tests/payloads/README.md)."""
    return dict(json.loads((Path(__file__).parent / "payloads" / "slack" / f"{name}.json").read_text()))


async def test_requests_without_a_listener_are_answered_200_and_each_kind_named_once(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = view_submission("edit_draft_modal", json.dumps({"draft_id": "d-1"}), {}) | {"type": "view_closed"}
    slash = urllib.parse.urlencode(vendored("slash-command-1"))
    requests = [
        event_body(vendored("event-callback-reaction-added-1")),
        event_body(vendored("event-callback-reaction-added-2")),
        event_body(vendored("event-callback-app-home-opened-1")),
        action_body(vendored("shortcut-1")),
        action_body(vendored("block-actions-2")),  # another app's button
        action_body(closed),  # an agent closed our edit modal
    ]
    statuses = [(await edge.post(body)).status_code for body in requests]
    statuses.append((await edge.post(slash, "application/x-www-form-urlencoded")).status_code)

    assert statuses == [200] * 7
    named = [r.getMessage() for r in caplog.records if "no listener" in r.getMessage() and r.levelno == logging.INFO]
    assert len([m for m in named if "reaction_added event" in m]) == 1, named
    assert any("slash command /hello-world" in m for m in named), named
    assert any("view_closed request (edit_draft_modal)" in m for m in named), named
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "no warning, no traceback"
    assert not edge.core.received and not edge.core.decisions and not edge.slack.calls_to("chat.postMessage")


async def test_slack_saying_it_dropped_a_minute_of_events_is_a_warning_and_a_metric(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    # What Slack sends once a workspace passed 30,000 events in an hour (api.slack.com/apis/events-api,
    # "Rate limiting"): the events of the rest of that minute are never delivered.
    def dropped() -> float:
        return metrics.REGISTRY.get_sample_value("supportbot_platform_events_dropped_total", {"platform": "slack"}) or 0

    before = dropped()
    body = {
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "type": "app_rate_limited",
        "team_id": "T111",
        "minute_rate_limited": 1518467820,
        "api_app_id": "A111",
    }
    assert (await edge.post(json.dumps(body))).status_code == 200

    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "workspace T111 from 2018-02-12 20:37 UTC" in warning and "never reached the bot" in warning
    assert dropped() == before + 1
    assert not edge.core.received


async def test_a_handled_event_the_core_cannot_store_is_still_a_500_so_slack_retries(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    edge.core.receive_error = RuntimeError("the database is down")
    response = await edge.sender.event(app_mention("<@UBOT> where is my order #W2611340?"))
    assert response.status_code == 500
    assert any("the database is down" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


# ---------------------------------------------------------------------------------------- clicks


async def test_an_approval_is_decided_before_its_ack_and_the_outcome_told_after(edge: Edge) -> None:
    # The core takes 0.3 s to decide: Slack's request must be answered only after that.
    edge.core.gate = asyncio.Event()
    edge.core.outcome = DecisionOutcome(ok=False, message="Already approved by <@U444>.")
    click = asyncio.create_task(edge.sender.action(block_actions("approve_draft", "d-7", user="U333")))
    await until(lambda: len(edge.core.decisions) == 1, what="the decision to reach the core")
    asyncio.get_running_loop().call_later(0.3, edge.core.gate.set)
    response = await click
    answered_at = time.monotonic()
    assert response.status_code == 200
    assert edge.core.decided_at is not None and answered_at >= edge.core.decided_at, "acked after the decision"

    [decision] = edge.core.decisions
    assert (decision.draft_id, decision.action.value, decision.actor.id) == ("d-7", "approve", "U333")
    [told] = await edge.slack.wait_for("chat.postEphemeral")
    assert told.params["user"] == "U333" and told.params["text"] == "Already approved by <@U444>."
    assert told.params["channel"] == REVIEW_CHANNEL


async def test_a_click_whose_decision_cannot_be_recorded_tells_the_clicker_at_once(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    edge.core.decide_error = RuntimeError("database is locked")
    response = await edge.sender.action(block_actions("reject_draft", "d-8", user="U333"))
    assert response.status_code == 200

    [told] = await edge.slack.wait_for("chat.postEphemeral")
    assert (told.params["user"], told.params["text"]) == ("U333", COULD_NOT_RECORD)
    assert not edge.slack.calls_to("chat.update"), "the card is left as it is"
    failure = [r for r in caplog.records if "could not be recorded" in r.getMessage()]
    assert failure and "d-8" in failure[0].getMessage() and "U333" in failure[0].getMessage()


async def test_a_decision_that_takes_too_long_is_acked_in_time_and_the_clicker_told(edge: Edge) -> None:
    edge.core.gate = asyncio.Event()  # never set: the database hangs
    started = time.monotonic()
    response = await edge.sender.action(block_actions("approve_draft", "d-9", user="U333"))
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 3.0, f"acked within Slack's 3 s (took {elapsed:.2f} s)"
    [told] = await edge.slack.wait_for("chat.postEphemeral")
    assert told.params["text"] == COULD_NOT_RECORD


async def test_a_modal_whose_decision_cannot_be_recorded_stays_open_and_says_why(edge: Edge) -> None:
    edge.core.decide_error = RuntimeError("database is locked")
    payload = view_submission(
        "edit_draft_modal",
        json.dumps({"draft_id": "d-10", "channel": REVIEW_CHANNEL}),
        {"draft_block": {"draft_input": "Your mug ships today."}},
    )
    response = await edge.sender.action(payload)
    assert response.status_code == 200
    assert response.json() == {"response_action": "errors", "errors": {"draft_block": COULD_NOT_RECORD_FORM}}
    [decision] = edge.core.decisions
    assert decision.edited_text == "Your mug ships today."


async def test_a_failing_ephemeral_after_the_ack_is_logged_with_its_context(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    edge.core.outcome = DecisionOutcome(ok=False, message="Only managers may approve this.")
    edge.slack.fail_next("chat.postEphemeral", error="channel_not_found")
    assert (await edge.sender.action(block_actions("approve_draft", "d-11", user="U333"))).status_code == 200
    await edge.slack.wait_for("chat.postEphemeral")
    await until(lambda: any("could not tell" in r.getMessage() for r in caplog.records), what="the failure log")
    [logged] = [r.getMessage() for r in caplog.records if "could not tell" in r.getMessage()]
    assert "U333" in logged and "d-11" in logged and "channel_not_found" in logged


async def test_stop_waits_for_an_outcome_still_on_its_way(edge: Edge) -> None:
    # Slack rate-limits the ephemeral once (Retry-After: 1 s); the bot is stopped meanwhile.
    edge.core.outcome = DecisionOutcome(ok=False, message="Already rejected by <@U444>.")
    edge.slack.fail_next("chat.postEphemeral", status=429, retry_after=1)
    assert (await edge.sender.action(block_actions("approve_draft", "d-13", user="U333"))).status_code == 200
    await edge.platform.stop()
    assert [c.status for c in edge.slack.calls_to("chat.postEphemeral")] == [429, 200], "told before stopping"


async def test_edit_opens_the_modal_after_the_ack(edge: Edge) -> None:
    response = await edge.sender.action(block_actions("edit_draft", "d-12", user="U333"))
    assert response.status_code == 200
    [opened] = await edge.slack.wait_for("views.open")
    view = opened.params["view"]
    assert view["callback_id"] == "edit_draft_modal"
    assert json.loads(view["private_metadata"])["draft_id"] == "d-12"


async def test_an_expired_trigger_on_edit_is_one_warning_with_slacks_word(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    edge.slack.fail_next("views.open", error="expired_trigger_id")
    response = await edge.sender.action(block_actions("edit_draft", "d-13", user="U333"))
    assert response.status_code == 200
    await edge.slack.wait_for("views.open")
    await edge.platform.stop()  # waits for the lazy listener that tried
    assert not tracebacks(caplog)
    assert [w for w in edge_warnings(caplog) if "expired_trigger_id" in w] == [
        "could not open the edit form of draft d-13 for U333: expired_trigger_id"
    ]


# ----------------------------------------------------------------------------------------- cards


async def test_a_card_whose_reference_was_lost_is_found_by_its_key(edge: Edge) -> None:
    desk = edge.platform.review_desk
    assert desk is not None
    ref = await desk.post_card(sample_card("d-20"), idempotency_key="card:d-20")
    [post] = edge.slack.calls_to("chat.postMessage")
    assert post.params["metadata"] == {"event_type": "supportbot_card", "event_payload": {"key": "card:d-20"}}

    # The bot crashed before keeping ``ref``; since then the channel moved on by 150 messages.
    for index in range(150):
        edge.slack.add_message(REVIEW_CHANNEL, f"chatter {index}", user="U333")
    restarted = SlackPlatform(slack_settings(edge.slack))
    try:
        await restarted.start(edge.core)
        assert restarted.review_desk is not None
        assert await restarted.review_desk.find_card("card:d-20") == ref
        assert await restarted.review_desk.find_card("card:d-21") is None
    finally:
        await restarted.stop()
    histories = edge.slack.calls_to("conversations.history")
    assert all(c.params.get("include_all_metadata") in (True, "true", "1") for c in histories)
    assert all(c.params["channel"] == REVIEW_CHANNEL for c in histories)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"error": "channel_not_found"}, PlatformNotFound),
        ({"error": "not_in_channel"}, PlatformRefused),
        ({"status": 500, "times": 3}, PlatformUnavailable),  # past slack_sdk's two retries
        ({"status": 429, "times": 4}, PlatformRateLimited),  # past slack_sdk's three retries
    ],
)
async def test_slacks_refusals_reach_the_core_as_the_ports_errors(
    edge: Edge, fault: dict[str, Any], error: type[PlatformError]
) -> None:
    desk = edge.platform.review_desk
    assert desk is not None
    edge.slack.fail_next("chat.postMessage", **fault)
    with pytest.raises(error) as raised:
        await desk.post_card(sample_card("d-40"), idempotency_key="card:d-40")
    assert isinstance(raised.value, PlatformError) and raised.value.platform == "Slack"
    assert await desk.post_card(sample_card("d-40"), idempotency_key="card:d-40")  # the core's retry lands


async def test_a_card_slack_no_longer_has_is_not_found(edge: Edge) -> None:
    desk = edge.platform.review_desk
    assert desk is not None
    with pytest.raises(PlatformNotFound, match="message_not_found"):
        await desk.update_card(f"{REVIEW_CHANNEL}:1.000001", sample_card("d-41"))


# ------------------------------------------------------------------------------------------ e-mail


async def test_the_profile_email_reaches_the_author_and_is_cached(email_edge: Edge) -> None:
    edge = email_edge
    await edge.sender.event(app_mention("<@UBOT> where is my order?", user="U222"))
    await edge.sender.event(app_mention("<@UBOT> and the second one?", user="U222"))
    first, second = edge.core.received
    assert first.author.email == second.author.email == "carol@customer.example"
    assert len(edge.slack.calls_to("users.info")) == 1, "one users.info per user while cached"


async def test_a_profile_without_an_email_leaves_it_empty_and_that_is_logged_once(
    email_edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    edge = email_edge
    edge.slack.scopes.discard("users:read.email")  # the scope went away after start: no profile.email
    await edge.sender.event(app_mention("<@UBOT> hi", user="U222"))
    await edge.sender.event(app_mention("<@UBOT> hi", user="U333"))
    assert [m.author.email for m in edge.core.received] == ["", ""]
    told = [r.getMessage() for r in caplog.records if "users:read.email" in r.getMessage()]
    assert len(told) == 1, told
    assert "slack-manifest-email-match.yaml" in told[0]


def _bot_scopes(path: str) -> list[str]:
    lines = (Path(__file__).parent.parent / path).read_text().splitlines()
    start = lines.index("    bot:") + 1
    scopes = []
    for line in lines[start:]:
        if not line.startswith("      - "):
            break
        scopes.append(line.split("#")[0].strip()[2:].strip())
    return scopes


def test_only_the_email_match_manifest_asks_for_the_email_scope() -> None:
    base = _bot_scopes("deploy/slack-manifest.yaml")
    assert base == _bot_scopes("deploy/slack-manifest-socket-mode.yaml")
    assert "users:read.email" not in base
    assert _bot_scopes("deploy/slack-manifest-email-match.yaml") == [*base, "users:read", "users:read.email"]


async def test_a_token_without_the_email_scope_never_asks_users_info(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert not slack.scopes & EMAIL_SCOPES, "installed from the default manifest"
    async with serving(slack) as edge:
        for user in ("U222", "U333"):
            assert (await edge.sender.event(app_mention("<@UBOT> hi", user=user))).status_code == 200
    assert [m.author.email for m in edge.core.received] == ["", ""]
    assert not slack.calls_to("users.info")
    assert len([r for r in caplog.records if "users:read.email" in r.getMessage()]) == 1


async def test_a_missing_scope_error_leaves_the_email_empty(email_edge: Edge) -> None:
    edge = email_edge
    edge.slack.scopes.discard("users:read")
    assert (await edge.sender.event(app_mention("<@UBOT> hi", user="U222"))).status_code == 200
    [received] = edge.core.received
    assert received.author.email == ""


# ------------------------------------------------------------------------------------- connected


async def test_http_mode_is_connected_between_start_and_stop(slack: FakeSlack) -> None:
    settings = slack_settings(slack)
    platform = SlackPlatform(settings)
    assert not platform.connected
    await platform.start(EdgeCore(settings))
    assert platform.connected
    await platform.stop()
    assert not platform.connected


@pytest.fixture
async def socket_slack() -> AsyncIterator[SocketModeSlack]:
    async with SocketModeSlack(bot_token=SLACK_TOKEN, app_token=APP_TOKEN) as fake:
        yield fake


async def test_a_dropped_socket_is_not_connected_and_reconnect_brings_it_back(socket_slack: SocketModeSlack) -> None:
    settings = slack_settings(socket_slack, slack_app_token=APP_TOKEN, slack_signing_secret=None)
    platform = SlackPlatform(settings)
    core = EdgeCore(settings)
    await platform.start(core)
    try:
        await socket_slack.wait_connected()
        assert platform.connected

        # Slack goes away and will not hand out a new socket URL for now.
        socket_slack.fail_next("apps.connections.open", error="internal_error", times=1000)
        await socket_slack.drop_connections()
        await until(lambda: not platform.connected, what="the adapter to notice the dead socket")

        socket_slack.clear_faults()
        await platform.reconnect()
        assert platform.connected
        envelope_id = await socket_slack.send_event(app_mention("<@UBOT> are you back?"))
        await socket_slack.wait_ack(envelope_id)
        assert [m.text for m in core.received] == ["are you back?"]
    finally:
        await platform.stop()


async def test_a_malformed_envelope_over_the_socket_is_acked_and_ignored(
    socket_slack: SocketModeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = slack_settings(socket_slack, slack_app_token=APP_TOKEN, slack_signing_secret=None)
    platform = SlackPlatform(settings)
    core = EdgeCore(settings)
    await platform.start(core)
    try:
        await socket_slack.wait_connected()
        bad = {**app_mention("<@UBOT> hi"), "event": ["not", "an", "object"]}
        envelope_id = await socket_slack.send(events_api_envelope(bad))
        await socket_slack.wait_ack(envelope_id)
        late_ts = app_mention("<@UBOT> hi")
        late_ts["event"]["ts"] = "yesterday"
        envelope_id = await socket_slack.send(events_api_envelope(late_ts))
        await socket_slack.wait_ack(envelope_id)
        unreadable = {**app_mention("<@UBOT> hi"), "authorizations": 7}  # Bolt takes len() of it
        envelope_id = await socket_slack.send(events_api_envelope(unreadable))
        await socket_slack.wait_ack(envelope_id)
    finally:
        await platform.stop()
    assert not core.received
    assert not tracebacks(caplog)
    warned = edge_warnings(caplog)
    assert any("event is an array, not an object" in w for w in warned), warned
    assert any("event.ts is not a number" in w for w in warned), warned
    assert any("Bolt cannot read it (TypeError" in w for w in warned), warned


# -------------------------------------------------------------------------------------- settings


def test_the_adapter_settings_come_from_the_same_variables() -> None:
    assert SlackSettings.from_settings(Settings(_env_file=None)) is None  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET, SLACK_REVIEW_CHANNEL"):
        SlackSettings.from_settings(Settings(_env_file=None, slack_bot_token="xoxb-1"))  # type: ignore[call-arg]
    socket = SlackSettings.from_settings(
        Settings(_env_file=None, slack_bot_token="xoxb-1", slack_app_token="xapp-1", slack_review_channel="C9")  # type: ignore[call-arg]
    )
    assert socket is not None and socket.socket_mode and socket.signing_secret is None
    assert socket.review_channel == "C9" and socket.api_url == "https://slack.com/api/"
    assert "xoxb-1" not in repr(socket), "secrets never show"
