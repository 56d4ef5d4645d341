"""The fakes behave as the reference notes say (kimi-api.md, slack.md)."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.evaluation.simulator import LoopbackServer
from tests.fakes import CallTools, Fail, FakeKimi, FakeSlack, Hang, Malformed, Reply, SlackSender
from tests.fakes import slack_payloads as sp
from tests.fakes.kimi import find_order_id

ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order_status",
        "description": "Look up an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


# ------------------------------------------------------------------------------------------------ Kimi


@pytest.fixture
async def kimi() -> AsyncIterator[FakeKimi]:
    async with FakeKimi(api_key="sk-test") as fake:
        yield fake


@pytest.fixture
async def http(kimi: FakeKimi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=kimi.base_url, headers={"Authorization": "Bearer sk-test"}) as client:
        yield client


async def chat(http: httpx.AsyncClient, **body: Any) -> httpx.Response:
    body.setdefault("model", "kimi-k2.5")
    return await http.post("/chat/completions", json=body)


def error_of(resp: httpx.Response) -> tuple[int, str, str]:
    err = resp.json()["error"]
    return resp.status_code, err["type"], err["message"]


async def test_kimi_auth_models_and_request_id(kimi: FakeKimi, http: httpx.AsyncClient) -> None:
    assert kimi.base_url.startswith("http://127.0.0.1:") and kimi.base_url.endswith("/v1")
    async with httpx.AsyncClient() as anon:
        resp = await anon.get(f"{kimi.base_url}/models", headers={"Authorization": "Bearer sk-wrong"})
    assert resp.status_code == 401
    assert resp.json() == {"error": {"message": "Invalid Authentication", "type": "invalid_authentication_error"}}
    assert resp.headers["Msh-Request-Id"]
    models = (await http.get("/models")).json()
    by_id = {m["id"]: m for m in models["data"]}
    assert {"kimi-k2.5", "kimi-k2.6", "kimi-k2-turbo-preview", "moonshot-v1-8k", "moonshot-v1-32k"} <= set(by_id)
    assert by_id["kimi-k2.5"]["context_length"] == 262144
    resp = await chat(http, model="moonshot-v1-16k", messages=[{"role": "user", "content": "hi"}])
    assert error_of(resp) == (
        404,
        "resource_not_found_error",
        "Not found the model moonshot-v1-16k or Permission denied",
    )
    assert resp.headers["Msh-Request-Id"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"temperature": 0.7}, "invalid temperature: only 1 is allowed for this model"),
        (
            {"temperature": 1, "thinking": {"type": "disabled"}},
            "invalid temperature: only 0.6 is allowed for this model",
        ),
        ({"top_p": 1.0}, "invalid top_p: only 0.95 is allowed for this model"),
        ({"n": 2}, "invalid n: only 1 is allowed for this model"),
        ({"presence_penalty": 0.5}, "invalid presence_penalty: only 0 is allowed for this model"),
        (
            {"tools": [ORDER_TOOL], "tool_choice": "required"},
            "tool_choice 'required' is incompatible with thinking enabled",
        ),
    ],
)
async def test_kimi_k25_fixed_sampling(http: httpx.AsyncClient, extra: dict[str, Any], message: str) -> None:
    resp = await chat(http, messages=[{"role": "user", "content": "hi"}], **extra)
    assert error_of(resp) == (400, "invalid_request_error", message)


async def test_kimi_k25_accepts_the_fixed_values(http: httpx.AsyncClient) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    assert (await chat(http, messages=msgs, temperature=1.0, top_p=0.95, n=1)).status_code == 200
    resp = await chat(http, messages=msgs, temperature=0.6, thinking={"type": "disabled"})
    assert resp.status_code == 200
    assert "reasoning_content" not in resp.json()["choices"][0]["message"]


async def test_kimi_message_rules(http: httpx.AsyncClient) -> None:
    call = {
        "id": "functions.get_order_status:0",
        "type": "function",
        "function": {"name": "get_order_status", "arguments": "{}"},
    }
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "You are support."},
        {"role": "user", "content": "where is #W2611340?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "name": "get_order_status", "content": "shipped"},
    ]
    missing = "thinking is enabled but reasoning_content is missing in assistant tool call message at index 2"
    resp = await chat(http, messages=history, tools=[ORDER_TOOL])
    assert error_of(resp) == (400, "invalid_request_error", missing)
    history[2]["reasoning_content"] = ""
    assert error_of(await chat(http, messages=history, tools=[ORDER_TOOL]))[2] == missing
    resp = await chat(http, messages=history, tools=[ORDER_TOOL], thinking={"type": "disabled"})
    assert resp.status_code == 200
    history[2]["reasoning_content"] = "look it up"
    assert (await chat(http, messages=history, tools=[ORDER_TOOL])).status_code == 200
    # tool results must match calls one-to-one; repeated call ids are rejected
    resp = await chat(http, messages=history[:3], tools=[ORDER_TOOL])
    assert resp.status_code == 400 and call["id"] in resp.json()["error"]["message"]
    dup = [
        *history,
        {"role": "assistant", "content": "", "reasoning_content": "x", "tool_calls": [call]},
        history[3],
    ]
    resp = await chat(http, messages=dup, tools=[ORDER_TOOL])
    assert error_of(resp)[2] == f"Invalid request: tool call id {call['id']} is duplicated"
    # empty assistant message, empty text parts, duplicated tool names, bad tool names
    empty = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "?"},
    ]
    assert error_of(await chat(http, messages=empty))[2] == (
        "Invalid request: the message at position 1 with role 'assistant' must not be empty"
    )
    parts = [{"role": "user", "content": [{"type": "text", "text": ""}]}]
    assert error_of(await chat(http, messages=parts))[2] == "Invalid request: text content is empty"
    resp = await chat(http, messages=[{"role": "user", "content": "hi"}], tools=[ORDER_TOOL, ORDER_TOOL])
    assert "get_order_status is duplicated" in error_of(resp)[2]
    bad = {"type": "function", "function": {"name": "9bad name", "parameters": {"type": "object"}}}
    assert (await chat(http, messages=[{"role": "user", "content": "hi"}], tools=[bad])).status_code == 400
    too_many = [{"type": "function", "function": {"name": f"tool_{i}"}} for i in range(129)]
    assert (await chat(http, messages=[{"role": "user", "content": "hi"}], tools=too_many)).status_code == 400


async def test_kimi_brain_calls_the_order_tool_then_answers(kimi: FakeKimi, http: httpx.AsyncClient) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "where is order #W2611340?"}]
    resp = await chat(http, messages=messages, tools=[ORDER_TOOL])
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 24
    assert body["system_fingerprint"].startswith("fpv0_") and body["model"] == "kimi-k2.5"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] == "" and msg["reasoning_content"]
    [call] = msg["tool_calls"]
    assert call["id"] == "functions.get_order_status:0"
    assert json.loads(call["function"]["arguments"]) == {"order_id": "#W2611340"}
    messages += [
        msg,
        {
            "role": "tool",
            "tool_call_id": call["id"],
            "name": "get_order_status",
            "content": '{"status":"shipped"}',
        },
    ]
    final = (await chat(http, messages=messages, tools=[ORDER_TOOL])).json()["choices"][0]
    assert final["finish_reason"] == "stop"
    assert '{"status":"shipped"}' in final["message"]["content"]
    assert final["message"]["reasoning_content"]
    plain = await chat(http, messages=[{"role": "user", "content": "my invoice is wrong"}])
    assert "my invoice is wrong" in plain.json()["choices"][0]["message"]["content"]
    assert len(kimi.completions) == 3
    assert [find_order_id(t) for t in ("order 40021.", "ORD-77 please", "<@U0123ABC> hi", "#W1 x")] == [
        "40021",
        "ORD-77",
        None,
        None,
    ]


async def test_kimi_cached_tokens_grow_with_a_shared_prefix(http: httpx.AsyncClient) -> None:
    system = {"role": "system", "content": "You are a helpful support agent. " * 200}
    messages = [system, {"role": "user", "content": "hi"}]
    first = (await chat(http, messages=messages)).json()["usage"]
    assert first["cached_tokens"] == 0
    assert first["total_tokens"] == first["prompt_tokens"] + first["completion_tokens"]
    messages += [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "more " * 800}]
    second = (await chat(http, messages=messages)).json()["usage"]
    assert second["cached_tokens"] > 0 and second["cached_tokens"] % 256 == 0
    messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "thanks"}]
    third = (await chat(http, messages=messages)).json()["usage"]
    assert third["cached_tokens"] > second["cached_tokens"]
    v1 = (await chat(http, model="moonshot-v1-32k", messages=messages)).json()["usage"]
    assert "cached_tokens" not in v1
    estimate = await http.post("/tokenizers/estimate-token-count", json={"model": "kimi-k2.5", "messages": messages})
    assert estimate.json() == {"data": {"total_tokens": third["prompt_tokens"]}}


async def test_kimi_script_and_outages(kimi: FakeKimi, http: httpx.AsyncClient) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    kimi.script(
        Fail.rate_limited(after=1),
        Reply("scripted"),
        CallTools([("get_order_status", '{"order_id": ')]),
        Malformed(),
    )
    resp = await chat(http, messages=msgs, tools=[ORDER_TOOL])
    assert resp.status_code == 429
    assert resp.json()["error"]["type"] == "rate_limit_reached_error"
    assert resp.json()["error"]["message"].endswith(
        "request reached organization max RPM: 3, please try again after 1 seconds"
    )
    assert (await chat(http, messages=msgs, tools=[ORDER_TOOL])).json()["choices"][0]["message"][
        "content"
    ] == "scripted"
    call = (await chat(http, messages=msgs, tools=[ORDER_TOOL])).json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["arguments"] == '{"order_id": '
    resp = await chat(http, messages=msgs)
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()
    assert kimi.pending == []
    kimi.fail_always(429, "engine_overloaded_error", "The engine is currently overloaded, please try again later")
    assert (await chat(http, messages=msgs)).status_code == 429
    kimi.recover()
    assert (await chat(http, messages=msgs)).status_code == 200
    kimi.script(Hang(0.5))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/chat/completions", json={"model": "kimi-k2.5", "messages": msgs}, timeout=0.1)
    assert time.monotonic() - started < 0.4
    assert [r.status for r in kimi.requests if r.path == "/v1/chat/completions"][:2] == [429, 200]


async def test_kimi_streaming_wire_format(http: httpx.AsyncClient) -> None:
    body = {
        "model": "kimi-k2.5",
        "messages": [{"role": "user", "content": "status of ORD-77?"}],
        "tools": [ORDER_TOOL],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resp = await http.post("/chat/completions", json=body)
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["Msh-Request-Id"]
    events = [line[len("data: ") :] for line in resp.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas)
    fragments = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert fragments[0]["id"] == "functions.get_order_status:0" and fragments[0]["function"]["arguments"] == ""
    args = "".join(f["function"]["arguments"] for f in fragments)
    assert json.loads(args) == {"order_id": "ORD-77"}
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] == "tool_calls" and finish["delta"] == {}
    assert finish["usage"]["total_tokens"] > 0
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == finish["usage"]


# ------------------------------------------------------------------------------------------------ Slack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token="xoxb-test") as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=slack.base_url)


async def test_slack_sdk_round_trip_with_metadata(slack: FakeSlack, client: AsyncWebClient) -> None:
    auth = await client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == ("UBOT", "BBOT", "T111")
    root = slack.add_message("C111", "My invoice is wrong", user="U222")
    meta = {"event_type": "draft", "event_payload": {"draft_id": "d-1"}}
    posted = await client.chat_postMessage(channel="C111", thread_ts=root["ts"], text="On it", metadata=meta)
    assert float(posted["ts"]) > float(root["ts"])
    assert posted["message"]["metadata"] == meta and posted["message"]["bot_id"] == "BBOT"
    second = await client.chat_postMessage(channel="C111", text="x")
    assert float(second["ts"]) > float(posted["ts"])
    replies = await client.conversations_replies(channel="C111", ts=root["ts"], include_all_metadata=True)
    assert [m["text"] for m in replies["messages"]] == ["My invoice is wrong", "On it"]
    assert replies["messages"][0]["reply_count"] == 1
    assert replies["messages"][1]["metadata"] == meta
    plain = await client.conversations_replies(channel="C111", ts=root["ts"])
    assert "metadata" not in plain["messages"][1]
    call = slack.calls_to("conversations.replies")[0]
    assert call.http_method == "GET" and call.params["include_all_metadata"] == "1"
    assert slack.calls_to("chat.postMessage")[0].headers["Authorization"] == "Bearer xoxb-test"


async def test_slack_validation_errors(slack: FakeSlack, client: AsyncWebClient) -> None:
    async def error(coro: Any) -> str:
        with pytest.raises(SlackApiError) as info:
            await coro
        return str(info.value.response["error"])

    section = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    assert await error(client.chat_postMessage(channel="C111", text="t", blocks=section)) == "invalid_blocks"
    assert slack.calls_to("chat.postMessage")[0].response["response_metadata"]["messages"]  # type: ignore[index]
    button = {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "b" * 76}}
    actions = [{"type": "actions", "elements": [button]}]
    assert await error(client.chat_postMessage(channel="C111", text="t", blocks=actions)) == "invalid_blocks"
    assert await error(client.chat_postMessage(channel="C111", text="t", blocks=[{"type": "nope"}])) == "invalid_blocks"
    many = [{"type": "divider"}] * 51
    assert await error(client.chat_postMessage(channel="C111", text="t", blocks=many)) == "invalid_blocks"
    assert await error(client.chat_postMessage(channel="C111", text="x" * 40_001)) == "msg_too_long"
    assert await error(client.chat_postMessage(channel="", text="x")) == "channel_not_found"
    assert await error(client.chat_update(channel="C111", ts="1.000001", text="x")) == "message_not_found"
    big = {"event_type": "draft", "event_payload": {"blob": "x" * 4000}}
    resp = await client.chat_postMessage(channel="C111", text="t", metadata=big)
    assert resp["warning"] == "metadata_too_large" and "metadata" not in resp["message"]
    slack.strict_metadata = True
    assert await error(client.chat_postMessage(channel="C111", text="t", metadata=big)) == "metadata_too_large"
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "An edit title that is too long"},
        "submit": {"type": "plain_text", "text": "Send"},
        "blocks": [],
    }
    assert await error(client.views_open(trigger_id="t.1", view=view)) == "invalid_arguments"
    view["title"] = {"type": "plain_text", "text": "Edit draft"}
    view["blocks"] = [
        {
            "type": "input",
            "block_id": "draft_block",
            "label": {"type": "plain_text", "text": "Reply"},
            "element": {
                "type": "plain_text_input",
                "action_id": "draft_input",
                "max_length": 10,
                "initial_value": "x" * 11,
            },
        }
    ]
    assert await error(client.views_open(trigger_id="t.1", view=view)) == "invalid_arguments"
    view["blocks"][0]["element"]["initial_value"] = "ok"  # type: ignore[index]
    opened = await client.views_open(trigger_id="t.1", view=view)
    assert opened["view"]["id"] in slack.views
    assert await error(AsyncWebClient(token="xoxb-other", base_url=slack.base_url).auth_test()) == "invalid_auth"
    assert await error(client.api_call("nope.nope")) == "unknown_method"


async def test_slack_faults_updates_reactions_and_webhooks(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="C111", text="hi")
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "1"
    assert info.value.response["error"] == "ratelimited"
    slack.fail_next("chat.postMessage", error="channel_not_found", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError):
            await client.chat_postMessage(channel="C111", text="hi")
    posted = await client.chat_postMessage(channel="C999", text="draft", blocks=[{"type": "divider"}])
    updated = await client.chat_update(channel="C999", ts=posted["ts"], text="approved", blocks=[])
    assert updated["message"]["text"] == "approved" and "blocks" not in updated["message"]
    assert slack.messages_in("C999")[0]["text"] == "approved"
    customer = slack.add_message("C111", "help")
    await client.reactions_add(channel="C111", timestamp=customer["ts"], name="eyes")
    assert slack.calls_to("reactions.add")[0].headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    with pytest.raises(SlackApiError, match="already_reacted"):
        await client.reactions_add(channel="C111", timestamp=customer["ts"], name="eyes")
    slack.usergroups = {"S123": ["U1"]}
    assert (await client.usergroups_users_list(usergroup="S123"))["users"] == ["U1"]
    with pytest.raises(SlackApiError, match="missing_scope"):  # the default manifest has no users:read
        await client.users_info(user="U333")
    slack.scopes |= {"users:read", "users:read.email"}  # installed from slack-manifest-email-match.yaml
    assert (await client.users_info(user="U333"))["user"]["profile"]["email"] == "alice@support.example"
    calls = await slack.wait_for("chat.postMessage", count=2, where=lambda p: p["channel"] == "C111")
    assert len(calls) == 3 and not any(c.ok for c in calls)
    webhook = AsyncWebhookClient(slack.response_url("card"))
    await webhook.send(text="done", replace_original=True)
    [post] = await slack.wait_for_webhook("card")
    assert post.body == {"text": "done", "replace_original": True}


# ------------------------------------------------------------------------------------------------ payloads


def test_sign_matches_slack_known_answer_and_verifier() -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    body = (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = sp.sign(body, secret, 1531420618)
    assert headers["X-Slack-Signature"] == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    fresh = sp.event_body(sp.app_mention("<@UBOT> hi"))
    h = sp.sign(fresh, "s3cret")
    assert h["Content-Type"] == "application/json"
    assert SignatureVerifier("s3cret").is_valid(fresh, h["X-Slack-Request-Timestamp"], h["X-Slack-Signature"])
    payload = sp.block_actions("approve_draft", "d-1")
    raw = sp.action_body(payload)
    assert sp.sign(raw, "s")["Content-Type"] == "application/x-www-form-urlencoded"
    assert json.loads(urllib.parse.parse_qs(raw)["payload"][0]) == payload


async def test_sender_drives_a_real_bolt_app(slack: FakeSlack) -> None:
    app = AsyncApp(
        token="xoxb-test",
        signing_secret="s3cret",
        client=AsyncWebClient(token="xoxb-test", base_url=slack.base_url),
    )
    seen: dict[str, Any] = {}

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        await say(text="got it", thread_ts=event["ts"])

    @app.action("approve_draft")
    async def on_approve(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        await respond(text="approved")

    @app.view("edit_draft_modal")
    async def on_submit(ack: Any, view: dict[str, Any]) -> None:
        seen["value"] = view["state"]["values"]["draft_block"]["draft_input"]["value"]
        seen["meta"] = view["private_metadata"]
        await ack()

    server = LoopbackServer(app.web_app(), handler_cancellation=False)
    url = await server.start() + "/slack/events"
    try:
        sender = SlackSender(url, "s3cret", mirror_to=slack)
        challenge = await sender.event(sp.url_verification("abc"))
        assert challenge.json() == {"challenge": "abc"}
        mention = sp.app_mention("<@UBOT> where is order #W2611340?")
        assert (await sender.event(mention)).status_code == 200
        [call] = await slack.wait_for("chat.postMessage")
        assert call.params["thread_ts"] == mention["event"]["ts"]
        thread = slack.messages_in("C111", mention["event"]["ts"])
        assert [m["text"] for m in thread] == [mention["event"]["text"], "got it"]
        click = sp.block_actions("approve_draft", "d-1", response_url=slack.response_url("click"))
        assert (await sender.action(click)).status_code == 200
        [post] = await slack.wait_for_webhook("click")
        assert post.body["text"] == "approved"
        submit = sp.view_submission(
            "edit_draft_modal", '{"draft_id":"d-1"}', {"draft_block": {"draft_input": "Edited"}}
        )
        assert (await sender.action(submit)).status_code == 200
        assert seen == {"value": "Edited", "meta": '{"draft_id":"d-1"}'}
        stale = await sender.event(sp.app_mention("hi"), timestamp=int(time.time()) - 301)
        assert stale.status_code == 401
    finally:
        await server.stop()
