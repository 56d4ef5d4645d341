"""Who may read the operator's routes: ``/metrics`` and the detailed body of ``/readyz``.

Three ways, by the operator's choice:

- ``METRICS_PORT``: they are served on that port only (bound to ``METRICS_HOST``, loopback by
  default: bind it to an internal interface and do not publish it); the public port has no
  ``/metrics`` and its ``/readyz`` answers with the status and ``{"ok": ...}`` alone;
- ``METRICS_TOKEN``: every request for them carries ``Authorization: Bearer <token>``
  (401 without it);
- neither: they answer loopback peers only, and not a request a proxy forwarded (one carrying
  ``Forwarded``, ``X-Forwarded-For`` or ``X-Real-IP``): anyone else gets a 404.

With both, ``/metrics`` is on the metrics port and needs the token there.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from dataclasses import dataclass

from aiohttp import web
from pydantic import SecretStr

_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    UNAUTHORIZED = "unauthorized"  # a token is required and was missing or wrong: 401
    HIDDEN = "hidden"  # not for this peer or this port: 404


@dataclass(frozen=True, slots=True)
class OperatorAccess:
    """The rule in force (see the module's docstring)."""

    token: SecretStr | None
    separate_port: bool

    def verdict(self, request: web.BaseRequest, *, on_metrics_port: bool) -> Verdict:
        if self.separate_port and not on_metrics_port:
            return Verdict.HIDDEN
        if self.token is not None:
            return Verdict.ALLOWED if self._bearer_matches(request) else Verdict.UNAUTHORIZED
        if on_metrics_port or _local(request):
            return Verdict.ALLOWED
        return Verdict.HIDDEN

    def _bearer_matches(self, request: web.BaseRequest) -> bool:
        assert self.token is not None
        scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            supplied.strip().encode(), self.token.get_secret_value().encode()
        )


def refusal(verdict: Verdict) -> web.Response:
    """The answer for a refused ``/metrics`` request."""
    if verdict is Verdict.UNAUTHORIZED:
        return web.Response(status=401, text="401: Unauthorized", headers={"WWW-Authenticate": "Bearer"})
    return web.Response(status=404, text="404: Not Found")


def _local(request: web.BaseRequest) -> bool:
    if any(name in request.headers for name in _FORWARDING_HEADERS):
        return False
    try:
        peer = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return peer.is_loopback
