"""``supportbot costs``, ``models`` and ``knowledge sync|search``: what Kimi cost, what it
serves, and the knowledge files uploaded through its files API.

``costs`` reads the usage ledger (one row per model call) and prints totals by day and model
with the share of prompt tokens served from Kimi's cache. ``models`` lists ``GET /v1/models``
with context length and image support, for the key in ``MOONSHOT_API_KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError, SupportbotError

if TYPE_CHECKING:  # imported when a command runs, so supportbot --help stays light
    from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True, slots=True)
class CostLine:
    """Totals of one day and model."""

    day: str
    model: str
    calls: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_microusd: int

    @property
    def cache_hit_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


async def cost_lines(engine: AsyncEngine, *, days: int) -> list[CostLine]:
    """Totals by UTC day and model over the last ``days`` days, oldest first."""
    from sqlalchemy import func, select

    from bot.store import UsageRecord, sessionmaker

    since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    day = func.date(UsageRecord.created_at)
    query = (
        select(
            day,
            UsageRecord.model,
            func.count(),
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.cached_tokens),
            func.sum(UsageRecord.completion_tokens),
            func.sum(UsageRecord.cost_microusd),
        )
        .where(UsageRecord.created_at >= since)
        .group_by(day, UsageRecord.model)
        .order_by(day, UsageRecord.model)
    )
    async with sessionmaker(engine)() as session:
        rows = (await session.execute(query)).all()
    return [CostLine(str(r[0]), r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in rows]


def format_costs(lines: list[CostLine]) -> list[str]:
    """The table ``supportbot costs`` prints, with a total line."""
    out = [f"{'day':<10}  {'model':<26} {'calls':>6} {'prompt':>11} {'cache hit':>9} {'output':>10} {'USD':>10}"]
    for line in lines:
        out.append(
            f"{line.day:<10}  {line.model:<26} {line.calls:>6} {line.prompt_tokens:>11,} "
            f"{line.cache_hit_share:>8.1%} {line.completion_tokens:>10,} {line.cost_microusd / 1e6:>10.4f}"
        )
    prompt = sum(x.prompt_tokens for x in lines)
    cached = sum(x.cached_tokens for x in lines)
    out.append(
        f"{'total':<10}  {'':<26} {sum(x.calls for x in lines):>6} {prompt:>11,} "
        f"{(cached / prompt if prompt else 0):>8.1%} {sum(x.completion_tokens for x in lines):>10,} "
        f"{sum(x.cost_microusd for x in lines) / 1e6:>10.4f}"
    )
    return out


def _costs(args: argparse.Namespace) -> int:
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database

    settings = load_settings()

    async def main() -> list[str]:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
            return format_costs(await cost_lines(engine, days=args.days))
        finally:
            await engine.dispose()

    for line in asyncio.run(main()):
        print(line)
    return 0


def _models(args: argparse.Namespace) -> int:
    from bot.errors import KimiAuthError, KimiError
    from bot.llm.models import format_catalog
    from bot.llm.setup import client_from_settings
    from bot.settings import load_settings

    settings = load_settings()
    if settings.moonshot_api_key is None:
        raise ConfigError("MOONSHOT_API_KEY is missing (the Kimi API key)")

    async def main() -> list[str]:
        client = client_from_settings(settings)
        try:
            return format_catalog(await client.list_models(refresh=True))
        except KimiAuthError as exc:
            raise ConfigError(f"MOONSHOT_API_KEY was refused by Kimi ({exc})") from None
        except KimiError as exc:  # Kimi unreachable or failing: a runtime failure, not the configuration's
            raise SupportbotError(f"could not list Kimi's models: {exc}") from None
        finally:
            await client.aclose()

    for line in asyncio.run(main()):
        print(line)
    return 0


def _knowledge(args: argparse.Namespace) -> int:
    from bot.llm.knowledge import KnowledgeSync, knowledge_paths
    from bot.llm.setup import client_from_settings
    from bot.policy import load_policy
    from bot.secret_values import configured_secrets
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database

    settings = load_settings()
    if settings.moonshot_api_key is None:
        raise ConfigError("MOONSHOT_API_KEY is missing (the Kimi API key)")
    secrets = configured_secrets(settings)
    policy = load_policy(settings.policy_file, secrets)

    async def main() -> list[str]:
        engine = create_engine(settings.database_url)
        client = client_from_settings(settings)
        try:
            await upgrade_database(engine)
            sync = KnowledgeSync(engine, client, secrets=secrets)
            report = await sync.sync(knowledge_paths(settings.policy_file, policy.knowledge.files))
            if args.knowledge_command == "sync":
                return [
                    f"{label}: {', '.join(names)}"
                    for label, names in (
                        ("uploaded", report.uploaded),
                        ("unchanged", report.unchanged),
                        ("deleted", report.deleted),
                        ("indexed locally (Kimi unreachable)", report.local),
                    )
                    if names
                ] or ["no knowledge files in the policy"]
            lines = []
            for passage in sync.base.search(args.query, limit=args.limit):
                where = f"{passage.source} › {passage.heading}" if passage.heading else passage.source
                lines += [f"## {where}", passage.text, ""]
            return lines or [f"nothing found for {args.query!r}"]
        finally:
            await client.aclose()
            await engine.dispose()

    for line in asyncio.run(main()):
        print(line)
    return 0


def register(commands: Any) -> None:
    """Add ``costs`` and ``models`` to the ``supportbot`` command line."""
    costs = commands.add_parser("costs", help="model spend by day and model, with the cache-hit share")
    costs.add_argument("--days", type=int, default=7, help="how many days back (default 7)")
    costs.set_defaults(handler=_costs)
    commands.add_parser("models", help="the models Kimi serves: context length, image support").set_defaults(
        handler=_models
    )
    knowledge = commands.add_parser("knowledge", help="knowledge files through Kimi's files API").add_subparsers(
        dest="knowledge_command", required=True
    )
    knowledge.add_parser("sync", help="upload new or changed files, delete removed ones").set_defaults(
        handler=_knowledge
    )
    search = knowledge.add_parser("search", help="the passages a query finds")
    search.add_argument("query")
    search.add_argument("--limit", type=int, default=3)
    search.set_defaults(handler=_knowledge)
