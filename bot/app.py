"""The running service: the core, the configured platform adapters, the outbox dispatcher,
the policy watcher and the HTTP server (``/slack/events``, ``/healthz``, ``/metrics``).

Adapters are found through the ``supportbot.platforms`` entry-point group, so the core never
imports one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from aiohttp import web

from bot import logs, metrics
from bot.dispatcher import OutboxDispatcher
from bot.errors import ConfigError
from bot.kimi import KimiClient
from bot.policy import Policy, PolicyStore
from bot.ports import PlatformAdapter, PlatformFactory
from bot.service import Copilot
from bot.settings import Settings
from bot.store import create_engine, database_reachable, reader_engine, upgrade_database
from tools import KnowledgeBase, ToolRegistry, default_tools
from tools.orders import HttpOrderBackend, OrderBackend, SqlOrderBackend

log = logging.getLogger(__name__)


def platform_factories() -> dict[str, PlatformFactory]:
    """Every installed platform adapter, by name."""
    return {ep.name: ep.load() for ep in entry_points(group="supportbot.platforms")}


def build_tools(policy: Policy, policy_path: Path, orders: OrderBackend) -> ToolRegistry:
    knowledge = None
    if policy.knowledge.files:
        base = policy_path.parent
        knowledge = KnowledgeBase.from_files([base / name for name in policy.knowledge.files])
    return default_tools(orders, knowledge)


class Supportbot:
    """Everything ``supportbot run`` starts, as one object (tests start it the same way)."""

    def __init__(self, settings: Settings, factories: dict[str, PlatformFactory] | None = None) -> None:
        self.settings = settings
        self._factories = factories if factories is not None else platform_factories()
        self.platforms: list[PlatformAdapter] = []
        self.core: Copilot | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.port = settings.port

    def _configure_platforms(self) -> None:
        problems: list[str] = []
        if self.settings.moonshot_api_key is None:
            problems.append("MOONSHOT_API_KEY is missing (the Kimi API key)")
        half_configured = False
        for _name, factory in sorted(self._factories.items()):
            try:
                platform = factory(self.settings)
            except ConfigError as exc:
                problems.append(str(exc))
                half_configured = True
                continue
            if platform is not None:
                self.platforms.append(platform)
        if not self.platforms and not half_configured:
            problems.append(
                "no platform is configured: set SLACK_BOT_TOKEN and friends, or DISCORD_BOT_TOKEN"
                " (or PLAYGROUND_ENABLED=true for the local playground)"
            )
        desks = [p.review_desk for p in self.platforms if p.review_desk is not None]
        if self.platforms and not desks:
            problems.append("no review desk: set SLACK_REVIEW_CHANNEL (or DISCORD_REVIEW_CHANNEL)")
        if problems:
            raise ConfigError("cannot start:\n  - " + "\n  - ".join(problems))

    async def start(self) -> None:
        self._configure_platforms()
        settings = self.settings
        assert settings.moonshot_api_key is not None
        self.engine = create_engine(settings.database_url)
        await upgrade_database(self.engine)
        read_engine = reader_engine(self.engine)
        policy = PolicyStore(settings.policy_file)
        logs.follow_policy(lambda: policy.current.logs.redact_personal_data)  # bot/logs.py
        if settings.orders_backend == "http":
            if not settings.orders_api_url:
                raise ConfigError("ORDERS_BACKEND=http needs ORDERS_API_URL")
            token = settings.orders_api_token.get_secret_value() if settings.orders_api_token else None
            orders: OrderBackend = HttpOrderBackend(settings.orders_api_url, token)
        else:
            orders = SqlOrderBackend(self.engine, reads=read_engine)
        kimi = KimiClient(
            settings.kimi_base_url,
            settings.moonshot_api_key,
            timeout=settings.kimi_timeout_seconds,
            max_retries=settings.kimi_max_retries,
            max_concurrency=settings.kimi_max_concurrency,
        )
        core = Copilot(
            settings,
            self.engine,
            policy,
            kimi,
            orders,
            lambda current: build_tools(current, settings.policy_file, orders),
            read_engine,
        )
        self.core = core
        for platform in self.platforms:
            core.add_channel(platform.customer_channel)
            desk = platform.review_desk
            if desk is not None:
                core.add_desk(desk, preferred=platform.name == "discord" and bool(settings.discord_review_channel))
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        for platform in self.platforms:
            app.add_routes(platform.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.host, settings.port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        for platform in self.platforms:
            await platform.start(core)
        self.dispatcher = OutboxDispatcher(core)
        self._tasks.append(asyncio.create_task(self.dispatcher.run()))
        self._tasks.append(asyncio.create_task(policy.watch(settings.policy_reload_seconds, self._policy_rejected)))
        await core.resume_drafting()
        logs.log_startup(  # bot/logs.py: one line saying what is in force
            log,
            address=f"{settings.host}:{self.port}",
            policy_file=str(settings.policy_file),
            policy_version=policy.current.version,
            policy_found=settings.policy_file.exists(),
            platforms=[p.name for p in self.platforms],
            desk=core.desk.name if core.desk else "none",
            models={
                "default": settings.kimi_model,
                "fallback": settings.kimi_fallback_model or "",
                "drafting": policy.current.models.drafting,
                "summarizing": policy.current.models.summarizing,
            },
        )

    async def _policy_rejected(self, error: Any) -> None:
        if self.core is not None:
            await self.core.policy_rejected(error)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for platform in self.platforms:
            try:
                await platform.stop()
            except Exception:
                log.exception("stopping %s failed", platform.name)
        if self.core is not None:
            await self.core.drain(timeout=10)
            await self.core.cancel_background()
            await self.core.kimi.aclose()
            close = getattr(self.core.orders, "aclose", None)
            if close is not None:
                await close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.core is not None and self.core.read_engine is not self.engine:
            await self.core.read_engine.dispose()
        if hasattr(self, "engine"):
            await self.engine.dispose()

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok = await database_reachable(self.engine)
        return web.json_response(
            {"ok": ok, "database": "reachable" if ok else "unreachable"}, status=200 if ok else 503
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.core is not None
        core = self.core  # bot/metrics.py: the process, the step histograms, the backlog read at scrape time
        return await metrics.handler(lambda: metrics.store_backlog(core.read_engine), lambda: core.metrics)(request)


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    bot = Supportbot(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await bot.start()
        await stop.wait()
    finally:
        await bot.stop()
