"""A file host on loopback: Slack's ``files.slack.com`` (``token`` set: a request without that
bearer token is 403, as Slack answers), or any foreign host (``token`` None) that serves whatever
it is asked and records who asked, with which ``Authorization`` header.

A served file may misbehave as a hostile or broken host would: send far more than its file
object claimed (``body_bytes``), trickle a byte at a time forever (``trickle``), or redirect
(``redirect_to``). Every request is recorded with the body bytes written before the client went
away, so a test can tell how much a capped download really pulled.

Usage::

    async with FakeFileHost(token="xoxb-...") as files:
        file = files.slack_file("mug.png", png, "image/png")   # a Slack file object for an event
        ...
        [request] = files.requests
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image

from bot.evaluation.simulator.loopback import LoopbackFake, LoopbackServer

CHUNK = 64 * 1024


def png(width: int = 1, height: int = 1) -> bytes:
    """A real PNG, plain grey: the smallest screenshot a customer sends."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), "grey").save(out, "PNG")
    return out.getvalue()


def photo(width: int, height: int, *, quality: int = 90, exif: bytes = b"") -> bytes:
    """A JPEG that compresses like a phone photo (a gradient under grain), with ``exif``."""
    grain = Image.effect_noise((width, height), 40).convert("RGB")
    light = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    Image.blend(light, grain, 0.5).save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims ``width``×``height`` pixels (a
    decompression bomb: decoded, it would take width × height bytes and more)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)  # the first rows; the rest never comes
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@dataclass
class FileRequest:
    """One request the host received."""

    path: str
    authorization: str
    sent: int = 0
    done: bool = False


@dataclass(frozen=True)
class _Served:
    data: bytes
    content_type: str
    body_bytes: int | None
    trickle: bool
    redirect_to: str | None


def sent_image_bytes(completion: dict[str, Any]) -> list[bytes]:
    """The bytes of the images in a chat completion's request."""
    found = []
    for message in completion["messages"]:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                found.append(base64.b64decode(part["image_url"]["url"].split(";base64,", 1)[1]))
    return found


def sent_images(completion: dict[str, Any]) -> list[Image.Image]:
    """The images of a chat completion's request, decoded as Kimi would."""
    return [Image.open(io.BytesIO(data)) for data in sent_image_bytes(completion)]


class FakeFileHost(LoopbackFake):
    """A loopback file host; an async context manager (see the module)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.requests: list[FileRequest] = []
        self._files: dict[str, _Served] = {}
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve)
        self._server = LoopbackServer(app, shutdown_timeout=0.2)

    async def start(self) -> None:
        await self._server.start()

    async def close(self) -> None:
        await self._server.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def origin(self) -> str:
        """``SLACK_FILES_URL`` for the bot when this host plays Slack's file host."""
        return self._server.origin

    def serve(
        self,
        path: str,
        data: bytes,
        content_type: str = "image/png",
        *,
        body_bytes: int | None = None,
        trickle: bool = False,
        redirect_to: str | None = None,
    ) -> str:
        """Host ``data`` at ``path`` and return its URL (see the module for the misbehaviours)."""
        self._files[path] = _Served(data, content_type, body_bytes, trickle, redirect_to)
        return f"{self.origin}{path}"

    def slack_file(
        self, name: str, data: bytes, mimetype: str, *, claimed_size: int | None = None, **behaviour: Any
    ) -> dict[str, Any]:
        """A Slack file object (as in a message event's ``files``) hosted here."""
        file_id = f"F{len(self._files) + 1:08d}"
        private = self.serve(f"/files-pri/T111-{file_id}/{name}", data, mimetype, **behaviour)
        download = self.serve(f"/files-pri/T111-{file_id}/download/{name}", data, mimetype, **behaviour)
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": mimetype.rsplit("/", 1)[-1],
            "size": len(data) if claimed_size is None else claimed_size,
            "mode": "hosted",
            "is_external": False,
            "url_private": private,
            "url_private_download": download,
        }

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        record = FileRequest(request.path, request.headers.get("Authorization", ""))
        self.requests.append(record)
        try:
            served = self._files.get(request.path)
            if served is None:
                return web.Response(status=404)
            if self.token is not None and record.authorization != f"Bearer {self.token}":
                return web.Response(status=403)
            if served.redirect_to is not None:
                return web.Response(status=302, headers={"Location": served.redirect_to})
            if served.body_bytes is None and not served.trickle:
                record.sent = len(served.data)
                return web.Response(body=served.data, content_type=served.content_type)
            response = web.StreamResponse(headers={"Content-Type": served.content_type})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                if served.trickle:
                    while True:  # a byte now and then: no read ever times out
                        await response.write(b"\x00")
                        record.sent += 1
                        await asyncio.sleep(0.1)
                assert served.body_bytes is not None
                while record.sent < served.body_bytes:
                    chunk = min(CHUNK, served.body_bytes - record.sent)
                    await response.write(b"\x00" * chunk)
                    record.sent += chunk
                await response.write_eof()
            return response
        finally:
            record.done = True
