"""Customer files: listed at the ack, downloaded and made fit for Kimi by the drafting worker.

The ack stores only what the platform said about each file (name, type, claimed size, URL,
platform) and whether it is to be sent to the model (:func:`records_at_ack`): it never waits on a
download nor on an image's pixels. At most the policy's ``limits.max_images_per_message`` images
of a message are sent; the rest are listed on the card as "not sent to the model (over N
images)". The worker that holds the draft's lease then, right before the model call, obtains
each pending image — downloaded through the platform's :class:`bot.ports.FileFetcher` (the
adapter keeps its credential and its hosts), each capped at :data:`MAX_FILE_BYTES` and all under
one total deadline (``FILE_DOWNLOAD_SECONDS``), or the bytes an adapter handed over at the ack
(the playground's upload, an evaluation case) — and passes every one through
:mod:`bot.core.images` (scaled down, re-encoded, metadata stripped, a decompression bomb
refused). This is the one way an image reaches Kimi. Only the small version is kept
(``attachments``; bytes held from the ack are replaced by it); the outcome goes on the message
(``messages.attachments``: ``status``, ``error`` or ``not_sent``) and a file not downloaded or
not sent is a line on the review card (:func:`card_lines`) while the draft goes on with the text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from bot.core.images import ImageRefused, ImageShrinker, ShrunkImage
from bot.domain.states import FileStatus
from bot.downloads import size_text
from bot.errors import FileNotFetched
from bot.events import InboundMessage
from bot.ports import FileFetcher
from bot.store import Database
from bot.store import conversations as conversation_rows
from bot.store.conversations import StoredMessage

log = logging.getLogger(__name__)

#: The most bytes read of one file (Kimi takes images well under this).
MAX_FILE_BYTES = 5 * 1024 * 1024
EXTERNAL = "an external file"


def records_at_ack(message: InboundMessage, max_images: int) -> list[dict[str, Any]]:
    """What the ack stores about each file of ``message``: its first ``max_images`` images are
    ``pending`` (the drafting worker fetches them, or takes the bytes the adapter handed over,
    which the ack stores: ``held``), the rest is ``listed`` on the card only."""
    records = []
    sent = 0
    for file in message.attachments:
        record: dict[str, Any] = {
            "filename": file.filename,
            "content_type": file.content_type,
            "size": file.size,
            "url": file.url,
            "platform": message.thread.platform,
            "status": FileStatus.LISTED.value,
        }
        if file.external:
            record["error"] = EXTERNAL
        elif file.is_image and (file.data or file.url):
            if sent >= max_images:
                record["not_sent"] = f"over {max_images} image{'' if max_images == 1 else 's'}"
            else:
                sent += 1
                record["status"] = FileStatus.PENDING.value
                if file.data:
                    record["held"] = True
        records.append(record)
    return records


class FileDownloads:
    """Obtains and shrinks the images the ack left pending, in the drafting worker (see the module)."""

    def __init__(self, db: Database, deadline_seconds: float) -> None:
        self.db = db
        self.deadline_seconds = deadline_seconds
        self.fetchers: dict[str, FileFetcher] = {}
        self.shrinker = ImageShrinker()

    def add(self, platform: str, fetcher: FileFetcher) -> None:
        self.fetchers[platform] = fetcher

    async def fetch_pending(
        self, message_id: int, turns: list[StoredMessage], images: list[tuple[str, bytes]]
    ) -> tuple[list[StoredMessage], list[tuple[str, bytes]]]:
        """Obtain and shrink the pending images of the message being answered (the last of
        ``turns``; ``images`` are its stored ones, the ``held`` first, in order) and record the
        outcome; return the turns and the images to send."""
        trigger = turns[-1] if turns and turns[-1].id == message_id else None
        if trigger is None:
            return turns, images
        files = [dict(f) for f in trigger.attachments]
        pending = [i for i, f in enumerate(files) if f.get("status") == FileStatus.PENDING]
        if not pending:
            return turns, images
        held = [i for i in pending if files[i].get("held")]
        held_bytes = {i: data for i, (_, data) in zip(held, images, strict=False)}
        deadline = asyncio.get_running_loop().time() + self.deadline_seconds
        outcomes = await asyncio.gather(
            *(self._prepare(files[i], message_id, deadline, held_bytes.get(i)) for i in pending)
        )
        prepared: list[tuple[str, str, bytes]] = []
        for index, (record, image) in zip(pending, outcomes, strict=True):
            files[index] = record
            if image is not None:
                prepared.append((str(record.get("filename", "")), image.content_type, image.data))
        async with self.db.write() as conn:
            await conversation_rows.save_files(conn, message_id, files, prepared, replace=bool(held))
        turns = [*turns[:-1], dataclasses.replace(trigger, attachments=files)]
        kept = [] if held else images
        return turns, [*kept, *((content_type, data) for _, content_type, data in prepared)]

    async def _prepare(
        self, file: dict[str, Any], message_id: int, deadline: float, held: bytes | None
    ) -> tuple[dict[str, Any], ShrunkImage | None]:
        file = {k: v for k, v in file.items() if k != "held"}
        if held is None:
            file, data = await self._fetch(file, message_id, deadline)
            if data is None:
                return file, None
        else:
            data = held
        try:
            image = await self.shrinker.shrink(data)
        except ImageRefused as exc:
            log.warning("image %r of message %s not sent: %s", file.get("filename"), message_id, exc.reason)
            return {**file, "status": FileStatus.FAILED.value, "not_sent": exc.reason}, None
        shrunk = {"sent_bytes": len(image.data), "sent_pixels": [image.width, image.height]}
        return {**file, "status": FileStatus.FETCHED.value, "fetched_bytes": len(data), **shrunk}, image

    async def _fetch(
        self, file: dict[str, Any], message_id: int, deadline: float
    ) -> tuple[dict[str, Any], bytes | None]:
        fetcher = self.fetchers.get(str(file.get("platform", "")))
        try:
            if fetcher is None:
                raise FileNotFetched("this platform's files cannot be downloaded")
            if int(file.get("size") or 0) > MAX_FILE_BYTES:
                raise FileNotFetched(f"over {size_text(MAX_FILE_BYTES)}")
            async with asyncio.timeout_at(deadline):
                data = await fetcher.fetch(str(file.get("url", "")), max_bytes=MAX_FILE_BYTES)
        except FileNotFetched as exc:
            reason = exc.reason
        except TimeoutError:
            reason = f"not complete within {self.deadline_seconds:g} s"
        except Exception as exc:  # a fetcher's bug must not cost the draft
            log.exception("downloading a file of message %s failed", message_id)
            reason = f"download failed ({type(exc).__name__})"
        else:
            return file, data
        log.warning("file %r of message %s not downloaded: %s", file.get("filename"), message_id, reason)
        return {**file, "status": FileStatus.FAILED.value, "error": reason}, None
