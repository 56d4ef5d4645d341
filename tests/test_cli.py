"""The command line as an operator meets it: the playground from one command, one-line errors
with a hint and the documented exit codes, --version and --help, conversations and audit by
the short id a card shows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bot.cli_ops import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from bot.settings import Settings
from tests.fakes.kimi import FakeKimi
from tests.harness import KIMI_KEY, until
from tests.playground_support import HEADER, playground_bot
from tests.processes import SUPPORTBOT, free_port, operator_env, supportbot
from tests.test_playground import client_for, playground_of, state_when


async def test_a_newcomer_with_only_a_kimi_key_gets_the_playground_and_a_whole_conversation(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    port = free_port()
    env = operator_env(
        tmp_path,
        MOONSHOT_API_KEY=KIMI_KEY,
        KIMI_BASE_URL=kimi.base_url,
        HOST="127.0.0.1",
        PORT=str(port),
        LOG_FORMAT="json",
    )
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(SUPPORTBOT, "run", cwd=tmp_path, env=env, stderr=err)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=HEADER, timeout=30) as client:

            async def the_page_once_started() -> httpx.Response | None:
                assert process.returncode is None, stderr.read_text()
                with contextlib.suppress(httpx.TransportError):  # not bound yet
                    answer = await client.get("/")
                    if answer.status_code != 503:
                        return answer
                    assert "the bot is starting" in answer.text, answer.text  # bound, not started yet
                return None

            page = await until(the_page_once_started, "the playground", timeout=20)
            assert page.status_code == 200 and "supportbot playground" in page.text
            assert (await client.post("/playground/api/orders")).json()["ok"]
            await client.post("/playground/api/message", data={"text": "Where is my order #W2611340?"})
            state = await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
            draft = state["desk"].split('data-draft="')[1].split('"')[0]
            assert (await client.post("/playground/api/decide", data={"draft_id": draft, "action": "approve"})).json()[
                "ok"
            ]
            state = await state_when(client, lambda s: 'class="msg support"' in s["customer"])
            assert "UPS" in state["customer"]
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 15)
    output = stderr.read_text()
    assert code == EXIT_OK, output
    started = [json.loads(line) for line in output.splitlines() if '"event": "started"' in line]
    assert started and started[0]["platforms"] == "playground" and started[0]["review_desk"] == "playground"
    assert KIMI_KEY not in output and "Traceback" not in output


@pytest.mark.parametrize(
    ("url", "says", "code"),
    [
        ("postgresql+asyncpg://bot:pw-9d8c7b@127.0.0.1:{port}/db", "connection refused", EXIT_RUNTIME),
        ("postgresql+asyncpg://bot@no-such-host.invalid/db", "host 'no-such-host.invalid' is unknown", EXIT_RUNTIME),
        ("postgresql://bot:pw-9d8c7b@db.example/db", "write postgresql+asyncpg://bot:***@db.example/db", EXIT_CONFIG),
        ("not a url", "is not a database URL", EXIT_CONFIG),
        ("sqlite+aiosqlite:////no/such/folder/bot.db", "the folder /no/such/folder does not exist", EXIT_CONFIG),
        (
            "sqlite+aiosqlite:////proc/bot.db",
            "cannot create the SQLite file /proc/bot.db: the folder /proc",
            EXIT_CONFIG,
        ),
    ],
)
@pytest.mark.parametrize("command", [("db", "upgrade"), ("run",)])
def test_a_database_problem_is_one_line_with_a_hint_and_its_exit_code(
    tmp_path: Path, url: str, says: str, code: int, command: tuple[str, ...]
) -> None:
    result = supportbot(tmp_path, *command, DATABASE_URL=url.format(port=free_port()), MOONSHOT_API_KEY=KIMI_KEY)

    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and "pw-9d8c7b" not in result.stderr


def test_version_help_and_usage_errors(tmp_path: Path) -> None:
    version = supportbot(tmp_path, "--version")
    assert version.returncode == EXIT_OK and version.stdout.startswith("supportbot ")

    helped = supportbot(tmp_path, "run", "--help")
    assert helped.returncode == EXIT_OK
    for name in Settings.model_fields:
        assert name.upper() in helped.stdout, f"{name.upper()} is listed"
    for name in ("LOG_FORMAT", "PLAYGROUND_TOKEN", "exit codes"):
        assert name in helped.stdout

    wrong = supportbot(tmp_path, "conversations", "--limit", "zero")
    assert wrong.returncode == EXIT_USAGE and "not a number" in wrong.stderr


def test_a_bad_policy_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text('[refunds]\nmax_amount = "lots"\n')
    result = supportbot(tmp_path, "policy", "check", "policy.toml")
    assert result.returncode == EXIT_CONFIG and "line 2" in result.stderr


def test_policy_check_names_each_deprecated_key_once_and_still_passes(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text('[escalation]\non_call_discord = "1299"\n')
    result = supportbot(tmp_path, "policy", "check", "policy.toml")
    assert result.returncode == EXIT_OK, result.stderr
    deprecated = [line for line in (result.stdout + result.stderr).splitlines() if "deprecated" in line]
    assert deprecated == [
        'policy.toml: line 2: escalation.on_call_discord is deprecated; write [escalation.discord] on_call = "1299" '
        "instead"
    ]
    assert "OK" in result.stdout


async def test_an_operator_lists_conversations_by_state_and_audits_one_by_the_card_s_short_id(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with playground_bot(tmp_path, kimi) as bot, client_for(bot) as client:
        playground = playground_of(bot)
        await client.post("/playground/api/message", data={"text": "Where is my order #W2611340?"})
        await state_when(client, lambda s: "Approve &amp; send" in s["desk"])
        sent = playground.state.pending_card()
        assert sent is not None
        await client.post("/playground/api/decide", data={"draft_id": sent.draft_id, "action": "approve"})
        await state_when(client, lambda s: 'class="msg support"' in s["customer"])
        await client.post("/playground/api/thread")
        await client.post("/playground/api/message", data={"text": "Do you ship to Norway?"})
        await state_when(client, lambda s: s["desk"].count("Approve &amp; send") == 1 and "Norway" in s["desk"])
        url = bot.settings.database_url

    everything = await asyncio.to_thread(supportbot, tmp_path, "conversations", DATABASE_URL=url)
    assert everything.returncode == EXIT_OK, everything.stderr
    rows = everything.stdout.splitlines()[1:]
    assert len(rows) == 2
    assert "awaiting_review" in rows[0] and "conversation 2" in rows[0], "newest first"
    assert " sent " in rows[1]

    waiting = await asyncio.to_thread(
        supportbot,
        tmp_path,
        "conversations",
        "--state",
        "awaiting_review",
        "--platform",
        "playground",
        DATABASE_URL=url,
    )
    assert len(waiting.stdout.splitlines()) == 2 and "conversation 2" in waiting.stdout
    none = await asyncio.to_thread(supportbot, tmp_path, "conversations", "--platform", "discord", DATABASE_URL=url)
    assert none.stdout.strip() == "no conversations match"

    audit = await asyncio.to_thread(supportbot, tmp_path, "audit", sent.draft_id[:8], DATABASE_URL=url)
    assert audit.returncode == EXIT_OK, audit.stderr
    assert "Where is my order #W2611340?" in audit.stdout and "approve" in audit.stdout
    unknown = await asyncio.to_thread(supportbot, tmp_path, "audit", "ffffffff", DATABASE_URL=url)
    assert unknown.returncode == EXIT_RUNTIME and "Traceback" not in unknown.stderr


def test_a_postgresql_url_without_the_asyncpg_driver_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    """After the plain ``pip install -e .`` asyncpg is absent (it is the ``postgres`` extra); the
    interpreter here has it, so this run hides it as a plain install would not have it."""
    hide_asyncpg = (
        "import sys; sys.modules['asyncpg'] = None; sys.argv = ['supportbot', 'db', 'upgrade']; "
        "from bot.cli import main; sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide_asyncpg],
        cwd=tmp_path,
        env=operator_env(tmp_path, DATABASE_URL="postgresql+asyncpg://bot:pw-9d8c7b@127.0.0.1:1/support"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == EXIT_CONFIG, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "asyncpg driver, which is not installed" in result.stderr and "supportbot[postgres]" in result.stderr
    assert "pw-9d8c7b" not in result.stderr


def test_models_with_kimi_unreachable_is_a_runtime_failure_not_a_configuration_error(tmp_path: Path) -> None:
    result = supportbot(
        tmp_path,
        "models",
        MOONSHOT_API_KEY=KIMI_KEY,
        KIMI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        KIMI_MAX_RETRIES="0",
    )

    assert result.returncode == EXIT_RUNTIME, result.stderr
    assert "could not list Kimi's models" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_the_command_line_builds_without_the_heavy_libraries(tmp_path: Path) -> None:
    """``supportbot --help`` and a usage error are answered from argparse alone: SQLAlchemy,
    pydantic, the platforms' SDKs and the HTTP stacks are imported by the command that runs
    (bench.cli_startup measures the CPU time)."""
    probe = (
        "import sys; from bot.cli import build_parser; build_parser().format_help(); "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    heavy = {"sqlalchemy", "pydantic", "pydantic_settings", "discord", "slack_bolt", "slack_sdk", "aiohttp", "httpx"}
    assert loaded & heavy == set()
    assert "bot" in loaded
