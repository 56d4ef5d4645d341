"""The operator's view: the ``supportbot`` command run as a real subprocess, configured only by
environment variables as an operator sets them (the environment is built from scratch, and the
working directory is the test's own, so no stray ``.env`` or secrets directory is read).

The canary at the bottom runs ``supportbot run`` at DEBUG against a fake Kimi and a fake Slack on
loopback, drives a whole conversation plus a Kimi failure, stops the process with SIGTERM, and
checks that none of the three secrets reached its output.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.kimi import Fail, FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import SlackSender, app_mention, block_actions
from tests.harness import (
    CUSTOMER_CHANNEL,
    KIMI_KEY,
    REVIEW_CHANNEL,
    SIGNING_SECRET,
    SLACK_TOKEN,
    card_text,
    draft_id_of,
    until,
)
from tests.processes import SUPPORTBOT, free_port, seed_orders, slack_bot_env, supportbot

SECRETS = {"Kimi API key": KIMI_KEY, "Slack bot token": SLACK_TOKEN, "Slack signing secret": SIGNING_SECRET}


# --------------------------------------------------------------------------------------------------
# Running the command as an operator does


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def order_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return sorted(row[0] for row in conn.execute("SELECT order_id FROM orders"))


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def assert_clean_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.stderr.strip(), "the operator is told what is wrong"


# --------------------------------------------------------------------------------------------------
# Start-up configuration


def test_an_operator_who_half_configured_slack_is_told_every_missing_variable_at_once(
    tmp_path: Path,
) -> None:
    result = supportbot(tmp_path, "run", SLACK_BOT_TOKEN=SLACK_TOKEN)

    assert_clean_error(result)
    for name in ("MOONSHOT_API_KEY", "SLACK_SIGNING_SECRET", "SLACK_REVIEW_CHANNEL"):
        assert name in result.stderr, f"{name} is named: {result.stderr}"
    assert result.stderr.count("error:") == 1, f"one error, not one per variable: {result.stderr}"
    assert SLACK_TOKEN not in result.stderr + result.stdout
    assert not (tmp_path / "supportbot.db").exists(), "nothing is created before the settings are valid"


def test_an_operator_who_configured_no_platform_is_told_how_to_add_one(tmp_path: Path) -> None:
    # With the playground on (the default) this would open it: see tests/test_cli.py.
    result = supportbot(tmp_path, "run", MOONSHOT_API_KEY=KIMI_KEY, PLAYGROUND_ENABLED="false")

    assert_clean_error(result)
    assert "no platform" in result.stderr
    assert "SLACK_BOT_TOKEN" in result.stderr and "DISCORD_BOT_TOKEN" in result.stderr
    assert KIMI_KEY not in result.stderr + result.stdout


def test_an_operator_who_set_nothing_hears_about_the_key_and_the_platform_at_once(tmp_path: Path) -> None:
    result = supportbot(tmp_path, "run", PLAYGROUND_ENABLED="false")

    assert_clean_error(result)
    assert "MOONSHOT_API_KEY" in result.stderr
    assert "SLACK_BOT_TOKEN" in result.stderr and "DISCORD_BOT_TOKEN" in result.stderr


# --------------------------------------------------------------------------------------------------
# policy check

GOOD_POLICY = """\
[assistant]
name = "Sam from Acme"

[refunds]
window_days = 30
max_amount = "400.00"
manager_threshold = "100"

[approvers]
managers = ["U777", "S0MANAGERS"]
"""


def test_a_manager_checks_a_good_policy_file(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text(GOOD_POLICY)

    result = supportbot(tmp_path, "policy", "check", "good.toml")

    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_a_manager_is_told_the_line_and_field_of_each_mistake(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(
        "[refunds]\n"
        "window_days = 30\n"
        'max_amount = "abc"\n'  # line 3: not an amount
        "max_amonut = 10\n"  # line 4: a typo, so an unknown field
        "\n"
        "[limits]\n"
        'max_tool_steps = "many"\n'  # line 7: the wrong type
    )

    result = supportbot(tmp_path, "policy", "check", "policy.toml")

    assert_clean_error(result)
    assert "line 3: refunds.max_amount" in result.stderr
    assert "line 4: refunds.max_amonut: unknown field" in result.stderr
    assert "line 7: limits.max_tool_steps" in result.stderr
    assert "OK" not in result.stdout


def test_a_policy_file_that_is_not_toml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text("[refunds]\nwindow_days = 30\nmax_amount = \n")

    result = supportbot(tmp_path, "policy", "check", "policy.toml")

    assert_clean_error(result)
    assert "TOML" in result.stderr and "line 3" in result.stderr


# --------------------------------------------------------------------------------------------------
# orders import and db upgrade

ORDERS_HEADER = "order_id,status,currency,total,placed_at,carrier,tracking_number"


def test_an_operator_imports_orders_and_a_bad_file_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    url = sqlite_url(db)
    (tmp_path / "orders.csv").write_text(
        f"{ORDERS_HEADER}\nA-1,shipped,USD,10.00,2026-01-01,UPS,1Z1\nA-2,delivered,USD,20.5,2026-01-02,,\n"
    )
    (tmp_path / "bad.csv").write_text(
        f"{ORDERS_HEADER}\n"
        "B-1,shipped,USD,10.00,2026-01-01,UPS,1Z2\n"  # a good row ...
        "B-2,delivered,USD,abc,2026-01-02,,\n"  # ... but line 3 has no amount
        "A-1,cancelled,USD,10.00,2026-01-01,UPS,1Z1\n"  # and an update of an imported order
    )

    good = supportbot(tmp_path, "orders", "import", "orders.csv", DATABASE_URL=url)
    assert good.returncode == 0, good.stderr
    assert "imported 2 orders" in good.stdout
    assert order_ids(db) == ["A-1", "A-2"]

    bad = supportbot(tmp_path, "orders", "import", "bad.csv", DATABASE_URL=url)
    assert_clean_error(bad)
    assert "line 3" in bad.stderr and "total" in bad.stderr and "abc" in bad.stderr
    assert "nothing was imported" in bad.stderr
    assert "imported" not in bad.stdout

    assert order_ids(db) == ["A-1", "A-2"], "the good rows of a rejected file are not imported either"
    with sqlite3.connect(db) as conn:
        [(status,)] = conn.execute("SELECT status FROM orders WHERE order_id = 'A-1'").fetchall()
    assert status == "shipped", "nor are its updates"


GOOD_LINE = json.dumps(
    {"order_id": "G-1", "status": "shipped", "currency": "USD", "total": "1", "placed_at": "2026-11-01"}
)
DEEP = 100_000  # deeper than Python's recursion limit


def _order(**fields: Any) -> str:
    return GOOD_LINE[:-1] + ", " + ", ".join(f'"{key}": {value}' for key, value in fields.items()) + "}"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param("[" * DEEP + "]" * DEEP, "line 2: not valid JSON (nested too deeply", id="deeply-nested"),
        pytest.param(
            _order(items="[" * DEEP + "]" * DEEP), "line 2: not valid JSON (nested too deeply", id="deep-items"
        ),
        pytest.param(
            _order(items=json.dumps("[" * DEEP + "]" * DEEP)), "line 2: items: not a JSON array", id="deep-items-text"
        ),
        pytest.param("[1, 2]", "line 2: expected a JSON object, found an array", id="a-list"),
        pytest.param("42", "line 2: expected a JSON object, found a number", id="a-number"),
        pytest.param('"G-2"', "line 2: expected a JSON object, found a string", id="a-string"),
        pytest.param("9" * 5000, "line 2: not valid JSON (a number of 5000 digits)", id="a-huge-integer"),
        pytest.param(_order(order_id='"G-2"', total="1e999999999"), "too large", id="a-huge-exponent"),
        pytest.param(_order(order_id='"G-2"', total="1e-999999999"), "more than 2 decimal places", id="a-tiny-amount"),
        pytest.param(_order(order_id='"G-2"', total='"' + "9" * 1_000_000 + '"'), "characters)", id="a-huge-text"),
        pytest.param(_order(order_id='"G-2"', total="NaN"), "line 2: not valid JSON (NaN is not allowed)", id="NaN"),
        pytest.param(
            _order(order_id='"G-2"', items='[{"sku": "S", "unit_price": "1", "quantity": ' + "9" * 30 + "}]"),
            "quantity: not a whole number from 1 to 1000000",
            id="a-huge-quantity",
        ),
        pytest.param("\x00\x01\x02", "line 2: not valid JSON", id="control-bytes"),
    ],
)
def test_an_orders_file_of_any_shape_is_refused_in_one_line_naming_it(tmp_path: Path, line: str, problem: str) -> None:
    (tmp_path / "orders.jsonl").write_text(f"{GOOD_LINE}\n{line}\n", encoding="utf-8")
    result = supportbot(tmp_path, "orders", "import", "orders.jsonl", DATABASE_URL=sqlite_url(tmp_path / "shop.db"))

    assert_clean_error(result)
    assert result.returncode == 1
    told = [text for text in result.stderr.splitlines() if problem in text]
    assert len(told) == 1 and len(told[0]) < 300, result.stderr[:2000]


def test_binary_and_byte_order_marks_in_an_orders_file(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "shop.db")
    (tmp_path / "binary.jsonl").write_bytes(GOOD_LINE.encode() + b"\n" + bytes(range(256)))
    binary = supportbot(tmp_path, "orders", "import", "binary.jsonl", DATABASE_URL=url)
    assert_clean_error(binary)
    assert "line 3: not UTF-8 text (byte 0x80)" in binary.stderr  # byte 0x0a ended line 2

    # Two exports joined with cat: each starts with a byte order mark.
    second = GOOD_LINE.replace("G-1", "G-2")
    (tmp_path / "joined.jsonl").write_bytes(b"\xef\xbb\xbf" + GOOD_LINE.encode() + b"\n\xef\xbb\xbf" + second.encode())
    joined = supportbot(tmp_path, "orders", "import", "joined.jsonl", DATABASE_URL=url)
    assert joined.returncode == 0, joined.stderr
    assert order_ids(tmp_path / "shop.db") == ["G-1", "G-2"]


def test_db_upgrade_creates_the_schema_on_a_fresh_file_and_can_run_again(tmp_path: Path) -> None:
    db = tmp_path / "data" / "supportbot.db"
    db.parent.mkdir()
    url = sqlite_url(db)

    first = supportbot(tmp_path, "db", "upgrade", DATABASE_URL=url)
    assert first.returncode == 0, first.stderr
    created = tables(db)
    assert {"conversations", "messages", "drafts", "tool_calls", "audit_events", "outbox", "orders"} <= created
    with sqlite3.connect(db) as conn:
        [(revision,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()

    second = supportbot(tmp_path, "db", "upgrade", DATABASE_URL=url)
    assert second.returncode == 0, second.stderr
    assert tables(db) == created
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(revision,)]


# --------------------------------------------------------------------------------------------------
# The canary: a whole conversation through `supportbot run` at DEBUG, then SIGTERM


@dataclass
class CanaryRun:
    home: Path
    database_url: str
    returncode: int | None
    stop_seconds: float
    output: str
    draft_id: str
    thread_key: str
    reply_text: str
    failure_card: str
    kimi_statuses: list[int | None]
    sent_elsewhere: str  # every Slack call's parameters and every Kimi request body


async def drive_canary(home: Path) -> CanaryRun:
    database_url = sqlite_url(home / "supportbot.db")
    await seed_orders(database_url, home / "orders.jsonl")

    stdout_path, stderr_path = home / "run.stdout", home / "run.stderr"
    async with FakeKimi(api_key=KIMI_KEY) as kimi, FakeSlack(bot_token=SLACK_TOKEN) as slack:
        port = free_port()
        env = slack_bot_env(home, kimi.base_url, slack, port, database_url, KIMI_TIMEOUT_SECONDS="5", LOG_LEVEL="DEBUG")
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = await asyncio.create_subprocess_exec(SUPPORTBOT, "run", cwd=home, env=env, stdout=out, stderr=err)
        try:
            base = f"http://127.0.0.1:{port}"

            async def ready() -> bool:  # not /healthz: alive is not yet taking events
                if process.returncode is not None:
                    raise AssertionError(f"supportbot run exited early:\n{stderr_path.read_text()}")
                try:
                    async with httpx.AsyncClient(timeout=1) as client:
                        return (await client.get(f"{base}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            deadline = time.monotonic() + 20
            while not await ready():
                assert time.monotonic() < deadline, "/readyz never answered 200"
                await asyncio.sleep(0.1)

            def cards() -> list[Any]:
                return [
                    c
                    for c in slack.calls_to("chat.postMessage")
                    if c.params.get("channel") == REVIEW_CHANNEL and c.params.get("blocks")
                ]

            # A customer asks; a card appears; an agent approves; the reply is posted.
            sender = SlackSender(f"{base}/slack/events", SIGNING_SECRET, mirror_to=slack)
            mention = app_mention("<@UBOT> Hi, where is my order #W2611340?")
            assert (await sender.event(mention)).status_code == 200
            [card] = await until(cards, "the review card")
            draft_id = draft_id_of(card)
            click = block_actions("approve_draft", draft_id, user="U333", channel=REVIEW_CHANNEL)
            assert (await sender.action(click)).status_code == 200
            thread_ts = mention["event"]["ts"]
            [reply] = await slack.wait_for(
                "chat.postMessage",
                timeout=15,
                where=lambda p: p.get("channel") == CUSTOMER_CHANNEL and p.get("thread_ts") == thread_ts,
            )
            await slack.wait_for("chat.update", timeout=15, where=lambda p: "sent to the customer" in json.dumps(p))

            # Kimi rejects the key on the next conversation: a failure card, no crash.
            kimi.script(Fail(401, "invalid_authentication_error", "Invalid Authentication"))
            assert (await sender.event(app_mention("<@UBOT> can I return order 40021?"))).status_code == 200
            both = await until(lambda: cards() if len(cards()) >= 2 else [], "the failure card")
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{base}/metrics")).status_code == 200
        finally:
            started = time.monotonic()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            try:
                returncode: int | None = await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
                returncode = None
            stop_seconds = time.monotonic() - started
        statuses = [r.status for r in kimi.requests if r.path.endswith("/chat/completions")]
        sent_elsewhere = "\n".join(
            [json.dumps(c.params, default=str) for c in slack.calls]
            + [r.raw.decode(errors="replace") for r in kimi.requests]
        )

    return CanaryRun(
        home=home,
        database_url=database_url,
        returncode=returncode,
        stop_seconds=stop_seconds,
        output=stdout_path.read_text(errors="replace") + stderr_path.read_text(errors="replace"),
        draft_id=draft_id,
        thread_key=f"slack:T111:{CUSTOMER_CHANNEL}:{thread_ts}",
        reply_text=str(reply.params.get("text")),
        failure_card=card_text(both[1]),
        kimi_statuses=statuses,
        sent_elsewhere=sent_elsewhere,
    )


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> CanaryRun:
    return asyncio.run(drive_canary(tmp_path_factory.mktemp("canary")))


def test_the_canary_conversation_went_through(canary: CanaryRun) -> None:
    assert "1Z999AA10123456784" in canary.reply_text, "the approved draft reached the customer"
    assert 401 in canary.kimi_statuses, "the error path was exercised"
    assert "Drafting failed" in canary.failure_card


def test_no_secret_ever_reaches_the_logs_even_at_debug(canary: CanaryRun) -> None:
    assert canary.output.strip(), "the bot logged something"
    assert " DEBUG " in canary.output, "LOG_LEVEL=DEBUG was honoured"
    leaked = [name for name, value in SECRETS.items() if value in canary.output]
    assert not leaked, f"leaked into the output: {leaked}"
    # Nor a recognisable fragment of one (a library printing a token cut short, say).
    for value in SECRETS.values():
        assert value[-12:] not in canary.output


def test_no_secret_is_sent_to_the_other_service_or_shown_on_a_card(canary: CanaryRun) -> None:
    # Tokens travel only in Authorization headers to their own service; never in a message body,
    # a review card (the Kimi failure card included) or a prompt.
    leaked = [name for name, value in SECRETS.items() if value in canary.sent_elsewhere]
    assert not leaked, f"sent in a request body: {leaked}"


def test_sigterm_stops_the_bot_cleanly_and_quickly(canary: CanaryRun) -> None:
    assert canary.returncode == 0, canary.output[-3000:]
    assert canary.stop_seconds < 5
    assert "Traceback" not in canary.output, canary.output[-3000:]


def test_audit_prints_the_trail_of_the_approved_conversation(canary: CanaryRun) -> None:
    with ThreadPoolExecutor() as pool:
        by_draft, by_thread = pool.map(
            lambda key: supportbot(canary.home, "audit", key, DATABASE_URL=canary.database_url),
            [canary.draft_id, canary.thread_key],
        )

    assert by_draft.returncode == 0, by_draft.stderr
    kinds = [line.split()[2] for line in by_draft.stdout.splitlines() if line.strip()]
    for kind in ("message", "tool_call", "draft", "approved", "sent"):
        assert kind in kinds, f"{kind} in {by_draft.stdout}"
    assert kinds.index("message") < kinds.index("draft") < kinds.index("approved") < kinds.index("sent")
    assert "U333" in by_draft.stdout, "who approved"
    assert "get_order_status" in by_draft.stdout

    assert by_thread.returncode == 0, by_thread.stderr
    assert by_thread.stdout == by_draft.stdout, "a thread key finds the same trail"


def test_an_unreachable_slack_api_is_a_clear_start_up_error(tmp_path: Path) -> None:
    result = supportbot(
        tmp_path,
        "run",
        MOONSHOT_API_KEY=KIMI_KEY,
        SLACK_BOT_TOKEN=SLACK_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_REVIEW_CHANNEL="C999",
        SLACK_API_URL="http://127.0.0.1:9/api/",
        PORT="0",
    )
    assert_clean_error(result)
    assert "cannot reach the Slack API at http://127.0.0.1:9/api/" in result.stderr
    assert SLACK_TOKEN not in result.stderr + result.stdout
