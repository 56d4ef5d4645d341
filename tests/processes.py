"""``supportbot run`` as a real subprocess, configured only by environment variables, for the
tests that drive it from outside as a support team's traffic would (and kill it with -9)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import SlackSender
from tests.harness import KIMI_KEY, REVIEW_CHANNEL, SIGNING_SECRET, SLACK_TOKEN, sample_orders

BIN = Path(sys.executable).parent
SUPPORTBOT = str(BIN / "supportbot")


def operator_env(home: Path, **variables: str) -> dict[str, str]:
    """PATH, HOME and exactly the variables under test. SUPPORTBOT_SECRETS_DIR points at a
    directory that does not exist, so a /run/secrets on the test machine cannot leak in."""
    return {
        "PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(home),
        "SUPPORTBOT_SECRETS_DIR": str(home / "no-secrets-here"),
        **variables,
    }


def supportbot(cwd: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run one installed ``supportbot`` command in ``cwd`` with only ``variables`` set."""
    return subprocess.run(
        [SUPPORTBOT, *args],
        cwd=cwd,
        env=operator_env(cwd, **variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def playground_env(home: Path, kimi_url: str, port: int, database_url: str, **variables: str) -> dict[str, str]:
    """The environment of a ``supportbot run`` with only the Kimi key (the fake's), on
    127.0.0.1: no chat platform, so the playground opens by itself."""
    return operator_env(
        home,
        **{
            "MOONSHOT_API_KEY": KIMI_KEY,
            "KIMI_BASE_URL": kimi_url,
            "DATABASE_URL": database_url,
            "POLICY_FILE": str(home / "policy.toml"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            **variables,
        },
    )


def slack_bot_env(
    home: Path, kimi_url: str, slack: FakeSlack, port: int, database_url: str, **variables: str
) -> dict[str, str]:
    """The environment of a ``supportbot run`` on the fake Kimi and the fake Slack, on 127.0.0.1."""
    return playground_env(
        home,
        kimi_url,
        port,
        database_url,
        **{
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.base_url,
            "SLACK_REVIEW_CHANNEL": REVIEW_CHANNEL,
            **variables,
        },
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed_orders(database_url: str, path: Path, rows: list[dict[str, Any]] | None = None) -> None:
    """The shop's orders, loaded in-process."""
    from bot.store import create_engine, upgrade_database
    from tools import import_orders

    path.write_text("\n".join(json.dumps(row) for row in rows or sample_orders()) + "\n")
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        await import_orders(engine, path)
    finally:
        await engine.dispose()


class RunProcess:
    """One ``supportbot run`` process at a time in ``home``; ``env`` makes its environment from
    the port and the database URL (:func:`playground_env`, :func:`slack_bot_env`)."""

    def __init__(self, home: Path, env: Callable[[int, str], dict[str, str]], *, open_files: int | None = None) -> None:
        """``open_files``: the process's open-files limit (soft and hard), as a host may set it."""
        self.home = home
        self.open_files = open_files
        self.port = free_port()
        self.database_url = f"sqlite+aiosqlite:///{home / 'supportbot.db'}"
        self.env = env(self.port, self.database_url)
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.runs = 0

    @property
    def stderr_path(self) -> Path:
        return self.home / f"run{self.runs}.stderr"

    async def start(self, *, wait_ready: bool = True) -> None:
        self.runs += 1
        with (self.home / f"run{self.runs}.stdout").open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = await asyncio.create_subprocess_exec(
                SUPPORTBOT, "run", cwd=self.home, env=self.env, stdout=out, stderr=err, preexec_fn=self._limits
            )
        if wait_ready:
            await self.wait_ready()

    def _limits(self) -> None:
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"supportbot run exited early:\n{self.stderr_path.read_text()}")
                try:
                    if (await client.get(f"{self.base}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"/readyz never answered 200:\n{self.stderr_path.read_text()}"
                await asyncio.sleep(0.05)

    def peak_rss(self) -> PeakRss:
        """``async with run.peak_rss() as rss:`` samples the running process's RSS (:class:`PeakRss`)."""
        assert self.process is not None
        return PeakRss(self.process.pid)

    async def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class BotProcess(RunProcess):
    """``supportbot run`` against the fake Kimi and the fake Slack."""

    def __init__(
        self, home: Path, kimi_url: str, slack: FakeSlack, *, open_files: int | None = None, **variables: str
    ) -> None:
        super().__init__(
            home,
            lambda port, database_url: slack_bot_env(
                home,
                kimi_url,
                slack,
                port,
                database_url,
                KIMI_TIMEOUT_SECONDS="4",
                WORK_LEASE_SECONDS="6",
                **variables,
            ),
            open_files=open_files,
        )
        self.slack = slack
        self.sender = SlackSender(f"{self.base}/slack/events", SIGNING_SECRET, mirror_to=slack)

    @classmethod
    def on_both_platforms(cls, home: Path, kimi_url: str, slack: FakeSlack, discord: FakeDiscord) -> BotProcess:
        """The bot on Slack and on ``discord``'s gateway at once."""
        return cls(home, kimi_url, slack, DISCORD_BOT_TOKEN=discord.token, DISCORD_API_URL=discord.api_url)

    def cards(self) -> list[Any]:
        return [
            c
            for c in self.slack.calls_to("chat.postMessage")
            if c.params.get("channel") == REVIEW_CHANNEL and c.params.get("blocks")
        ]


@contextlib.asynccontextmanager
async def running(bot: BotProcess) -> AsyncIterator[BotProcess]:
    """``bot`` started on the sample orders, stopped (SIGTERM) on the way out."""
    await seed_orders(bot.database_url, bot.home / "orders.jsonl")
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


@contextlib.asynccontextmanager
async def with_discord(
    home: Path, kimi_url: str, slack: FakeSlack
) -> AsyncIterator[tuple[BotProcess, FakeDiscord]]:
    """The bot on Slack and on the fake Discord gateway, :func:`running`."""
    async with (
        FakeDiscord() as discord,
        running(BotProcess.on_both_platforms(home, kimi_url, slack, discord)) as bot,
    ):
        yield bot, discord


class PeakRss:
    """A process's peak RSS above its RSS on entry, sampled every 20 ms while the block runs::

    async with PeakRss(pid) as rss:
        ...
    assert rss.growth < 64 * 1024 * 1024
    """

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = 0
        self._sampler: asyncio.Task[None] | None = None

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    async def __aenter__(self) -> PeakRss:
        self.baseline = self.peak = self.process.memory_info().rss
        self._sampler = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._sampler is not None
        self._sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sampler

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.02)
