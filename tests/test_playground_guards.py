"""The playground's guards, against the installed ``supportbot run`` over real HTTP: a
DNS-rebinding page and other web sites are refused, the token never sits in the cookie or
stays in the address bar, every answer carries the security headers, the policy editor saves
only what the bot takes (never a hidden or secret-bearing knowledge file, never a TOML bomb),
and next to a live review desk only a named approver decides from the playground."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import block_actions
from tests.harness import KIMI_KEY, REVIEW_CHANNEL, draft_id_of, until
from tests.playground_support import HEADER
from tests.processes import BotProcess, RunProcess, playground_env, supportbot

TOKEN = "pg-canary-token-5a6b7c8d"
BOMB = "a = " + "[" * 100_000
EXIT_CONFIG = 3


@contextlib.asynccontextmanager
async def playground_run(home: Path, kimi: FakeKimi, **variables: str) -> AsyncIterator[RunProcess]:
    """``supportbot run`` with only the Kimi key: the open playground on 127.0.0.1."""
    process = RunProcess(home, lambda port, database_url: playground_env(home, kimi.base_url, port, database_url))
    process.env.update(variables)
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


def uploads(kimi: FakeKimi) -> list[bytes]:
    """What reached the fake Kimi's files API."""
    return [r.raw for r in kimi.requests if r.method == "POST" and r.path == "/v1/files"]


async def customer_pane(client: httpx.AsyncClient) -> str:
    return str((await client.get("/playground/api/state")).json()["customer"])


async def test_a_dns_rebinding_page_and_other_web_sites_are_refused_and_the_page_itself_works(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with (
        playground_run(tmp_path, kimi, PLAYGROUND_ALLOWED_HOSTS="support.example.com") as bot,
        httpx.AsyncClient(base_url=bot.base, headers=HEADER, timeout=30) as client,
    ):
        rebound = {"Host": f"evil.example:{bot.port}"}  # evil.example re-pointed at 127.0.0.1
        page = await client.get("/", headers=rebound)
        assert page.status_code == 403 and "DNS rebinding" in page.text
        assert "supportbot playground" not in page.text
        assert (await client.get("/playground/api/state", headers=rebound)).status_code == 403
        forged = await client.post("/playground/api/message", data={"text": "rebound hello"}, headers=rebound)
        assert forged.status_code == 403
        assert (await client.get("/", headers={"Host": f"localhost.evil.example:{bot.port}"})).status_code == 403
        assert (await client.get("/", headers={"Host": "127.0.0.2"})).status_code == 403, "not the address served"

        for host in (f"127.0.0.1:{bot.port}", f"localhost:{bot.port}", f"[::1]:{bot.port}", "localhost:9000"):
            assert (await client.get("/", headers={"Host": host})).status_code == 200, host

        for origin in ("http://evil.example", f"http://localhost:{bot.port + 1}", "null"):
            crossed = await client.post(
                "/playground/api/message", data={"text": "cross-site hello"}, headers={"Origin": origin}
            )
            assert crossed.status_code == 403 and "cross-origin" in crossed.text, origin
        behind_a_proxy = {"Host": "support.example.com", "X-Forwarded-Proto": "https"}  # TLS ends at the proxy
        proxied = await client.post(
            "/playground/api/thread", headers={**behind_a_proxy, "Origin": "https://support.example.com"}
        )
        assert proxied.json()["ok"], proxied.text
        same = await client.post(
            "/playground/api/message",
            data={"text": "same-origin hello"},
            headers={"Origin": f"http://127.0.0.1:{bot.port}"},
        )
        assert same.json()["ok"], same.text
        assert (await client.post("/playground/api/message", data={"text": "no-origin hello"})).json()["ok"]

        pane = await customer_pane(client)
        assert "same-origin hello" in pane and "no-origin hello" in pane
        assert "rebound hello" not in pane and "cross-site hello" not in pane


async def test_every_playground_answer_carries_the_security_headers_and_the_page_has_no_inline_code(
    tmp_path: Path, kimi: FakeKimi
) -> None:
    async with (
        playground_run(tmp_path, kimi) as bot,
        httpx.AsyncClient(base_url=bot.base, headers=HEADER, timeout=30) as client,
    ):
        page = await client.get("/")
        answers = [
            page,
            await client.get("/playground/static/playground.js"),
            await client.get("/playground/static/playground.css"),
            await client.get("/playground/api/state"),
            await client.get("/playground/api/edit/no-such-draft"),
            await client.get("/", headers={"Host": "evil.example"}),
            await client.post("/playground/api/thread", headers={"Origin": "http://evil.example"}),
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 404, 403, 403]
        for answer in answers:
            csp = answer.headers.get("Content-Security-Policy", "")
            assert "default-src 'none'" in csp and "script-src 'self'" in csp, answer.url
            assert "frame-ancestors 'none'" in csp, answer.url
            assert answer.headers.get("X-Frame-Options") == "DENY"
            assert answer.headers.get("X-Content-Type-Options") == "nosniff"
            assert answer.headers.get("Referrer-Policy") == "no-referrer"
        assert "<script>" not in page.text and "<style>" not in page.text, "CSP would block inline code"
        assert '<script src="/playground/static/playground.js">' in page.text
        assert answers[1].headers["Content-Type"].startswith("text/javascript")


async def test_next_to_slack_the_cookie_is_derived_the_token_leaves_the_url_and_only_a_named_approver_decides(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    (tmp_path / "policy.toml").write_text('[approvers]\nmanagers = ["U777"]\n')
    bot = BotProcess(tmp_path, kimi.base_url, slack, PLAYGROUND_TOKEN=TOKEN)
    await bot.start()
    try:
        async with httpx.AsyncClient(base_url=bot.base, headers=HEADER, timeout=30) as client:
            first = await client.get("/", params={"token": TOKEN, "tab": "desk"})
            assert first.status_code == 303 and first.headers["Location"] == "/?tab=desk"
            cookie = first.headers["Set-Cookie"]
            name, _, value = cookie.split(";")[0].partition("=")
            assert TOKEN not in cookie and value != TOKEN
            assert value == hmac.new(TOKEN.encode(), b"supportbot playground session v1", hashlib.sha256).hexdigest()
            flags = [part.strip().lower() for part in cookie.split(";")[1:]]
            assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags
            assert (await client.get("/?tab=desk")).status_code == 200, "the cookie opens the page"

            async with httpx.AsyncClient(base_url=bot.base, headers=HEADER, cookies={name: TOKEN}) as raw:
                assert (await raw.get("/")).status_code == 403, "the raw token is no session"
            async with httpx.AsyncClient(base_url=bot.base, headers=HEADER) as proxied:
                tls = await proxied.get("/", params={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
                assert "secure" in [part.strip().lower() for part in tls.headers["Set-Cookie"].split(";")]

            sent = await client.post("/playground/api/message", data={"text": "Where is my order #W2611340?"})
            assert sent.json()["ok"], sent.text
            [card] = await until(bot.cards, "the card on Slack's review desk")
            draft = draft_id_of(card)
            anonymous = await client.post("/playground/api/decide", data={"draft_id": draft, "action": "approve"})
            assert not anonymous.json()["ok"]
            assert "approver the policy names" in anonymous.json()["message"]

            # The draft still waits for the desk: an agent in the review channel approves it there.
            click = block_actions("approve_draft", draft, user="U333", channel=REVIEW_CHANNEL)
            assert (await bot.sender.action(click)).status_code == 200
            await until(lambda: _replied(client, 1), "the approved reply in the customer pane")

        # The operator names the token's holder: U777, a manager in the policy.
        await bot.stop()
        bot.env["PLAYGROUND_APPROVER"] = "U777"
        await bot.start()
        async with httpx.AsyncClient(base_url=bot.base, headers=HEADER, timeout=30) as client:
            await client.get("/", params={"token": TOKEN})
            await client.post("/playground/api/message", data={"text": "And my order 40021?"})
            cards = await until(lambda: bot.cards()[1:], "the second card on Slack")
            named = await client.post(
                "/playground/api/decide", data={"draft_id": draft_id_of(cards[0]), "action": "approve"}
            )
            assert named.json()["ok"], named.text
            await until(lambda: _replied(client, 1), "the reply in the new conversation's pane")
    finally:
        await bot.stop()


async def _replied(client: httpx.AsyncClient, count: int) -> bool:
    return (await customer_pane(client)).count('class="msg support"') >= count


async def test_the_policy_editor_saves_only_what_the_bot_takes(tmp_path: Path, kimi: FakeKimi) -> None:
    good = '[knowledge]\nfiles = ["faq.md"]\n'
    (tmp_path / "policy.toml").write_text(good)
    (tmp_path / "faq.md").write_text("# Shipping\n\nWe ship worldwide within 3 days.\n")
    (tmp_path / "notes.md").write_text(f"ops notes: the Kimi key is {KIMI_KEY}\n")
    (tmp_path / ".env").write_text(f"MOONSHOT_API_KEY={KIMI_KEY}\n")
    (tmp_path.parent / f"{tmp_path.name}-outside.md").write_text("not the policy's\n")
    async with (
        playground_run(tmp_path, kimi) as bot,
        httpx.AsyncClient(base_url=bot.base, headers=HEADER, timeout=30) as client,
    ):
        assert len(uploads(kimi)) == 1, "faq.md was synced at start-up"
        refusals = {
            '[knowledge]\nfiles = [".env"]\n': ".env is a hidden file",
            '[knowledge]\nfiles = ["notes.md"]\n': "notes.md holds the value of MOONSHOT_API_KEY",
            f'[knowledge]\nfiles = ["../{tmp_path.name}-outside.md"]\n': "-outside.md is outside the policy",
            BOMB: "nested too deeply",
            "[refunds]\nmax_amount = \n": "not valid TOML",
            "# " + "x" * 300_000: "too large for a policy",
        }
        for text, says in refusals.items():
            check = await client.post("/playground/api/policy/check", data={"policy": text})
            assert check.status_code == 400 and says in check.text, check.text[:300]
            assert check.text.count("<li>") == 1, "one line"
            applied = await client.post("/playground/api/policy/apply", data={"policy": text})
            assert applied.status_code == 400, applied.text[:300]
            assert not applied.json()["ok"] and "saved" not in applied.json()["message"].replace("not saved", "")
            assert says in applied.json()["message"]
            assert KIMI_KEY not in applied.text and KIMI_KEY not in check.text
            assert (tmp_path / "policy.toml").read_text() == good, "the file on disk is unchanged"

        huge = await client.post("/playground/api/policy/check", data={"policy": "x" * 3_000_000})
        assert huge.status_code == 413

        fine = await client.post("/playground/api/policy/apply", data={"policy": good + "\n# checked\n"})
        assert fine.json()["ok"] and "saved" in fine.json()["message"], fine.text
        assert len(uploads(kimi)) == 1 and all(KIMI_KEY.encode() not in raw for raw in uploads(kimi))


async def test_a_knowledge_file_that_comes_to_hold_a_secret_is_not_sent_to_kimi(tmp_path: Path, kimi: FakeKimi) -> None:
    (tmp_path / "policy.toml").write_text('[knowledge]\nfiles = ["faq.md"]\n')
    faq = tmp_path / "faq.md"
    faq.write_text("# Shipping\n\nWe ship worldwide within 3 days.\n")
    async with playground_run(tmp_path, kimi, POLICY_RELOAD_SECONDS="0.2") as bot:
        assert len(uploads(kimi)) == 1
        faq.write_text(f"# Shipping\n\nWe ship worldwide.\n\nMOONSHOT_API_KEY={KIMI_KEY}\n")
        await until(lambda: "faq.md holds the value of MOONSHOT_API_KEY" in bot.stderr_path.read_text(), "refusal")
        await until(lambda: not kimi.files, "the earlier upload deleted from Kimi")
        assert len(uploads(kimi)) == 1, "the file holding the key never reached Kimi"


def test_a_bot_named_a_hidden_knowledge_file_does_not_start_and_uploads_nothing(tmp_path: Path, kimi: FakeKimi) -> None:
    (tmp_path / ".env").write_text(f"MOONSHOT_API_KEY={KIMI_KEY}\n")
    (tmp_path / "policy.toml").write_text('[knowledge]\nfiles = [".env"]\n')
    env = playground_env(tmp_path, kimi.base_url, 0, f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    ran = supportbot(tmp_path, "run", **{k: v for k, v in env.items() if k not in ("PATH", "HOME")})
    assert ran.returncode == EXIT_CONFIG, ran.stderr
    assert ".env is a hidden file" in ran.stderr and "Traceback" not in ran.stderr
    assert not uploads(kimi) and not kimi.requests, "nothing reached Kimi"


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ('[knowledge]\nfiles = [".env"]\n', "line 2: knowledge.files: .env is a hidden file"),
        ('[knowledge]\nfiles = ["docs/.git/config"]\n', "docs/.git/config is a hidden file (.git)"),
        ('[knowledge]\nfiles = ["notes.md"]\n', "notes.md holds the value of MOONSHOT_API_KEY"),
        (BOMB, "not valid TOML: arrays or tables nested too deeply"),
        ("[refunds]\nmax_amount = \n", "not valid TOML"),
        ("# " + "x" * 300_000, "too large for a policy"),
    ],
)
def test_policy_check_refuses_with_one_line_and_exit_3(tmp_path: Path, policy: str, says: str) -> None:
    (tmp_path / ".env").write_text(f"MOONSHOT_API_KEY={KIMI_KEY}\n")
    (tmp_path / "notes.md").write_text(f"ops notes: {KIMI_KEY}\n")
    (tmp_path / "docs" / ".git").mkdir(parents=True)
    (tmp_path / "docs" / ".git" / "config").write_text("[core]\n")
    (tmp_path / "policy.toml").write_text(policy)

    result = supportbot(tmp_path, "policy", "check", "policy.toml", MOONSHOT_API_KEY=KIMI_KEY)

    assert result.returncode == EXIT_CONFIG, result.stderr
    assert says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and KIMI_KEY not in result.stderr
