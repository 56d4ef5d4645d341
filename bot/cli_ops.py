"""The operator's parts of the command line: ``run --help`` listing the settings,
``conversations``, short ids, ``--version`` and the exit codes.

Kept apart from :mod:`bot.cli` so that other commands can grow there without touching these.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from bot.domain.states import (
    NO_REPLY_NOTICE,
    NO_REPLY_STATE,
    NO_REPLY_STATUS,
    ConversationOwner,
    ConversationStatus,
    DraftStatus,
)
from bot.errors import SupportbotError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings
    from sqlalchemy.ext.asyncio import AsyncSession

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3
SHORT_ID_MIN = 6
_SHORT_ID = re.compile(r"[0-9a-zA-Z]+")

#: Settings read outside :class:`bot.settings.Settings` (logging, the playground, secrets).
OTHER_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("LOG_FORMAT", "text", "text, or json (one JSON object a line; the Docker image's default)"),
    ("PLAYGROUND_ENABLED", "true", "open the local playground when no chat platform is configured"),
    ("PLAYGROUND_TOKEN", "", "serve the playground next to a platform, to those who know this token"),
    ("PLAYGROUND_APPROVER", "", "approver id (from the policy's lists) the token's holder decides as next to a desk"),
    ("PLAYGROUND_ALLOWED_HOSTS", "", "host names the playground also answers to (a reverse proxy's), comma-separated"),
    ("SUPPORTBOT_SECRETS_DIR", "/run/secrets", "a folder with one file per secret variable"),
)


def package_version() -> str:
    try:
        return version("supportbot")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _shown_default(value: object) -> str:
    """A default as an operator writes it: ``true``, ``120``, ``0.005``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_help() -> str:
    """Every setting with its default, for the ``run`` command's help: the core's, then each
    installed platform's own (:func:`bot.settings.platform_settings_classes`)."""
    from bot.settings import Settings, platform_settings_classes

    rows = _setting_rows(Settings)
    for kind in platform_settings_classes().values():
        rows.extend(_setting_rows(kind, kind.variable("")))
    rows.extend(OTHER_SETTINGS)
    width = max(len(name) for name, _, _ in rows)
    lines = ["settings (environment variables, a .env file, or files in SUPPORTBOT_SECRETS_DIR):"]
    for name, default, meaning in rows:
        suffix = f" [default: {default}]" if default else ""
        lines.append(f"  {name:<{width}}  {meaning}{suffix}")
    lines.append("")
    lines.append("With only MOONSHOT_API_KEY set, the playground opens on http://localhost:8080/.")
    lines.append("exit codes: 0 ok, 1 runtime failure, 2 usage, 3 configuration")
    return "\n".join(lines)


def _setting_rows(settings: type[BaseSettings], prefix: str = "") -> list[tuple[str, str, str]]:
    """(variable, default as shown, description) of every field of ``settings``; a secret shows no default."""
    from pydantic import SecretStr

    rows: list[tuple[str, str, str]] = []
    for name, field in settings.model_fields.items():
        default = field.default
        secret = "SecretStr" in str(field.annotation) or isinstance(default, SecretStr)
        shown = "" if default is None or secret else _shown_default(default)
        rows.append((prefix + name.upper(), shown, (field.description or "") + (" (secret)" if secret else "")))
    return rows


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose epilog may be computed only when its help is shown
    (``epilog_factory``): ``run --help`` lists every setting, which needs pydantic, and no other
    command should pay for that."""

    def __init__(self, *args: Any, epilog_factory: Callable[[], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epilog_factory = epilog_factory

    def format_help(self) -> str:
        if self._epilog_factory is not None:
            self.epilog, self._epilog_factory = self._epilog_factory(), None
        return super().format_help()


def add_run_command(commands: argparse._SubParsersAction[argparse.ArgumentParser], handler: Callable[..., int]) -> None:
    run = commands.add_parser(
        "run",
        help="start everything that is configured",
        description="Start the bot: every configured platform, the outbox dispatcher, the policy watcher and the "
        "HTTP server.",
        epilog_factory=settings_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(handler=handler)


# -- short ids -----------------------------------------------------------------------------


async def conversation_by_short_id(session: AsyncSession, short: str) -> str | None:
    """The conversation a short id (the first characters of a draft or conversation id, as a
    card shows them) names; None when nothing matches; an error when several do."""
    from sqlalchemy import select

    from bot.store import Conversation, Draft

    if len(short) < SHORT_ID_MIN or not _SHORT_ID.fullmatch(short):
        return None
    short = short.lower()  # ids are lowercase hex; LIKE ignores case on SQLite, not on PostgreSQL
    found = set(await session.scalars(select(Draft.conversation_id).where(Draft.id.startswith(short)).limit(50)))
    found |= set(await session.scalars(select(Conversation.id).where(Conversation.id.startswith(short)).limit(50)))
    if len(found) > 1:
        raise SupportbotError(f"the short id {short!r} matches {len(found)} conversations: give more characters")
    return next(iter(found), None)


# -- supportbot conversations --------------------------------------------------------------

#: A draft's states, "none" for conversations without a draft yet, and "no_reply" for those
#: whose latest message needed no reply (resolved by the customer; the draft is ``superseded``).
NO_DRAFT = "none"
STATES = (*(state.value for state in DraftStatus), NO_DRAFT, NO_REPLY_STATE)
SCAN = 2000


def add_conversations_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listing = commands.add_parser(
        "conversations",
        help="recent conversations with their state",
        description="Recent conversations, newest first, with their status, who answers them (the bot or a "
        "human), their assignee and the state of their latest draft. "
        "Pass the short id to `supportbot audit` for the whole trail.",
    )
    listing.add_argument(
        "--state",
        choices=STATES,
        help=f"only conversations whose latest draft is in this state ({NO_DRAFT!r}: no draft yet; "
        f"{NO_REPLY_STATE!r}: the latest message needed no reply)",
    )
    listing.add_argument(
        "--status",
        choices=[status.value for status in ConversationStatus],
        help="only conversations in this status (open, waiting_on_customer, resolved)",
    )
    listing.add_argument(
        "--owner",
        choices=[owner.value for owner in ConversationOwner],
        help="only conversations the bot drafts in (bot) or a human answers (human)",
    )
    listing.add_argument("--platform", help="only this platform (slack, discord, playground)")
    listing.add_argument("--customer", help="only customers whose name or id contains this")
    listing.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    listing.set_defaults(handler=_conversations)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _conversations(args: argparse.Namespace) -> int:
    from bot.dbcheck import preflight_then
    from bot.settings import load_settings

    settings = load_settings()
    rows = asyncio.run(preflight_then(settings, recent_conversations(settings.database_url, args)))
    if not rows:
        filtered = args.state or args.status or args.owner or args.platform or args.customer
        print("no conversations" + (" match" if filtered else " yet"))
        return EXIT_OK
    print(
        f"{'ID':<8}  {'UPDATED (UTC)':<16}  {'STATUS':<19}  {'OWNER':<5}  {'ASSIGNEE':<14}  {'STATE':<15}  "
        f"{'PLATFORM':<10}  {'CUSTOMER':<20}  WHERE"
    )
    for row in rows:
        print(
            f"{row['id'][:8]:<8}  {row['updated']:%Y-%m-%d %H:%M}  {row['status']:<19}  {row['owner']:<5}  "
            f"{row['assignee'][:14]:<14}  {row['state']:<15}  {row['platform']:<10}  "
            f"{row['customer'][:20]:<20}  {row['where'][:60]}"
        )
    return EXIT_OK


def _state(status: str, notice: str) -> str:
    if status == NO_REPLY_STATUS and notice.startswith(NO_REPLY_NOTICE):
        return NO_REPLY_STATE
    return str(status)


async def recent_conversations(database_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows ``supportbot conversations`` prints (newest first, filtered)."""
    from sqlalchemy import select

    from bot.store import Conversation, Draft, create_engine, sessionmaker

    engine = create_engine(database_url, read_only=True)  # never waits on the bot's writer
    try:
        async with sessionmaker(engine)() as session:
            query = select(Conversation).order_by(Conversation.updated_at.desc()).limit(SCAN)
            if args.platform:
                query = query.where(Conversation.platform == args.platform)
            if args.status:
                query = query.where(Conversation.status == ConversationStatus(args.status))
            if args.owner:
                query = query.where(Conversation.owner == ConversationOwner(args.owner))
            conversations = list(await session.scalars(query))
            rows: list[dict[str, Any]] = []
            for conversation in conversations:
                customer = conversation.customer_name or conversation.customer_id
                if args.customer and args.customer.lower() not in f"{customer} {conversation.customer_id}".lower():
                    continue
                latest = (
                    await session.execute(
                        select(Draft.status, Draft.notice)
                        .where(Draft.conversation_id == conversation.id)
                        .order_by(Draft.created_at.desc(), Draft.revision.desc())
                        .limit(1)
                    )
                ).first()
                state = _state(latest.status, latest.notice) if latest is not None else NO_DRAFT
                if args.state and state != args.state:
                    continue
                rows.append(
                    {
                        "id": conversation.id,
                        "updated": conversation.updated_at,
                        "state": state,
                        "status": conversation.status.value,
                        "owner": conversation.owner.value,
                        "assignee": conversation.assignee,
                        "platform": conversation.platform,
                        "customer": customer,
                        "where": conversation.location or conversation.thread_key,
                    }
                )
                if len(rows) >= args.limit:
                    break
            return rows
    finally:
        await engine.dispose()
