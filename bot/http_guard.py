"""Limits at the HTTP edge that aiohttp does not have: a header timeout, a body timeout and a
connection cap that makes room by closing the slowest incomplete requests first.

aiohttp closes an idle keep-alive connection after its keep-alive timeout, but a connection
that sends its request headers one byte at a time (a slow-loris) stays open for ever, and at the
descriptor limit the event loop can no longer accept anyone (``/healthz`` and Slack's events
fail) while asyncio logs a traceback for every refused accept. Here:

- :class:`GuardedRequestHandler` (aiohttp's protocol, one per connection) knows its phase: its
  request headers are incomplete (a fresh connection counts), it is idle between keep-alive
  requests, its body is still arriving, or a handler is working on it;
- :class:`ConnectionGuard` holds the open connections. At the cap a new connection makes room
  by closing others in :func:`victims` order; one watchdog pass (:meth:`ConnectionGuard.watch`,
  run by the core's supervisor) closes the requests that overran their timeout and logs what it
  closed as one line per :data:`REPORT_SECONDS`, never a line per connection;
- :class:`GuardedRunner` is aiohttp's ``AppRunner`` serving through those two.

The cap is kept under the process's open-files limit (:func:`open_files_cap`), so the listening
socket never runs out of descriptors; if it does anyway, asyncio's per-accept error is counted
into the same line instead of logged.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import logging
import resource
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from bot import metrics

log = logging.getLogger(__name__)

#: How often the watchdog looks for requests past their timeout.
TICK_SECONDS = 0.25
#: At most one line about closed connections per this many seconds.
REPORT_SECONDS = 10.0
#: Descriptors kept for everything but inbound connections: the database, the clients of Slack,
#: Discord and Kimi, and the sockets accepted before room is made for them (up to 128 per
#: accept pass, a few passes while a flood is being closed).
DESCRIPTOR_RESERVE = 512
#: Connections the kernel holds for the server before it accepts them. asyncio listens with the
#: number of connections it accepts per pass (aiohttp's 128); past a full queue a new client's
#: SYN is dropped and resent a second later, so a burst of attackers would delay everyone.
LISTEN_QUEUE = 1024
_ACCEPT_FAILED = "socket.accept() out of system resource"

T = TypeVar("T")


class Phase(enum.IntEnum):
    """Where a connection is; at the cap the lowest phase is closed first."""

    HEADERS = 0  # a request whose headers are not complete yet (a fresh connection counts)
    IDLE = 1  # keep-alive, between two requests
    BODY = 2  # headers complete, the body still arriving
    ACTIVE = 3  # a handler is working on a complete request: never closed to make room


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """A connection's phase and since when (the event loop's clock) it has been in it."""

    phase: Phase
    since: float


def victims(connections: Iterable[tuple[T, ConnectionState]], count: int) -> list[T]:
    """The ``count`` connections to close first to make room: incomplete headers (oldest first),
    then idle keep-alive (longest idle first), then bodies still arriving (oldest first); never a
    connection whose request is being handled."""
    ranked = (
        (state.phase, state.since, order, connection)
        for order, (connection, state) in enumerate(connections)
        if state.phase is not Phase.ACTIVE
    )
    return [connection for *_, connection in heapq.nsmallest(count, ranked)]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """``HTTP_HEADER_TIMEOUT_SECONDS``, ``HTTP_BODY_TIMEOUT_SECONDS`` and the connection cap in force."""

    header_timeout: float
    body_timeout: float
    max_connections: int


def open_files_cap(wanted: int, reserve: int = DESCRIPTOR_RESERVE) -> int:
    """The connection cap this process can keep: raise the soft open-files limit towards the
    hard one if ``wanted`` connections plus a reserve need it, and serve fewer connections when
    the limit cannot be raised far enough (under a low limit, half of it stays in reserve)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + reserve
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as exc:  # the cap below then follows the limit as it is
            log.info("could not raise the open-files limit to %d (%s): keeping %d", raised, exc, soft)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - min(reserve, soft // 2)))


def deepen_listen_queue(site: web.BaseSite) -> None:
    """Let the kernel queue :data:`LISTEN_QUEUE` connections for ``site`` (capped by its
    ``somaxconn``), while asyncio still accepts at most its own backlog per pass."""
    server = getattr(site, "_server", None)  # aiohttp keeps the asyncio server private
    for listening in getattr(server, "sockets", None) or ():
        with socket.fromfd(listening.fileno(), listening.family, listening.type) as same_socket:
            same_socket.listen(LISTEN_QUEUE)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, knowing its :class:`Phase` for the guard."""

    __slots__ = ("_body", "_guard", "_phase", "_since")

    def __init__(self, manager: GuardedServer, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._phase = Phase.HEADERS
        self._since = guard.now()
        self._body: StreamReader | None = None

    @property
    def state(self) -> ConnectionState:
        if self._phase is Phase.BODY and self._body is not None and self._body.is_eof():
            return ConnectionState(Phase.ACTIVE, self._since)
        return ConnectionState(self._phase, self._since)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._since = self._guard.now()
        self._guard.admit(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._phase is Phase.IDLE:  # the first bytes of the next request
            self._phase, self._since = Phase.HEADERS, self._guard.now()
            self._guard.waiting_for_headers(self)
        super().data_received(data)

    def request_began(self, body: StreamReader) -> None:
        """The headers are complete and a handler takes the request."""
        self._phase, self._since, self._body = Phase.BODY, self._guard.now(), body
        self._guard.headers_complete(self)

    def request_ended(self) -> None:
        self._phase, self._since, self._body = Phase.IDLE, self._guard.now(), None


Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class GuardedServer(Server):
    """aiohttp's low-level server (the protocol factory) making :class:`GuardedRequestHandler`
    connections and telling each when a handler takes and finishes its request."""

    def __init__(
        self,
        guard: ConnectionGuard,
        handler: Handler,
        *,
        loop: asyncio.AbstractEventLoop,
        request_factory: Any,
        handler_cancellation: bool,
        **protocol_kwargs: Any,
    ) -> None:
        super().__init__(
            self._tracked(handler),
            request_factory=request_factory,
            handler_cancellation=handler_cancellation,
            loop=loop,
            **protocol_kwargs,
        )
        self._guard = guard
        self._protocol_loop = loop
        self._protocol_kwargs = protocol_kwargs

    def __call__(self) -> RequestHandler:
        self._guard.arriving()
        return GuardedRequestHandler(self, self._guard, loop=self._protocol_loop, **self._protocol_kwargs)

    @staticmethod
    def _tracked(handler: Handler) -> Handler:
        async def tracked(request: BaseRequest) -> web.StreamResponse:
            connection = request.protocol
            if isinstance(connection, GuardedRequestHandler):
                connection.request_began(request.content)
            try:
                return await handler(request)
            except ConnectionError:
                if request.transport is not None and not request.transport.is_closing():
                    raise
                # The connection is gone (the guard closed it mid-body, or the client left):
                # nobody can read an answer, and aiohttp would log a traceback per connection.
                return web.Response(status=408)
            finally:
                if isinstance(connection, GuardedRequestHandler):
                    connection.request_ended()

        return tracked


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`GuardedServer` under ``guard``."""

    __slots__ = ("_guard", "_server_kwargs")

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard
        self._server_kwargs = {k: v for k, v in kwargs.items() if k not in {"shutdown_timeout", "handle_signals"}}

    async def _make_server(self) -> Server:
        plain = await super()._make_server()  # runs the application's start-up and freezes it
        return GuardedServer(
            self._guard,
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **self._server_kwargs,
        )


class ConnectionGuard:
    """The open connections of the HTTP server(s), the cap on them, and their timeouts."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self._open: dict[GuardedRequestHandler, None] = {}  # in arrival order
        # Those whose request headers are incomplete, in the order they began waiting for them:
        # oldest first, so the arrival path takes its victims from the front instead of ranking
        # every open connection (a reconnecting flood brings thousands of newcomers a second).
        self._incomplete: dict[GuardedRequestHandler, None] = {}
        self._arriving = 0  # accepted, protocol made, not admitted yet
        self._closed: Counter[str] = Counter()  # since the last report
        self._reported_at = float("-inf")
        self._previous_handler: Any = None
        self._installed = False
        self._noise = _AiohttpNoise(self._closed)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def arriving(self) -> None:
        """A connection was accepted and its protocol is being made: make room for it now, a
        loop iteration before it is admitted, so descriptors are freed as early as possible. Only
        connections with incomplete headers go here: they rank before the newcomer anyway, while
        an idle or slow-body one might rank after the other newcomers of the same pass."""
        self._arriving += 1
        asyncio.get_running_loop().call_soon(self._arrived)  # runs just before its connection_made
        over = len(self._open) + self._arriving - self.limits.max_connections
        for victim in list(itertools.islice(self._incomplete, max(0, over))):
            self._close(victim, "cap")

    def _arrived(self) -> None:
        self._arriving -= 1

    def admit(self, connection: GuardedRequestHandler) -> None:
        """A new connection: closed at once if the server is still over its cap (every other
        connection is being answered)."""
        self._open[connection] = None
        self._incomplete[connection] = None
        over = len(self._open) - self.limits.max_connections
        if over > 0 and self._make_room(over, keep=connection) == 0:
            self._close(connection, "full")

    def waiting_for_headers(self, connection: GuardedRequestHandler) -> None:
        """A kept-alive connection began its next request."""
        if connection in self._open:
            self._incomplete[connection] = None

    def headers_complete(self, connection: GuardedRequestHandler) -> None:
        """A handler took the connection's request: no newcomer closes it any more."""
        self._incomplete.pop(connection, None)

    def _make_room(self, over: int, keep: GuardedRequestHandler) -> int:
        """Close ``over`` connections other than ``keep`` in :func:`victims` order (or a batch of
        them, so that a flood of connections does not rank every open one for each newcomer);
        how many were closed."""
        batch = max(over, self.limits.max_connections // 50)
        chosen = victims(((c, c.state) for c in self._open if c is not keep), batch)
        for victim in chosen:
            self._close(victim, "cap")
        return len(chosen)

    def forget(self, connection: GuardedRequestHandler) -> None:
        self._open.pop(connection, None)
        self._incomplete.pop(connection, None)

    def sweep(self) -> None:
        """Close every request whose headers or body overran their timeout."""
        now = self.now()
        for connection in list(self._open):
            state = connection.state
            if state.phase is Phase.HEADERS and now - state.since >= self.limits.header_timeout:
                self._close(connection, "header_timeout")
            elif state.phase is Phase.BODY and now - state.since >= self.limits.body_timeout:
                self._close(connection, "body_timeout")
        metrics.http_connections_open(len(self._open))

    def report(self) -> None:
        """One WARNING line for what was closed or refused since the last one (at most one per
        :data:`REPORT_SECONDS`)."""
        now = self.now()
        if not self._closed or now - self._reported_at < REPORT_SECONDS:
            return
        counts, self._reported_at = dict(self._closed), now
        self._closed.clear()
        closed = sum(counts.get(r, 0) for r in ("header_timeout", "body_timeout", "cap", "full"))
        parts = [
            f"{counts[reason]} {label}"
            for reason, label in (
                ("header_timeout", "headers not complete in time"),
                ("body_timeout", "body not complete in time"),
                ("cap", "closed to make room at the cap"),
                ("full", "refused: every connection busy"),
                ("accept_failed", "accepts failed (out of descriptors)"),
                ("bad_request", "malformed requests"),
            )
            if counts.get(reason)
        ]
        log.warning(
            "http: %d connection(s) closed: %s; %d open (cap %d)",
            closed,
            ", ".join(parts),
            len(self._open),
            self.limits.max_connections,
        )

    async def watch(self) -> None:
        """The watchdog: sweep and report until cancelled."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.sweep()
            self.report()

    def install(self) -> None:
        """Count, instead of log, what a flood would log once per connection: asyncio's failed
        accepts and aiohttp's malformed requests."""
        if self._installed:
            return
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        logging.getLogger("aiohttp.server").addFilter(self._noise)
        self._installed = True

    def uninstall(self) -> None:
        if not self._installed:
            return
        asyncio.get_running_loop().set_exception_handler(self._previous_handler)
        logging.getLogger("aiohttp.server").removeFilter(self._noise)
        self._installed = False

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            self._closed["accept_failed"] += 1
            metrics.http_connection_closed("accept_failed")
        elif self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _close(self, connection: GuardedRequestHandler, reason: str) -> None:
        self.forget(connection)
        connection.force_close()
        self._closed[reason] += 1
        metrics.http_connection_closed(reason)


class _AiohttpNoise(logging.Filter):
    """Drops aiohttp's per-connection "Error handling request" line for a malformed request
    (counted into the guard's report instead); a handler's own failure is still logged."""

    def __init__(self, counts: Counter[str]) -> None:
        super().__init__()
        self._counts = counts

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError | ConnectionError):
            self._counts["bad_request"] += 1
            metrics.http_connection_closed("bad_request")
            return False
        return True
