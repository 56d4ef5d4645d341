"""``/healthz`` and Slack's event acks with and without a slow-loris (issue 20, the HTTP server).

The real ``supportbot run`` (``tests.processes.BotProcess``: the fake Kimi and the fake Slack, SQLite
in a temporary directory, ``LOG_LEVEL=WARNING``) is started with an open-files limit of
``--open-files``. First ``/healthz`` is asked back to back, each time on a new connection, for
``--seconds`` (with a signed Slack event every tenth request); then ``--attackers`` connections
from a child process (more than the bot's open-files limit) send request headers one line per
second and never finish them, each reconnecting when the bot closes it, while the same probes
run again. Only 127.0.0.1 is contacted; the attack stops after ``--seconds``.

    python -m bench.slowloris [--attackers 1500] [--open-files 1024] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._common import fmt_ms, markdown_table, percentile
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import KIMI_KEY, SLACK_TOKEN
from tests.processes import BotProcess
from tests.slowloris import Loris

PROBE_TIMEOUT = 3.0


@dataclass
class Probes:
    """What one phase saw: latencies of the answered probes and the count of failed ones."""

    healthz: list[float] = field(default_factory=list)
    acks: list[float] = field(default_factory=list)
    failures: int = 0


async def timed(request: Awaitable[httpx.Response], seen: Probes, latencies: list[float]) -> None:
    """Send one probe: its latency if it was answered 200, else one more failure."""
    began = time.monotonic()
    try:
        ok = (await request).status_code == 200
    except httpx.HTTPError:
        ok = False
    if ok:
        latencies.append(time.monotonic() - began)
    else:
        seen.failures += 1


async def probe(bot: BotProcess, seconds: float) -> Probes:
    seen = Probes()
    deadline = time.monotonic() + seconds
    # A fresh connection per probe, as an orchestrator's health check opens one.
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for sent in itertools.count(1):
            if time.monotonic() >= deadline:
                break
            await timed(client.get(f"{bot.base}/healthz"), seen, seen.healthz)
            if sent % 10 == 0:
                await timed(bot.sender.event(app_mention("<@UBOT> where is my order?")), seen, seen.acks)
            await asyncio.sleep(0.02)
    return seen


async def attacker(port: int, until: float, closed: list[int]) -> None:
    """One slow-loris that reconnects each time the bot closes it, until ``until``."""
    while (left := until - time.monotonic()) > 0:
        loris = Loris(port, every=1.0, lifetime=left)
        try:
            await loris.run()
        except OSError:
            await asyncio.sleep(0.1)  # refused or reset while connecting: try again
        if loris.closed_after is not None:
            closed[0] += 1


async def bot_cpu(bot: BotProcess) -> float:
    """The bot's CPU seconds so far (its own /metrics, from loopback)."""
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{bot.base}/metrics")).text
    return float(re.findall(r"^process_cpu_seconds_total (\S+)$", metrics, re.MULTILINE)[0])


async def attack(port: int, attackers: int, seconds: float) -> int:
    """Run the attackers for ``seconds``; how many times the bot closed one."""
    until = time.monotonic() + seconds
    closed = [0]
    await asyncio.gather(*(attacker(port, until, closed) for _ in range(attackers)))
    return closed[0]


def closed_by_reason(metrics: str) -> str:
    found = re.findall(r'^supportbot_http_connections_closed_total\{reason="(\w+)"\} (\S+)$', metrics, re.MULTILINE)
    return ", ".join(f"{reason} {float(count):.0f}" for reason, count in found) or "none"


async def bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-slowloris-") as home:
        async with FakeKimi(api_key=KIMI_KEY) as kimi, FakeSlack(bot_token=SLACK_TOKEN) as slack:
            bot = BotProcess(Path(home), kimi.base_url, slack, open_files=args.open_files, LOG_LEVEL="WARNING")
            await bot.start()
            try:
                quiet = await probe(bot, args.seconds)
                cpu_before = await bot_cpu(bot)
                logged_before = bot.stderr_path.stat().st_size
                # The attackers run in a process of their own, so the probes measure the bot, not
                # this process's event loop.
                attack = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.slowloris",
                    "--attack-port",
                    str(bot.port),
                    "--attackers",
                    str(args.attackers),
                    "--seconds",
                    str(args.seconds),
                    stdout=asyncio.subprocess.PIPE,
                )
                await asyncio.sleep(1.0)  # the attackers are connected
                attacked = await probe(bot, args.seconds - 1.0)
                closed = int((await attack.communicate())[0] or b"0")
                logged = bot.stderr_path.stat().st_size - logged_before
                cpu = await bot_cpu(bot) - cpu_before
                async with httpx.AsyncClient() as client:
                    metrics = (await client.get(f"{bot.base}/metrics")).text
            finally:
                await bot.stop()

    def row(phase: str, seen: Probes) -> list[object]:
        return [
            phase,
            len(seen.healthz),
            fmt_ms(percentile(seen.healthz, 50)),
            fmt_ms(percentile(seen.healthz, 99)),
            fmt_ms(max(seen.healthz, default=float("nan"))),
            fmt_ms(percentile(seen.acks, 50)),
            fmt_ms(percentile(seen.acks, 99)),
            seen.failures,
        ]

    headers = ["phase", "healthz", "p50 ms", "p99 ms", "max ms", "ack p50 ms", "ack p99 ms", "failed"]
    print(markdown_table(headers, [row("quiet", quiet), row(f"{args.attackers} slow-loris", attacked)]))
    print()
    print(f"open-files limit {args.open_files}; attacking connections closed by the bot: {closed}")
    print(f"closed by reason (/metrics): {closed_by_reason(metrics)}")
    print(f"bytes logged during the attack: {logged}; bot CPU during the attack: {cpu:.1f} s in {args.seconds:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attackers", type=int, default=1500, help="slow-loris connections at once")
    parser.add_argument("--open-files", type=int, default=1024, help="the bot's open-files limit")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--attack-port", type=int, help=argparse.SUPPRESS)  # the attacking child process
    args = parser.parse_args(argv)
    if args.attack_port is not None:
        print(asyncio.run(attack(args.attack_port, args.attackers, args.seconds)))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
