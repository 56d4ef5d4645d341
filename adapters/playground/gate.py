"""Who may use the playground's page and API: the token (or this machine only), Host and
Origin, the ``X-Playground`` header, the session cookie; security headers on every answer."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters.playground.guard import (
    SESSION_COOKIE,
    HostGuard,
    same_secret,
    scheme_of,
    session_value,
    with_security_headers,
    without_token,
)
from bot.ports import STARTING_UP, STARTING_UP_HEADERS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AccessGate:
    """Wraps each route's handler in the playground's access checks."""

    def __init__(self, hosts: HostGuard, token: str, started: Callable[[], bool]) -> None:
        self._hosts = hosts
        self.token = token
        self._session = session_value(token) if token else ""
        self._started = started

    def guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return with_security_headers(await self._admit(request, handler))
            except web.HTTPException as exc:
                with_security_headers(exc)
                raise

        return guarded

    async def _admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._started():
            raise web.HTTPServiceUnavailable(text=STARTING_UP, headers=STARTING_UP_HEADERS)
        refusal = self._hosts.host_refusal(request)
        if refusal is not None:
            raise web.HTTPForbidden(text=refusal)
        from_url = bool(self.token and request.query.get("token"))
        if self.token and not self._authorised(request):
            raise web.HTTPForbidden(text="the playground needs ?token=PLAYGROUND_TOKEN")
        if not self.token and not is_local(request.remote):
            raise web.HTTPForbidden(
                text="without PLAYGROUND_TOKEN the playground answers only on this machine (localhost)"
            )
        if from_url and request.method == "GET":  # the token leaves the address bar (and history)
            response: web.StreamResponse = web.Response(status=303, headers={"Location": without_token(request)})
            self._set_session(request, response)
            return response
        refusal = self._hosts.origin_refusal(request)
        if refusal is not None:
            raise web.HTTPForbidden(text=refusal)
        if request.path.startswith("/playground/api/") and request.headers.get("X-Playground") != "1":
            raise web.HTTPForbidden(text="missing X-Playground header")
        response = await handler(request)
        if from_url:
            self._set_session(request, response)
        return response

    def _authorised(self, request: web.Request) -> bool:
        offered = request.query.get("token")
        if offered:
            return same_secret(offered, self.token)
        return same_secret(request.cookies.get(SESSION_COOKIE, ""), self._session)

    def _set_session(self, request: web.Request, response: web.StreamResponse) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self._session,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=scheme_of(request) == "https",
        )


def is_local(remote: str | None) -> bool:
    """A request from this machine (the open playground answers no one else)."""
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False
