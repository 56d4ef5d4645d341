"""Statements that differ per dialect (``INSERT … ON CONFLICT``), built once per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


def dialect_insert(dialect: str, table: Table) -> Any:
    """The dialect's own ``insert`` (with ``on_conflict_*``) for ``table``."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


async def insert_ignore(db: AsyncSession | AsyncConnection, entity: Any, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING. Returns True when the row was inserted."""
    table: Table = getattr(entity, "__table__", entity)
    dialect = db.get_bind().dialect.name if isinstance(db, AsyncSession) else db.dialect.name
    result = await db.execute(dialect_insert(dialect, table).values(**values).on_conflict_do_nothing())
    return bool(getattr(result, "rowcount", 0) == 1)
