"""What an operator reads in the logs: one event per step with its ids, JSON or text, never a
secret, no customer data when the policy says so, one start-up line, no Bolt noise."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import logs
from bot.errors import ConfigError
from bot.policy import PolicyStore
from bot.settings import load_settings
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import KIMI_KEY, SLACK_TOKEN, running_bot, settings_for

log = logging.getLogger("bot.core.test")


@pytest.fixture
def output(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Where the configured logging writes; the test's own logging is restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logs.follow_policy(lambda: False)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_step_is_one_json_line_with_its_ids_and_no_secret(
    tmp_path: Path, output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    settings = settings_for(tmp_path, FakeKimi(api_key=KIMI_KEY), None)
    logs.configure_logging(settings, stream=output)

    logs.log_event(log, "draft_ready", conversation="c-1", draft="d-1", platform="slack", model="kimi-k2.5")
    log.warning("a library echoed the key %s", KIMI_KEY)
    try:
        raise RuntimeError(f"boom with {KIMI_KEY}")
    except RuntimeError:
        log.exception("drafting failed")

    first, echoed, failed = lines(output)
    assert first["event"] == "draft_ready" and first["level"] == "INFO" and first["logger"] == "bot.core.test"
    assert (first["conversation"], first["draft"], first["platform"], first["model"]) == (
        "c-1",
        "d-1",
        "slack",
        "kimi-k2.5",
    )
    assert echoed["message"] == "a library echoed the key ***"
    assert "RuntimeError: boom with ***" in str(failed["exc"])
    assert KIMI_KEY not in output.getvalue()


def test_a_platform_secret_from_the_secrets_directory_never_shows_in_a_log(
    tmp_path: Path, output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DISCORD_BOT_TOKEN").write_text("discord-token-from-a-file-0123")
    monkeypatch.setenv("SUPPORTBOT_SECRETS_DIR", str(secrets))
    monkeypatch.chdir(tmp_path)
    logs.configure_logging(load_settings(), stream=output)

    log.warning("the gateway refused %s", "discord-token-from-a-file-0123")

    assert output.getvalue().strip().endswith("the gateway refused ***")


def test_text_format_keeps_the_fields_readable(tmp_path: Path, output: io.StringIO) -> None:
    logs.configure_logging(settings_for(tmp_path, FakeKimi(api_key=KIMI_KEY), None), stream=output)

    logs.log_event(log, "reply_sent", conversation="c-1", draft="d-1", platform="discord", note="sent twice?")

    line = output.getvalue().strip()
    assert " INFO bot.core.test: reply_sent conversation=c-1 draft=d-1 platform=discord" in line
    assert line.endswith('note="sent twice?"')


def test_customer_data_is_redacted_while_the_policy_asks_for_it(
    tmp_path: Path, output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("[logs]\nredact_personal_data = true\n")
    store = PolicyStore(policy_file)
    logs.configure_logging(settings_for(tmp_path, FakeKimi(api_key=KIMI_KEY), None), stream=output)
    logs.follow_policy(lambda: store.current.logs.redact_personal_data)

    logs.log_event(log, "message_received", conversation="c-9", customer_name="Kim Lee", text="call me")
    log.info("reply to kim@example.com or +1 415 555 0199 about order 40021")

    event, message = lines(output)
    assert event["customer_name"] == "[redacted]" and event["text"] == "[redacted]"
    assert event["conversation"] == "c-9", "ids stay"
    assert message["message"] == "reply to [redacted] or [redacted] about order 40021"

    policy_file.write_text("[logs]\nredact_personal_data = false\n")

    async def nothing(_error: object) -> None:
        raise AssertionError("the policy is valid")

    assert asyncio.run(store.reload_if_changed(nothing))
    logs.log_event(log, "message_received", conversation="c-9", customer_name="Kim Lee")
    assert lines(output)[-1]["customer_name"] == "Kim Lee", "the reloaded policy is followed"


async def test_slack_starts_without_bolt_s_token_warning_and_says_what_is_in_force(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack, output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)  # what makes Bolt warn when a client is given too
    (tmp_path / "policy.toml").write_text('[models]\nsummarizing = "kimi-k2-turbo-preview"\n')
    logs.configure_logging(settings_for(tmp_path, kimi, slack), stream=output)

    async with running_bot(tmp_path, kimi, slack) as harness:
        version = harness.bot.core.policy.current.version if harness.bot.core else ""

    text = output.getvalue()
    assert "will be unused" not in text
    assert "alembic" not in text, "migrations are quiet unless something is wrong"
    started = [line for line in lines(output) if line.get("event") == "started"]
    assert len(started) == 1
    assert started[0]["policy_file"] == str(tmp_path / "policy.toml")
    assert started[0]["policy_version"] == version
    assert started[0]["platforms"] == "slack" and started[0]["review_desk"] == "slack"
    assert started[0]["model_default"] == "kimi-k2.5"
    assert started[0]["model_summarizing"] == "kimi-k2-turbo-preview"
    assert SLACK_TOKEN not in text and KIMI_KEY not in text


def test_log_format_comes_from_the_env_file_too_and_a_typo_is_a_configuration_error(
    tmp_path: Path, output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    (tmp_path / ".env").write_text("LOG_FORMAT=json\n")
    logs.configure_logging(settings_for(tmp_path, FakeKimi(api_key=KIMI_KEY), None), stream=output)
    logs.log_event(log, "card_posted", draft="d-2")
    assert lines(output)[0]["event"] == "card_posted"

    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(ConfigError, match="LOG_FORMAT must be json or text"):
        logs.configure_logging(settings_for(tmp_path, FakeKimi(api_key=KIMI_KEY), None), stream=output)
