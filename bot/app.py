"""The running service: the core, the configured platform adapters, the policy watcher and the
HTTP server (``/slack/events``, ``/healthz``, ``/readyz``, ``/metrics``).

The HTTP server runs under :mod:`bot.http_guard` (header and body timeouts, a connection cap);
``/metrics`` and the detailed ``/readyz`` are for the operator only (:mod:`bot.operator_access`),
and their SQL figures are reused for ``METRICS_CACHE_SECONDS`` (:mod:`bot.recent`).

Adapters are found through the ``supportbot.platforms`` entry-point group, so the core never
imports one. The routes that take events and clicks answer 503 until the core and every
configured platform are started (Slack retries an event it got a 503 for); ``/readyz`` stays
failing while a platform is disconnected, and a watchdog reconnects it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from aiohttp import web

from bot import logs, metrics
from bot.core.copilot import Copilot
from bot.errors import ConfigError
from bot.http_guard import ConnectionGuard, GuardedRunner, HttpLimits, deepen_listen_queue, open_files_cap
from bot.kimi import KimiClient
from bot.llm.knowledge import KnowledgeSync, knowledge_paths
from bot.llm.setup import start_client
from bot.operator_access import OperatorAccess, Verdict, refusal
from bot.policy import Policy, PolicyStore
from bot.ports import STARTING_UP, STARTING_UP_HEADERS, PlatformAdapter, PlatformFactory
from bot.recent import Recent
from bot.secret_values import configured_secrets
from bot.settings import Settings
from bot.store import Database, create_engine, database_reachable, upgrade_database
from tools import KnowledgeBase, ToolRegistry, default_tools
from tools.orders import HttpOrderBackend, OrderBackend, SqlOrderBackend

log = logging.getLogger(__name__)

#: Seconds a platform may stay disconnected before the watchdog reconnects it.
RECONNECT_AFTER = 5.0
#: The longest one phase of a shutdown may take.
STOP_PHASE_SECONDS = 15.0


def platform_factories() -> dict[str, PlatformFactory]:
    """Every installed platform adapter, by name."""
    return {ep.name: ep.load() for ep in entry_points(group="supportbot.platforms")}


def build_tools(
    policy: Policy, policy_path: Path, orders: OrderBackend, synced: KnowledgeBase | None = None
) -> ToolRegistry:
    knowledge = None
    if policy.knowledge.files:
        knowledge = (
            synced
            if synced is not None
            else KnowledgeBase.from_files(knowledge_paths(policy_path, policy.knowledge.files))
        )
    return default_tools(orders, knowledge)


class Supportbot:
    """Everything ``supportbot run`` starts, as one object (tests start it the same way)."""

    def __init__(self, settings: Settings, factories: dict[str, PlatformFactory] | None = None) -> None:
        self.settings = settings
        self._factories = factories if factories is not None else platform_factories()
        self.platforms: list[PlatformAdapter] = []
        self.core: Copilot | None = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._guard: ConnectionGuard | None = None
        self._access = OperatorAccess(settings.metrics_token, separate_port=settings.metrics_port is not None)
        self._backlog: Recent[metrics.Backlog] | None = None
        self._database: Recent[bool] | None = None
        self.port = settings.port
        self.metrics_port = settings.metrics_port
        self.ready = False
        self.stopping = False
        self._platform_routes: set[str] = set()
        self._kimi: KimiClient | None = None
        self._orders: OrderBackend | None = None

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
        chat = self.settings.platforms.values()
        if not self.platforms and not half_configured:
            problems.append(
                f"no platform is configured: set {', or '.join(p.enabled_by for p in chat if p.enabled_by)}"
                " (or PLAYGROUND_ENABLED=true for the local playground)"
            )
        desks = [p.review_desk for p in self.platforms if p.review_desk is not None]
        if self.platforms and not desks:
            problems.append(f"no review desk: set {' or '.join(p.desk_set_by for p in chat if p.desk_set_by)}")
        if problems:
            raise ConfigError("cannot start:\n  - " + "\n  - ".join(problems))

    async def start(self) -> None:
        """Start everything, or raise (:class:`ConfigError` for a setting, a key or a model that is
        wrong) having released whatever was already taken: the database, the clients, the server."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self._configure_platforms()
        settings = self.settings
        assert settings.moonshot_api_key is not None
        self.engine = create_engine(settings.database_url)
        await upgrade_database(self.engine)
        self.db = Database(self.engine)
        secrets = configured_secrets(settings)  # no knowledge file may hold one
        policy = PolicyStore(settings.policy_file, secrets=secrets)
        logs.follow_policy(lambda: policy.current.logs.redact_personal_data)
        if settings.orders_backend == "http":
            if not settings.orders_api_url:
                raise ConfigError("ORDERS_BACKEND=http needs ORDERS_API_URL")
            token = settings.orders_api_token.get_secret_value() if settings.orders_api_token else None
            orders: OrderBackend = HttpOrderBackend(settings.orders_api_url, token)
        else:
            orders = SqlOrderBackend(self.engine, reads=self.db.reads)
        self._orders = orders
        kimi, _catalog = await start_client(settings, policy.current)  # the limiter, breakers, models check
        self._kimi = kimi
        knowledge = KnowledgeSync(self.engine, kimi, secrets=secrets)  # knowledge files through Kimi's files API

        def knowledge_files() -> list[Path]:
            return knowledge_paths(settings.policy_file, policy.current.knowledge.files)

        await knowledge.sync_if_changed(knowledge_files())
        core = Copilot(
            settings,
            self.db,
            policy,
            kimi,
            orders,
            lambda current: build_tools(current, settings.policy_file, orders, knowledge.base),
        )
        self.core = core
        for platform in self.platforms:
            core.add_channel(platform.customer_channel)
            files = platform.files
            if files is not None:
                core.add_files(platform.name, files)
            desk = platform.review_desk
            if desk is not None:
                core.add_desk(desk, preferred=platform.desk_preferred)
        engine = self.engine
        self._backlog = Recent(lambda: metrics.store_backlog(core.db.reads), settings.metrics_cache_seconds)
        self._database = Recent(lambda: database_reachable(engine), settings.metrics_cache_seconds)
        guard = self._guard = self._connection_guard()
        guard.install()
        # The server is up first (liveness, and a 503 for early events), ready once all is.
        app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[self._gate])
        self._add_probes(app, on_metrics_port=False)
        for platform in self.platforms:
            routes = list(platform.routes())
            self._platform_routes.update(getattr(r, "path", "") for r in routes)
            app.add_routes(routes)
        self._runner = GuardedRunner(app, guard, access_log=None, shutdown_timeout=5.0)
        self.port = await _serve(self._runner, settings.host, settings.port)
        if settings.metrics_port is not None:
            internal = web.Application()
            self._add_probes(internal, on_metrics_port=True)
            self._metrics_runner = GuardedRunner(internal, guard, access_log=None, shutdown_timeout=5.0)
            self.metrics_port = await _serve(self._metrics_runner, settings.metrics_host, settings.metrics_port)
        core.supervisor.keep_running("http-guard", guard.watch)
        for platform in self.platforms:
            await platform.start(core)
        core.background.start(self.settings.drafting_concurrency)
        core.supervisor.keep_running(
            "policy-watcher", lambda: policy.watch(settings.policy_reload_seconds, core.policy_rejected)
        )
        core.supervisor.keep_running("platform-watchdog", self._watchdog)
        core.supervisor.keep_running(
            "knowledge-sync", lambda: knowledge.watch(knowledge_files, settings.policy_reload_seconds)
        )
        self.ready = True
        logs.log_startup(  # one line saying what is in force
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

    def _connection_guard(self) -> ConnectionGuard:
        wanted = self.settings.http_max_connections
        cap = open_files_cap(wanted)
        if cap < wanted:
            log.warning(
                "HTTP_MAX_CONNECTIONS=%d does not fit the open-files limit; serving at most %d connections", wanted, cap
            )
        return ConnectionGuard(
            HttpLimits(self.settings.http_header_timeout_seconds, self.settings.http_body_timeout_seconds, cap)
        )

    def _add_probes(self, app: web.Application, *, on_metrics_port: bool) -> None:
        """``/healthz`` everywhere; ``/metrics`` on the metrics port when there is one, else here;
        ``/readyz`` everywhere (its details for the operator only)."""

        async def readyz(request: web.Request) -> web.Response:
            return await self._readyz(request, on_metrics_port=on_metrics_port)

        async def scrape(request: web.Request) -> web.Response:
            return await self._metrics(request, on_metrics_port=on_metrics_port)

        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", readyz)
        if on_metrics_port or self.settings.metrics_port is None:
            app.router.add_get("/metrics", scrape)

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Events and clicks wait for readiness: a 503 makes Slack retry, never lose them."""
        if not self.ready and request.path in self._platform_routes:
            return web.Response(text=STARTING_UP, status=503, headers=STARTING_UP_HEADERS)
        return await handler(request)

    async def _watchdog(self) -> None:
        """Reconnect a platform whose connection died (gateway task ended, socket closed)."""
        down_since: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            for platform in self.platforms:
                if _connected(platform):
                    down_since.pop(platform.name, None)
                    continue
                since = down_since.setdefault(platform.name, loop.time())
                if loop.time() - since >= RECONNECT_AFTER:
                    log.warning("%s has been disconnected for %.0f s; reconnecting", platform.name, loop.time() - since)
                    down_since.pop(platform.name, None)
                    reconnect = getattr(platform, "reconnect", None)
                    if reconnect is not None:
                        await reconnect()

    async def stop(self) -> None:
        """Wind down first: ``/readyz`` turns 503 (a load balancer sends traffic elsewhere), no
        new draft or delivery starts, and what is in flight gets ``SHUTDOWN_GRACE_SECONDS`` to
        finish while the platforms are still connected (what arrives meanwhile is still recorded).
        Then stop taking traffic (platforms, then the HTTP server, letting in-flight acks finish),
        cancel the background rooms, close the clients and the database. Every phase is bounded:
        a phase that does not end in time is logged with where its tasks wait and left behind, so a
        shutdown never hangs (what it leaves is resumed from SQL by the next run)."""
        if self.stopping:
            return
        self.stopping = True
        if self.core is not None and self.ready:
            core, grace = self.core, self.settings.shutdown_grace_seconds

            async def wind_down() -> None:
                log.info("stopping: work in flight has %.0f s to finish", grace)
                if not await core.background.wind_down(grace):
                    log.warning("stopping: what is still in flight after %.0f s is left to the next run", grace)

            await _bounded("finishing the work in flight", wind_down(), grace + 1.0)
        self.ready = False
        for platform in self.platforms:
            await _bounded(f"stopping {platform.name}", platform.stop(), STOP_PHASE_SECONDS)
        if self._runner is not None:
            await _bounded("stopping the HTTP server", self._runner.cleanup(), STOP_PHASE_SECONDS)
        if self._metrics_runner is not None:
            await _bounded("stopping the metrics server", self._metrics_runner.cleanup(), STOP_PHASE_SECONDS)
        if self._guard is not None:
            self._guard.uninstall()
        if self.core is not None:
            await _bounded("stopping the background work", self.core.background.close(), STOP_PHASE_SECONDS)
            await _bounded("handing back the work cut off", self._hand_back(self.core), STOP_PHASE_SECONDS)
        if self._kimi is not None:
            await _bounded("closing the Kimi client", self._kimi.aclose(), STOP_PHASE_SECONDS)
        close = getattr(self._orders, "aclose", None)
        if close is not None:
            await _bounded("closing the shop backend", close(), STOP_PHASE_SECONDS)
        if hasattr(self, "db"):
            await _bounded("closing the database", self.db.dispose(), STOP_PHASE_SECONDS)
        elif hasattr(self, "engine"):  # the schema upgrade failed
            await _bounded("closing the database", self.engine.dispose(), STOP_PHASE_SECONDS)

    @staticmethod
    async def _hand_back(core: Copilot) -> None:
        drafts, replies = await core.leases.hand_back()
        if drafts or replies:
            log.info("stopping: handed back %d draft(s) and %d reply(ies) to the next run", drafts, replies)

    async def _healthz(self, _request: web.Request) -> web.Response:
        """Liveness: the process answers (no SQL, nothing that can wait)."""
        return web.json_response({"ok": True})

    async def _readyz(self, request: web.Request, *, on_metrics_port: bool) -> web.Response:
        """Readiness: started, the database answers (checked at most once per
        ``METRICS_CACHE_SECONDS``), and every platform is connected. The status is for everyone;
        the details are for the operator."""
        database = await self._database.get() if self._database is not None else False
        platforms = {p.name: _connected(p) for p in self.platforms}
        ok = self.ready and not self.stopping and database and all(platforms.values())
        status = 200 if ok else 503
        if self._access.verdict(request, on_metrics_port=on_metrics_port) is not Verdict.ALLOWED:
            return web.json_response({"ok": ok}, status=status)
        body: dict[str, Any] = {
            "ok": ok,
            "started": self.ready,
            "stopping": self.stopping,
            "database": "reachable" if database else "unreachable",
            "platforms": {name: "connected" if up else "disconnected" for name, up in platforms.items()},
        }
        return web.json_response(body, status=status)

    async def _metrics(self, request: web.Request, *, on_metrics_port: bool) -> web.Response:
        """The process, the step histograms, the backlog (read at most once per
        ``METRICS_CACHE_SECONDS``) and the counters, for the operator."""
        verdict = self._access.verdict(request, on_metrics_port=on_metrics_port)
        if verdict is not Verdict.ALLOWED:
            return refusal(verdict)
        assert self.core is not None and self._backlog is not None
        core = self.core
        return await metrics.handler(self._backlog.get, lambda: core.metrics, core.kimi.metrics)(request)


async def _serve(runner: web.AppRunner, host: str, port: int) -> int:
    """Start ``runner`` on ``host:port``; the port it listens on (``port`` 0 picks one)."""
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    deepen_listen_queue(site)
    return int(runner.addresses[0][1])


async def _bounded(phase: str, work: Coroutine[Any, Any, Any], seconds: float) -> None:
    """Run one shutdown phase for at most ``seconds``; a failure or an overrun is logged, and the
    shutdown goes on."""
    task = asyncio.ensure_future(work)
    done, _pending = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.error("%s took longer than %.0f s; going on without it", phase, seconds)
        _log_tasks()
        task.cancel()
        return
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", phase, exc_info=task.exception())


def _log_tasks() -> None:
    """Log where every task of the process is waiting (an operator's ``kill -USR1``): the chain
    of coroutines each one is suspended in, innermost last."""
    for task in asyncio.all_tasks():
        chain: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(chain) < 30:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        log.warning("task %s waits in:\n  %s", task.get_name(), "\n  ".join(chain))


def _connected(platform: PlatformAdapter) -> bool:
    return bool(getattr(platform, "connected", True))


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    bot = Supportbot(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGUSR1, _log_tasks)  # kill -USR1: what is every task waiting on
    try:
        await bot.start()
        await stop.wait()
    finally:
        await bot.stop()
