"""Knowledge files through Kimi's files API: uploaded once, extracted text cached in SQL.

The policy names knowledge files (``[knowledge] files``). :meth:`KnowledgeSync.sync` hashes each
file (sha256 of its bytes); a hash already in the ``knowledge_files`` table is not uploaded again.
A new or changed file is uploaded with ``purpose=file-extract`` and its extracted text fetched
(``GET /v1/files/{id}/content``) and stored with the file id; a file no longer named, or whose
content changed, has its old upload deleted from Kimi (accounts hold at most 1,000 files). The
texts are chunked into passages and indexed (:class:`tools.KnowledgeBase`), and only the passages
a ``search_knowledge`` call finds go into the prompt, after the stable prefix.

When Kimi's files API cannot be reached the files' own text is indexed instead (and the sync is
retried by :meth:`KnowledgeSync.watch`), so knowledge never blocks drafting.

The policy refuses hidden files and files holding a secret (:func:`bot.policy.knowledge_problems`);
the sync checks the bytes it is about to send once more (a file may have changed since), and a
hidden or secret-bearing file is neither uploaded nor indexed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.errors import ConfigError, KimiError
from bot.kimi import KimiClient
from bot.policy import hidden_part, knowledge_refusal
from bot.secret_values import Secrets
from bot.store import KnowledgeFile, sessionmaker, utcnow
from tools.knowledge import KnowledgeBase, passages_of

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SyncReport:
    """What one sync did, by file name."""

    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)  # indexed from the file itself (Kimi unreachable)
    refused: list[str] = field(default_factory=list)  # holds a secret: neither uploaded nor indexed


def _read(paths: list[Path]) -> list[tuple[Path, bytes]]:
    out = []
    for path in paths:
        try:
            out.append((path, path.read_bytes()))
        except OSError as exc:
            raise ConfigError(f"knowledge file {path} cannot be read: {exc.strerror}") from None
    return out


class KnowledgeSync:
    """Keeps :attr:`base` (the searchable passages) in step with the policy's knowledge files."""

    def __init__(
        self,
        engine: AsyncEngine,
        kimi: KimiClient,
        base: KnowledgeBase | None = None,
        *,
        secrets: Secrets | None = None,
    ) -> None:
        self._sessions = sessionmaker(engine)
        self._kimi = kimi
        self._secrets = secrets or {}
        self.base = base if base is not None else KnowledgeBase([])
        self._fingerprint: tuple[tuple[str, int, int], ...] | None = None

    async def sync(self, paths: list[Path]) -> SyncReport:
        """Upload what is new or changed, delete what is gone, re-index :attr:`base`."""
        report = SyncReport()
        files = await asyncio.to_thread(_read, paths)
        async with self._sessions() as session:
            known = {row.content_hash: row for row in await session.scalars(select(KnowledgeFile))}
        texts: list[tuple[str, str]] = []
        current: set[str] = set()
        for path, data in files:
            refusal = knowledge_refusal(path.name, data, self._secrets)
            if refusal is not None:
                log.warning("knowledge file %s is not used: %s", path, refusal)
                report.refused.append(path.name)
                continue
            digest = hashlib.sha256(data).hexdigest()
            current.add(digest)
            row = known.get(digest)
            if row is not None:
                report.unchanged.append(path.name)
                texts.append((path.name, row.text))
                continue
            try:
                text = await self._upload(path, data, digest)
            except KimiError as exc:
                log.warning("knowledge file %s not synced with Kimi (%s); indexing its own text", path.name, exc)
                report.local.append(path.name)
                texts.append((path.name, data.decode("utf-8-sig", errors="replace")))
                current.discard(digest)
                continue
            report.uploaded.append(path.name)
            texts.append((path.name, text))
        for digest, row in known.items():
            if digest in current:
                continue
            try:
                await self._kimi.delete_file(row.file_id)
            except KimiError as exc:
                log.warning("could not delete %s (%s) from Kimi: %s", row.name, row.file_id, exc)
                continue
            async with self._sessions.begin() as session:
                await session.execute(delete(KnowledgeFile).where(KnowledgeFile.content_hash == digest))
            report.deleted.append(row.name)
        self.base.replace(passages_of(texts))
        return report

    async def _upload(self, path: Path, data: bytes, digest: str) -> str:
        uploaded = await self._kimi.upload_file(path.name, data)
        file_id = str(uploaded.get("id") or "")
        if uploaded.get("status") not in ("ok", "ready", None) or not file_id:
            raise ConfigError(
                f"Kimi could not extract knowledge file {path}: {uploaded.get('status_details') or uploaded}"
            )
        text = await self._kimi.file_text(file_id)
        async with self._sessions.begin() as session:
            await session.merge(
                KnowledgeFile(
                    content_hash=digest, name=path.name, file_id=file_id, size=len(data), text=text, synced_at=utcnow()
                )
            )
        return text

    @staticmethod
    def _stat(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in paths:
            try:
                stat = path.stat()
                out.append((str(path), stat.st_mtime_ns, stat.st_size))
            except OSError:
                out.append((str(path), -1, -1))
        return tuple(out)

    async def sync_if_changed(self, paths: list[Path]) -> SyncReport | None:
        """Sync when a file was added, removed or changed since the last look (size and mtime)."""
        fingerprint = await asyncio.to_thread(self._stat, paths)
        if fingerprint == self._fingerprint:
            return None
        report = await self.sync(paths)
        self._fingerprint = fingerprint if not report.local else None  # local-only: try Kimi again
        return report

    async def watch(self, paths: Callable[[], list[Path]], interval: float = 2.0) -> None:
        """Re-sync whenever the named files change (the policy's list is read on every look)."""
        while True:
            try:
                report = await self.sync_if_changed(paths())
                if report is not None and (report.uploaded or report.deleted):
                    log.info("knowledge synced: uploaded %s, deleted %s", report.uploaded, report.deleted)
            except ConfigError as exc:
                log.warning("knowledge sync failed: %s", exc)
            await asyncio.sleep(interval)


def knowledge_paths(policy_file: Path, files: list[str] | tuple[str, ...]) -> list[Path]:
    """The knowledge files a policy names, relative to the policy file; never a hidden one."""
    folder = policy_file.parent
    return [folder / name for name in files if hidden_part(name, folder) is None]
