"""Sample orders for trying the bot out (the playground's "Load sample orders" button).

The sample file's dates are written relative to :data:`ANCHOR`; they are moved forward so that
the anchor is today, so "delivered five days ago" stays true whenever the file is loaded.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.errors import ImportFailed
from bot.settings import Settings
from bot.store import create_engine

ANCHOR = date(2026, 1, 1)
_DATE_FIELDS = ("placed_at", "delivered_at", "estimated_delivery")


def shifted(row: dict[str, Any], days: int) -> dict[str, Any]:
    """``row`` with each date field moved ``days`` forward (dates and ISO date-times alike)."""
    moved = dict(row)
    for name in _DATE_FIELDS:
        value = moved.get(name)
        if not isinstance(value, str) or not value:
            continue
        if len(value) == 10:
            moved[name] = (date.fromisoformat(value) + timedelta(days=days)).isoformat()
        else:
            moved[name] = (datetime.fromisoformat(value) + timedelta(days=days)).isoformat()
    return moved


async def load_sample_orders(settings: Settings, path: Path, today: date | None = None) -> int:
    """Import the sample orders in ``path`` (JSON Lines) into the configured order store, dates
    moved to today; returns how many. Raises :class:`ImportFailed` when the file is rejected."""
    from tools import OrderImportError, import_orders

    days = ((today or datetime.now(UTC).date()) - ANCHOR).days
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    engine = create_engine(settings.database_url)
    try:
        with tempfile.TemporaryDirectory() as folder:
            moved = Path(folder) / "orders.jsonl"
            moved.write_text("".join(json.dumps(shifted(r, days)) + "\n" for r in rows), encoding="utf-8")
            try:
                return await import_orders(engine, moved)
            except OrderImportError as exc:
                raise ImportFailed(f"{path.name}: " + "; ".join(exc.problems)) from None
    finally:
        await engine.dispose()
