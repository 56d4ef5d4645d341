"""Translations kept so each text is translated into a language once (bot/core/translation.py):
keyed by the sha256 of the target language and the text, so the same message or draft, read
back for a card refresh, costs no model call."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain.translation import Translation, needs_translation
from bot.store.dialect import insert_ignore
from bot.store.schema import Draft, TranslationRow, table_of

_translations = table_of(TranslationRow)
_drafts = table_of(Draft)


def key_of(text: str, language: str) -> str:
    """The cache key of ``text`` translated into ``language``."""
    return hashlib.sha256(f"{language}\n{text}".encode()).hexdigest()


async def cached(conn: AsyncConnection, texts: Iterable[str], language: str) -> dict[str, str]:
    """The kept translations of ``texts`` into ``language``, by original text (missing: none kept)."""
    keys = {key_of(text, language): text for text in texts if text}
    if not keys:
        return {}
    t = _translations.c
    rows = await conn.execute(select(t.key, t.text).where(t.key.in_(keys)))
    return {keys[row.key]: row.text for row in rows}


async def remember(conn: AsyncConnection, text: str, language: str, translated: str, now: datetime) -> None:
    """Keep ``translated`` as ``text`` in ``language`` (a translation kept already stays)."""
    values = {"key": key_of(text, language), "language": language, "text": translated, "created_at": now}
    await insert_ignore(conn, TranslationRow, values)


async def forget_texts(conn: AsyncConnection, texts: Iterable[str | None]) -> int:
    """Drop the kept translations of ``texts`` into any language (their words are being erased:
    retention, ``forget``); how many."""
    originals = {text for text in texts if text}
    if not originals:
        return 0
    languages = list(await conn.scalars(select(_translations.c.language).distinct()))
    keys = [key_of(text, language) for text in originals for language in languages]
    if not keys:
        return 0
    result = await conn.execute(delete(_translations).where(_translations.c.key.in_(keys)))
    return int(result.rowcount or 0)


async def conversation_of(conn: AsyncConnection, draft_id: str) -> str | None:
    """The conversation ``draft_id`` answers in (None: no such draft)."""
    found = await conn.scalar(select(_drafts.c.conversation_id).where(_drafts.c.id == draft_id))
    return str(found) if found is not None else None


async def card_translation(
    conn: AsyncConnection, customer_language: object, desk_language: str, customer_text: str, draft_text: str
) -> Translation | None:
    """A card's translation as kept (None: the customer writes the desk's language)."""
    source = str(customer_language or "")
    if not needs_translation(source, desk_language):
        return None
    kept = await cached(conn, [customer_text, draft_text], desk_language)
    return Translation(source, desk_language, kept.get(customer_text), kept.get(draft_text))
