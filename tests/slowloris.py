"""A slow-loris connection, for the tests and ``bench.slowloris``: it only ever talks to
127.0.0.1 and lives at most ``lifetime`` seconds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

#: How long one attacking connection may live, whatever happens.
ATTACK_SECONDS = 20.0


@dataclass
class Loris:
    """One attacking connection: it sends a request line, then a header line every ``every``
    seconds, never the blank line that ends the headers. ``closed_after`` is how long after its
    first byte the server closed it (None: still open when the attack ended)."""

    port: int
    every: float = 0.5
    head: bytes = b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    trickle: bool = True
    lifetime: float = ATTACK_SECONDS
    closed_after: float | None = None

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.lifetime):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                started = time.monotonic()
                try:
                    writer.write(self.head)
                    while True:
                        try:
                            if await asyncio.wait_for(reader.read(1024), self.every) == b"":
                                break  # EOF: the server closed it
                        except TimeoutError:
                            if self.trickle:
                                writer.write(b"X-Slow: yes\r\n")
                                await writer.drain()
                    self.closed_after = time.monotonic() - started
                except ConnectionError:
                    self.closed_after = time.monotonic() - started
                finally:
                    writer.close()
        except TimeoutError:
            self.closed_after = None  # the server held it to the end of the attack: not closed
