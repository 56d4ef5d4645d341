"""Alembic environment: runs on the connection handed over by ``bot.store.upgrade_database``
(or builds one from ``sqlalchemy.url`` for the alembic command line)."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context

from bot.store import ALL_METADATA

config = context.config
target_metadata = list(ALL_METADATA)


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from bot.store import create_engine

    async def _main() -> None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(_main())


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    _run_online()
