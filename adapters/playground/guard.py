"""What keeps other web pages out of the playground, request by request.

- ``Host`` must name this server: localhost, 127.0.0.1, [::1], the configured ``HOST``, the
  address the connection came in on, or a name in ``PLAYGROUND_ALLOWED_HOSTS``. A DNS-rebinding
  page (``evil.example`` re-pointed at 127.0.0.1) sends its own name and is refused. (The port
  is not compared: a published container port differs from the one served, and a page on another
  local port is another origin, refused by the Origin check and the browser.)
- A request that changes something and carries an ``Origin`` must come from the page's own
  origin (scheme, host and port).
- With ``PLAYGROUND_TOKEN`` the browser holds a session cookie derived from the token (an HMAC
  with a fixed label), never the token itself; the token leaves the address bar after the first
  visit (a redirect to the same path without ``?token=``).
- Every response carries a Content-Security-Policy (scripts and styles only from this server,
  no framing), ``X-Frame-Options: DENY``, ``nosniff`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import SplitResult, urlencode, urlsplit

from aiohttp import web

SESSION_COOKIE = "playground_session"
_SESSION_LABEL = b"supportbot playground session v1"
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names of "every interface", never a Host
_DEFAULT_PORTS = {"http": 80, "https": 443}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def session_value(token: str) -> str:
    """The session cookie's value for a token: stealing the cookie does not reveal the token."""
    return hmac.new(token.encode(), _SESSION_LABEL, hashlib.sha256).hexdigest()


def same_secret(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode(), expected.encode())


def scheme_of(request: web.Request) -> str:
    """``https`` when the request came over TLS here or through a TLS proxy."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return "https" if request.secure or forwarded == "https" else "http"


def _parts(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts


class HostGuard:
    """Decides whether a request's ``Host`` and ``Origin`` name this server."""

    def __init__(self, configured_host: str, extra_hosts: Iterable[str] = ()) -> None:
        own = configured_host.strip("[]").lower()
        self.local_names = LOCAL_NAMES | ({own} if own not in _WILDCARDS else set())
        self.extra_names = frozenset(name.lower() for name in extra_hosts)

    def host_refusal(self, request: web.Request) -> str | None:
        """Why this request's ``Host`` is not one of this server's names, or None. The address
        the connection came in on counts too (``http://192.0.2.7:8080/``): a rebinding page
        always sends its own DNS name, never an address."""
        host = request.headers.get("Host")
        if host is None:
            return None  # not from a browser (every browser sends Host)
        parts = _parts(f"//{host}")
        name = parts.hostname if parts is not None else None
        if name is not None and (name in self.local_names or name in self.extra_names or name == _served_at(request)):
            return None
        return (
            f"Host {host!r} is not this playground's address (DNS rebinding refused): open it as "
            "http://localhost:PORT/, or name the host in PLAYGROUND_ALLOWED_HOSTS (a reverse proxy's name)"
        )

    def origin_refusal(self, request: web.Request) -> str | None:
        """Why a state-changing request from another origin is refused, or None."""
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = request.headers.get("Origin")
        if origin is None:
            return None  # not sent by a browser
        offered = _parts(origin)
        served = _parts(f"{scheme_of(request)}://{request.host}")
        if offered is not None and served is not None and _same_origin(offered, served):
            return None
        return f"cross-origin request refused (Origin {origin!r} is not this playground)"


def _same_origin(a: SplitResult, b: SplitResult) -> bool:
    def port(parts: SplitResult) -> int | None:
        return parts.port or _DEFAULT_PORTS.get(parts.scheme)

    return (a.scheme, a.hostname, port(a)) == (b.scheme, b.hostname, port(b))


def _served_at(request: web.Request) -> str | None:
    """The address of the socket the request came in on (``192.0.2.7``, ``::1``)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return str(sockname[0]).split("%")[0].lower() if isinstance(sockname, tuple) and sockname else None


def without_token(request: web.Request) -> str:
    """The request's path and query without ``token`` (where the first visit is sent on to)."""
    rest = [(key, value) for key, value in request.query.items() if key != "token"]
    return request.path + (f"?{urlencode(rest)}" if rest else "")


def with_security_headers(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
