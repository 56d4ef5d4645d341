"""Downloading a customer's file from a platform's own file host: the one place both chat
adapters fetch files through (each builds a :class:`FileHost` with its hosts and credential).

Only URLs on the host's origins are requested, so the credential never leaves the platform; a
redirect is never followed (not even to the same host); the body is streamed and reading stops
as soon as it passes the byte cap, whatever size the platform claimed. The total deadline is the
caller's: :mod:`bot.core.files` cancels a fetch that outlives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from bot.errors import ConfigError, FileNotFetched

#: A backstop per read; the core's total deadline is far shorter.
READ_TIMEOUT = 60.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """``scheme://host:port`` of an http(s) URL without credentials in it, else ``""``."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return ""
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host or parsed.userinfo:
        return ""
    return f"{parsed.scheme}://{parsed.host}:{parsed.port or _DEFAULT_PORTS[parsed.scheme]}"


def size_text(count: int) -> str:
    """``5 MB``, ``300 KB``: a byte count as the review card says it."""
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.3g} MB"
    return f"{max(1, count // 1024)} KB"


@dataclass(frozen=True, slots=True)
class FileHost:
    """A platform's own file host: the origins it serves files from, and the headers (the
    platform's credential, if it needs one) sent there and nowhere else. Implements
    :class:`bot.ports.FileFetcher`."""

    name: str
    origins: frozenset[str]
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def at(cls, name: str, urls: Iterable[str], *, setting: str, headers: Mapping[str, str] | None = None) -> FileHost:
        """A host serving from ``urls`` (``https://files.slack.com``); :class:`ConfigError` naming
        ``setting`` for a URL that is not plain http(s)."""
        origins = set()
        for url in urls:
            found = origin_of(url.strip())
            if not found:
                raise ConfigError(f"{setting}: {url!r} is not an http(s) URL (write it as https://host)")
            origins.add(found)
        return cls(name, frozenset(origins), dict(headers or {}))

    def serves(self, url: str) -> bool:
        return origin_of(url) in self.origins

    async def fetch(self, url: str, *, max_bytes: int) -> bytes:
        if not self.serves(url):
            raise FileNotFetched(f"not on {self.name}")
        # identity: a compressed body would be inflated past the cap before it could be counted
        headers = {**self.headers, "Accept-Encoding": "identity"}
        try:
            async with (
                httpx.AsyncClient(follow_redirects=False, timeout=READ_TIMEOUT) as http,
                http.stream("GET", url, headers=headers) as response,
            ):
                if response.is_redirect:
                    raise FileNotFetched(f"{self.name} redirected it elsewhere (not followed)")
                if response.status_code != 200:
                    raise FileNotFetched(f"{self.name} answered HTTP {response.status_code}")
                if response.headers.get("content-encoding", "identity") != "identity":
                    raise FileNotFetched(f"{self.name} sent it compressed")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FileNotFetched(f"over {size_text(max_bytes)}")
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FileNotFetched(f"over {size_text(max_bytes)}")
        except httpx.HTTPError as exc:
            raise FileNotFetched(f"could not be read from {self.name} ({type(exc).__name__})") from None
        return bytes(body)
