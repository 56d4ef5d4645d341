"""Customer files: listed at the ack, downloaded by the drafting worker.

The ack stores only what the platform said about each file (name, type, claimed size, URL,
platform) and whether it is to be fetched (:func:`records_at_ack`): it never waits on a download.
The worker that holds the draft's lease then downloads the message's pending images, right
before the model call, through the platform's :class:`bot.ports.FileFetcher` (the adapter keeps
its credential and its hosts), each capped at :data:`MAX_FILE_BYTES` and all under one total
deadline (``FILE_DOWNLOAD_SECONDS``). The outcome goes on the message (``messages.attachments``:
``status``, ``error``) and the bytes into ``attachments``; a refused or failed download is a line
on the review card (:func:`card_lines`) and the draft goes on with the text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

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


def records_at_ack(message: InboundMessage) -> list[dict[str, Any]]:
    """What the ack stores about each file of ``message``: images on the platform's file host are
    ``pending`` (the drafting worker fetches them), bytes the adapter handed over are ``fetched``
    already, the rest is ``listed`` on the card only."""
    records = []
    for file in message.attachments:
        record: dict[str, Any] = {
            "filename": file.filename,
            "content_type": file.content_type,
            "size": file.size,
            "url": file.url,
            "platform": message.thread.platform,
        }
        if file.data:
            record["status"] = FileStatus.FETCHED.value
        elif file.external:
            record |= {"status": FileStatus.LISTED.value, "error": EXTERNAL}
        elif file.is_image and file.url:
            record["status"] = FileStatus.PENDING.value
        else:
            record["status"] = FileStatus.LISTED.value
        records.append(record)
    return records


class FileDownloads:
    """Downloads the files the ack only listed, in the drafting worker (see the module)."""

    def __init__(self, db: Database, deadline_seconds: float) -> None:
        self.db = db
        self.deadline_seconds = deadline_seconds
        self.fetchers: dict[str, FileFetcher] = {}

    def add(self, platform: str, fetcher: FileFetcher) -> None:
        self.fetchers[platform] = fetcher

    async def fetch_pending(
        self, message_id: int, turns: list[StoredMessage], images: list[tuple[str, bytes]]
    ) -> tuple[list[StoredMessage], list[tuple[str, bytes]]]:
        """Fetch the pending files of the message being answered (the last of ``turns``) and
        record the outcome; return the turns and images with them."""
        trigger = turns[-1] if turns and turns[-1].id == message_id else None
        if trigger is None:
            return turns, images
        files = [dict(f) for f in trigger.attachments]
        pending = [i for i, f in enumerate(files) if f.get("status") == FileStatus.PENDING]
        if not pending:
            return turns, images
        deadline = asyncio.get_running_loop().time() + self.deadline_seconds
        outcomes = await asyncio.gather(*(self._fetch(files[i], message_id, deadline) for i in pending))
        fetched: list[tuple[str, str, bytes]] = []
        for index, (record, data) in zip(pending, outcomes, strict=True):
            files[index] = record
            if data is not None:
                fetched.append((str(record.get("filename", "")), str(record.get("content_type", "")), data))
        async with self.db.write() as conn:
            await conversation_rows.save_files(conn, message_id, files, fetched)
        turns = [*turns[:-1], dataclasses.replace(trigger, attachments=files)]
        return turns, [*images, *((content_type, data) for _, content_type, data in fetched)]

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
            return {**file, "status": FileStatus.FETCHED.value, "fetched_bytes": len(data)}, data
        log.warning("file %r of message %s not downloaded: %s", file.get("filename"), message_id, reason)
        return {**file, "status": FileStatus.FAILED.value, "error": reason}, None
