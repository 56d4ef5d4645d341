"""The HTTP edge under a slow-loris, through the installed ``supportbot run``: connections that
send their request headers (or body) too slowly are closed, the server makes room at its
connection cap by closing the slowest incomplete requests first, and meanwhile ``/healthz`` and
Slack's signed events keep answering, with one log line about it instead of one per connection.

The attack comes from this test's own raw sockets, only to 127.0.0.1, bounded in count and time.

And the operator's routes: ``/metrics`` and the detailed ``/readyz`` need ``METRICS_TOKEN`` when
it is set, live on ``METRICS_PORT`` alone when that is set, and otherwise answer loopback peers
only; a flood of scrapes runs one backlog query per ``METRICS_CACHE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bot.http_guard import ConnectionGuard, ConnectionState, GuardedRunner, HttpLimits, Phase, victims
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import Harness, running_bot, until
from tests.processes import BotProcess, free_port, supportbot
from tests.slowloris import Loris


@pytest.fixture
async def launch(tmp_path: Path, kimi: FakeKimi, slack: FakeSlack) -> AsyncIterator[type[BotProcess]]:
    started: list[BotProcess] = []

    class Started(BotProcess):
        def __init__(self, open_files: int | None = None, **variables: str) -> None:
            super().__init__(tmp_path, kimi.base_url, slack, open_files=open_files, **variables)
            started.append(self)

    yield Started
    for process in started:
        await process.stop()


async def keep_alive_healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One ``GET /healthz`` on an open connection, read to the end of its body: the status line."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = next(int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length"))
    await reader.readexactly(length)
    return head.split("\r\n")[0].encode()


async def closed_total(bot: BotProcess, reason: str) -> float:
    """``supportbot_http_connections_closed_total{reason=...}`` as a loopback scrape shows it."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{bot.base}/metrics")).text
    needle = f'supportbot_http_connections_closed_total{{reason="{reason}"}} '
    return next((float(line[len(needle) :]) for line in text.splitlines() if line.startswith(needle)), 0.0)


async def healthz(client: httpx.AsyncClient, bot: BotProcess) -> float:
    """Seconds ``/healthz`` took to answer 200."""
    began = time.monotonic()
    response = await client.get(f"{bot.base}/healthz")
    assert response.status_code == 200
    return time.monotonic() - began


async def slack_event(bot: BotProcess, text: str) -> float:
    """Seconds a signed Slack event took to be acknowledged."""
    began = time.monotonic()
    response = await bot.sender.event(app_mention(f"<@UBOT> {text}"))
    assert response.status_code == 200, response.text
    return time.monotonic() - began


async def test_a_slow_loris_past_the_descriptor_limit_leaves_healthz_and_slack_events_answering(
    launch: type[BotProcess],
) -> None:
    # A host whose open-files limit is 512: the bot keeps its connections under it.
    # Warnings and errors only: what an attack could make the bot say, not its usual progress.
    bot = launch(open_files=512, HTTP_HEADER_TIMEOUT_SECONDS="2", LOG_LEVEL="WARNING")
    await bot.start()
    assert "serving at most 256 connections" in bot.stderr_path.read_text()
    logged_before = bot.stderr_path.stat().st_size

    attackers = [Loris(bot.port) for _ in range(700)]  # more connections than descriptors
    attack = asyncio.gather(*(a.run() for a in attackers))
    health: list[float] = []
    acks: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            began = time.monotonic()
            while time.monotonic() - began < 6.0:
                health.append(await healthz(client, bot))
                if len(health) % 4 == 0:
                    acks.append(await slack_event(bot, f"where is my order? ({len(acks)})"))
                await asyncio.sleep(0.2)
        await until(lambda: all(a.closed_after is not None for a in attackers), "every attacker closed", 15)
    finally:
        await attack

    assert len(health) >= 10 and max(health) < 2.0, f"/healthz answered through the attack: {max(health):.2f} s"
    assert len(acks) >= 3 and max(acks) < 3.0, f"acked within Slack's 3 s: {max(acks):.2f} s"
    assert all(a.closed_after is not None and a.closed_after < 8.0 for a in attackers)
    logged = bot.stderr_path.read_text()[logged_before:]
    assert len(logged.encode()) < 2000, f"one summary, not a line per connection:\n{logged[:3000]}"
    assert "Too many open files" not in logged and "Traceback" not in logged
    assert "closed to make room at the cap" in logged or "headers not complete in time" in logged


async def test_headers_and_bodies_that_do_not_arrive_in_time_are_closed_and_an_idle_keep_alive_is_not(
    launch: type[BotProcess],
) -> None:
    bot = launch(HTTP_HEADER_TIMEOUT_SECONDS="1.5", HTTP_BODY_TIMEOUT_SECONDS="1.5")
    await bot.start()
    logged_before = bot.stderr_path.stat().st_size

    silent = Loris(bot.port, head=b"", trickle=False)  # connects and says nothing
    trickling = Loris(bot.port)  # active, but its headers never end
    stalled_body = Loris(  # complete headers, then 10 of the 500 bytes it announced
        bot.port,
        head=b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n" + b'{"token": ',
        trickle=False,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", bot.port)  # a keep-alive client
    try:
        assert await keep_alive_healthz(reader, writer) == b"HTTP/1.1 200 OK"

        await asyncio.gather(silent.run(), trickling.run(), stalled_body.run())

        for loris in (silent, trickling, stalled_body):
            assert loris.closed_after is not None, "closed by the server"
            assert 1.4 <= loris.closed_after < 4.0, f"after its timeout, not before: {loris.closed_after:.2f} s"
        # Idle for longer than the header timeout, between two requests: still open.
        assert await keep_alive_healthz(reader, writer) == b"HTTP/1.1 200 OK"
    finally:
        writer.close()

    assert await closed_total(bot, "header_timeout") == 2
    assert await closed_total(bot, "body_timeout") == 1
    await until(lambda: "connection(s) closed" in bot.stderr_path.read_text()[logged_before:], "the summary line")
    logged = bot.stderr_path.read_text()[logged_before:]
    assert "Traceback" not in logged and "Error handling request" not in logged


async def test_at_the_cap_a_newcomer_closes_the_oldest_incomplete_request_not_an_idle_keep_alive(
    launch: type[BotProcess],
) -> None:
    bot = launch(HTTP_MAX_CONNECTIONS="6", HTTP_HEADER_TIMEOUT_SECONDS="60")
    await bot.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", bot.port)  # a keep-alive client, first in
    try:
        assert await keep_alive_healthz(reader, writer) == b"HTTP/1.1 200 OK"

        attackers = [Loris(bot.port, every=0.3) for _ in range(20)]
        attack = asyncio.gather(*(a.run() for a in attackers))
        try:
            # 6 connections: the keep-alive one and the 5 newest attackers; the older ones go.
            await until(lambda: sum(a.closed_after is not None for a in attackers) >= 15, "the cap at work", 15)
            async with httpx.AsyncClient(timeout=2.0) as client:
                await healthz(client, bot)  # a newcomer is let in
            assert await keep_alive_healthz(reader, writer) == b"HTTP/1.1 200 OK", "the idle one was kept"
            assert all(a.closed_after is not None for a in attackers[:5]), "the oldest attackers went first"
        finally:
            attack.cancel()
            await asyncio.gather(attack, return_exceptions=True)
    finally:
        writer.close()
    assert await closed_total(bot, "cap") >= 15


async def test_at_the_cap_newcomers_close_the_oldest_incomplete_headers_never_an_upload_being_read() -> None:
    """The guard's arrival path takes its victims from the connections still sending headers, in
    the order they began; a request whose headers are complete (its body being read) is not one."""
    guard = ConnectionGuard(HttpLimits(header_timeout=60.0, body_timeout=60.0, max_connections=3))
    reading = asyncio.Event()

    async def upload(request: web.Request) -> web.Response:
        reading.set()
        return web.Response(text=f"stored {len(await request.read())} bytes")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/upload", upload)
    app.router.add_get("/healthz", ok)
    runner = GuardedRunner(app, guard, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = int(runner.addresses[0][1])
    lorises: list[Loris] = []
    attacks: list[asyncio.Task[None]] = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await asyncio.wait_for(reading.wait(), 5)  # its headers are complete: the handler reads the body
        for at_the_cap in (2, 3):  # two slow-lorises, one after the other
            lorises.append(Loris(port, every=0.2, lifetime=10.0))
            attacks.append(asyncio.create_task(lorises[-1].run()))
            await until(lambda n=at_the_cap: guard.open_connections == n, f"{at_the_cap} connections open")

        async with httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).text == "ok"
            await until(lambda: lorises[0].closed_after is not None, "the older slow-loris closed for the newcomer")
            assert lorises[1].closed_after is None, "only as many closed as the newcomer needed"

        writer.write(b"x" * 90)  # the upload was kept: it finishes and is answered
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        for attack in attacks:
            attack.cancel()
        for attack in attacks:  # a slow-loris that failed on its own fails the test
            with contextlib.suppress(asyncio.CancelledError):
                await attack
        await runner.cleanup()


def test_room_is_made_from_incomplete_headers_first_then_idle_then_slow_bodies_never_active() -> None:
    connections = [
        ("active", ConnectionState(Phase.ACTIVE, 0.0)),
        ("slow body", ConnectionState(Phase.BODY, 1.0)),
        ("idle long", ConnectionState(Phase.IDLE, 2.0)),
        ("idle short", ConnectionState(Phase.IDLE, 8.0)),
        ("young headers", ConnectionState(Phase.HEADERS, 9.0)),
        ("old headers", ConnectionState(Phase.HEADERS, 3.0)),
    ]

    assert victims(connections, 2) == ["old headers", "young headers"]
    assert victims(connections, 4) == ["old headers", "young headers", "idle long", "idle short"]
    assert victims(connections, 10)[-1] == "slow body" and "active" not in victims(connections, 10)
    assert victims([("active", ConnectionState(Phase.ACTIVE, 0.0))], 1) == []


# --------------------------------------------------------------------------------------------------
# The operator's routes

METRICS_TOKEN = "metrics-canary-token-5e4d3c"


async def test_with_a_metrics_token_only_its_bearer_reads_metrics_and_the_readiness_details(
    launch: type[BotProcess],
) -> None:
    bot = launch(METRICS_TOKEN=METRICS_TOKEN)
    await bot.start()
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with httpx.AsyncClient() as client:
        anonymous = await client.get(f"{bot.base}/metrics")
        wrong = await client.get(f"{bot.base}/metrics", headers={"Authorization": "Bearer guess"})
        scraped = await client.get(f"{bot.base}/metrics", headers=bearer)
        ready = await client.get(f"{bot.base}/readyz")
        detailed = await client.get(f"{bot.base}/readyz", headers=bearer)
        live = await client.get(f"{bot.base}/healthz")

    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.status_code == 401 and "supportbot_" not in wrong.text
    assert scraped.status_code == 200 and "supportbot_outbox_depth" in scraped.text
    assert ready.status_code == 200 and ready.json() == {"ok": True}, "the status for everyone"
    assert detailed.json()["database"] == "reachable" and detailed.json()["platforms"] == {"slack": "connected"}
    assert live.status_code == 200
    await bot.stop()
    assert METRICS_TOKEN not in bot.stderr_path.read_text()


async def test_with_a_metrics_port_the_public_port_serves_no_metrics(launch: type[BotProcess]) -> None:
    metrics_port = free_port()
    bot = launch(METRICS_PORT=str(metrics_port))
    await bot.start()
    internal = f"http://127.0.0.1:{metrics_port}"
    async with httpx.AsyncClient() as client:
        public_metrics = await client.get(f"{bot.base}/metrics")
        public_ready = await client.get(f"{bot.base}/readyz")
        scraped = await client.get(f"{internal}/metrics")
        detailed = await client.get(f"{internal}/readyz")

    assert public_metrics.status_code == 404, "not even from loopback"
    assert public_ready.status_code == 200 and public_ready.json() == {"ok": True}
    assert scraped.status_code == 200 and "supportbot_outbox_depth" in scraped.text
    assert detailed.status_code == 200 and detailed.json()["database"] == "reachable"


def test_a_metrics_port_that_is_the_public_port_is_refused_at_start_up(tmp_path: Path) -> None:
    result = supportbot(tmp_path, "run", PORT="9100", METRICS_PORT="9100")

    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "METRICS_PORT: Value error, must differ from PORT" in result.stderr


async def test_by_default_metrics_answer_loopback_peers_but_not_a_request_a_proxy_forwarded(
    harness: Harness,
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    async with httpx.AsyncClient() as client:
        local = await client.get(f"{harness.url}/metrics")
        proxied = await client.get(f"{harness.url}/metrics", headers=forwarded)
        proxied_ready = await client.get(f"{harness.url}/readyz", headers={"Forwarded": "for=203.0.113.9"})
        local_ready = await client.get(f"{harness.url}/readyz")

    assert local.status_code == 200
    assert proxied.status_code == 404 and "supportbot_" not in proxied.text
    assert proxied_ready.status_code == 200 and proxied_ready.json() == {"ok": True}
    assert local_ready.json()["database"] == "reachable"


def backlog_reads(text: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith("supportbot_backlog_reads_total")]
    return float(line.split()[1])


async def test_a_flood_of_scrapes_reads_the_backlog_once_per_interval(
    tmp_path: Path, kimi: FakeKimi, slack: FakeSlack
) -> None:
    async with running_bot(tmp_path, kimi, slack, metrics_cache_seconds=5.0) as harness, httpx.AsyncClient() as client:
        first = backlog_reads((await client.get(f"{harness.url}/metrics")).text)
        began = time.monotonic()
        flood = await asyncio.gather(*(client.get(f"{harness.url}/metrics") for _ in range(40)))
        elapsed = time.monotonic() - began
        assert all(r.status_code == 200 for r in flood)
        during = max(backlog_reads(r.text) for r in flood)
        assert during - first <= elapsed // 5.0, f"{during - first:.0f} reads for 40 scrapes in {elapsed:.1f} s"

        async def read_again() -> bool:  # and once the interval is over, a fresh read
            return backlog_reads((await client.get(f"{harness.url}/metrics")).text) > during

        await until(read_again, "a fresh backlog read", 10)
