"""The ``supportbot`` command line.

``run`` starts everything that is configured; ``db upgrade`` migrates the schema;
``orders import FILE`` loads orders; ``customers link ACCOUNT CUSTOMER`` links a chat account
(``slack:U0123``, ``discord:4567``) to a shop customer; ``policy check FILE`` validates a policy file; ``audit
CONVERSATION`` prints a conversation's audit trail; ``forget --customer ID | --account ACCOUNT`` erases one
person everywhere. Adapters add their own commands through the
``supportbot.commands`` entry-point group (e.g. ``supportbot discord invite-url``).
``conversations`` lists recent conversations with their state; ``report`` shows what the team learns
(decision rates, timings, edit distances, cost; ``--html FILE`` with charts); ``suggest`` proposes policy
changes and knowledge entries from the desk's edits, rejections and negative feedback (``--write`` applies them).

Exit codes: 0 ok, 1 runtime failure (a database that is down, a rejected file, no such
conversation), 2 usage (a wrong command line), 3 configuration (settings, policy file,
DATABASE_URL). Errors are one line (or one line per problem) on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import cast

from bot.cli_ops import (
    EXIT_CONFIG,
    EXIT_RUNTIME,
    CommandParser,
    add_conversations_command,
    add_run_command,
    conversation_by_short_id,
    package_version,
)
from bot.errors import ConfigError, ImportFailed, PolicyError, SupportbotError
from bot.llm.commands import register as register_llm_commands


def _run(args: argparse.Namespace) -> int:
    from bot.app import serve
    from bot.dbcheck import preflight_then
    from bot.logs import configure_logging
    from bot.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    asyncio.run(preflight_then(settings, serve(settings)))
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from bot.dbcheck import preflight_then
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database

    settings = load_settings()

    async def main() -> None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
        finally:
            await engine.dispose()

    asyncio.run(preflight_then(settings, main()))
    print("database is at the newest schema")
    return 0


def _orders_import(args: argparse.Namespace) -> int:
    from bot.dbcheck import preflight_then
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database
    from tools import OrderImportError, import_orders

    settings = load_settings()
    path = Path(args.file)

    async def main() -> int:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
            return await import_orders(engine, path)
        except OrderImportError as exc:
            raise ImportFailed(f"{path}: nothing was imported:\n  " + "\n  ".join(exc.problems)) from None
        finally:
            await engine.dispose()

    count = asyncio.run(preflight_then(settings, main()))
    print(f"imported {count} orders from {path}")
    return 0


def _account(text: str) -> str:
    """A chat account as ``supportbot customers link`` takes it (a usage error otherwise)."""
    from tools.orders import ACCOUNT_PATTERN

    if not ACCOUNT_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not an account such as slack:U0123 or discord:4567 ({text!r})")
    return text


def _customers_link(args: argparse.Namespace) -> int:
    from bot.dbcheck import preflight_then
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database
    from tools import ToolError
    from tools.orders import link_account

    settings = load_settings()

    async def main() -> None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
            await link_account(engine, args.account, args.customer_id)
        except ToolError as exc:
            raise ImportFailed(f"nothing was linked: {exc.message}") from None
        finally:
            await engine.dispose()

    asyncio.run(preflight_then(settings, main()))
    print(f"{args.account} is now customer {args.customer_id}")
    return 0


def _forget(args: argparse.Namespace) -> int:
    from bot.dbcheck import preflight_then
    from bot.forget import Forgotten, forget
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database

    settings = load_settings()

    async def main() -> Forgotten:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
            return await forget(engine, customer=args.customer, account=args.account)
        finally:
            await engine.dispose()

    forgotten = asyncio.run(preflight_then(settings, main()))
    print(f"erased {args.customer or args.account}:")
    for line in forgotten.lines():
        print(f"  {line}")
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    from bot.policy import load_policy, read_deprecations
    from bot.secret_values import configured_secrets
    from bot.settings import Settings, load_settings

    path = Path(args.file)
    if not path.exists():
        raise PolicyError(str(path), ["file not found"])
    try:
        settings: Settings | None = load_settings()
    except ConfigError:
        settings = None  # checking a policy needs no working settings; the secrets named in the environment still count
    policy = load_policy(path, configured_secrets(settings))
    for line in read_deprecations(path):
        print(f"{path}: {line}")
    print(f"{path}: OK (policy version {policy.version})")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from sqlalchemy import or_, select

    from bot.dbcheck import preflight_then
    from bot.settings import load_settings
    from bot.store import AuditEvent, Conversation, Draft, create_engine, sessionmaker

    settings = load_settings()

    async def main() -> list[str]:
        engine = create_engine(settings.database_url, read_only=True)  # never waits on the bot's writer
        try:
            sessions = sessionmaker(engine)
            async with sessions() as session:
                conversation_id = await session.scalar(
                    select(Conversation.id).where(
                        or_(Conversation.id == args.conversation, Conversation.thread_key == args.conversation)
                    )
                )
                if conversation_id is None:
                    conversation_id = await session.scalar(
                        select(Draft.conversation_id).where(Draft.id == args.conversation)
                    )
                if conversation_id is None:
                    conversation_id = await conversation_by_short_id(session, args.conversation)
                if conversation_id is None:
                    raise SupportbotError(f"no conversation, thread key or draft {args.conversation!r}")
                events = await session.scalars(
                    select(AuditEvent).where(AuditEvent.conversation_id == conversation_id).order_by(AuditEvent.id)
                )
                return [
                    f"{e.created_at:%Y-%m-%d %H:%M:%S}  {e.kind:<14} {e.actor or '-':<14} "
                    f"{(e.draft_id or '')[:8]:<8}  {e.summary}"
                    for e in events
                ]
        finally:
            await engine.dispose()

    for line in asyncio.run(preflight_then(settings, main())):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supportbot",
        description="A support copilot: Kimi drafts, humans approve.",
        epilog="exit codes: 0 ok, 1 runtime failure, 2 usage, 3 configuration",
    )
    parser.add_argument("--version", action="version", version=f"supportbot {package_version()}")
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, parser_class=CommandParser),
    )
    add_run_command(commands, _run)
    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate to the newest schema").set_defaults(handler=_db_upgrade)
    orders = commands.add_parser("orders", help="the embedded order store").add_subparsers(
        dest="orders_command", required=True
    )
    importer = orders.add_parser("import", help="load orders from CSV or JSON Lines")
    importer.add_argument("file")
    importer.set_defaults(handler=_orders_import)
    customers = commands.add_parser("customers", help="who the customers are").add_subparsers(
        dest="customers_command", required=True
    )
    link = customers.add_parser("link", help="link a chat account to a shop customer (guards: identity)")
    link.add_argument("account", type=_account, help="slack:U0123 or discord:4567")
    link.add_argument("customer_id", help="the shop's customer id, as in the orders file")
    link.set_defaults(handler=_customers_link)
    erase = commands.add_parser(
        "forget",
        help="erase one person everywhere: texts, images, identity, account links, order details",
        description="Erase one person's conversations (texts, images, drafts, tool calls, replies, facts, name and"
        " e-mail; the audit keeps hashes), their orders' name, e-mail and postal code, and their account links."
        " Prints what it erased; running it again erases nothing.",
    )
    person = erase.add_mutually_exclusive_group(required=True)
    person.add_argument("--customer", help="the shop's customer id, as in the orders file")
    person.add_argument("--account", type=_account, help="a chat account: slack:U0123 or discord:4567")
    erase.set_defaults(handler=_forget)
    policy = commands.add_parser("policy", help="the managers' policy file").add_subparsers(
        dest="policy_command", required=True
    )
    check = policy.add_parser("check", help="validate a policy file")
    check.add_argument("file")
    check.set_defaults(handler=_policy_check)
    audit = commands.add_parser("audit", help="print a conversation's audit trail")
    audit.add_argument(
        "conversation", help="conversation id, thread key or draft id (the short id on a card, e.g. 1a2b3c4d, will do)"
    )
    audit.set_defaults(handler=_audit)
    from bot.evaluation.cli import register as register_eval  # supportbot eval (issue 9)

    register_eval(commands)
    from bot.insight.cli import register as register_report  # supportbot report (issue 21)

    register_report(commands)
    from bot.learning.cli import register as register_suggest  # supportbot suggest (issue 21)

    register_suggest(commands)
    register_llm_commands(commands)  # costs, models, knowledge
    add_conversations_command(commands)
    for ep in entry_points(group="supportbot.commands"):
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = ep.load()
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except PolicyError as exc:
        if len(exc.problems) == 1:
            print(f"{exc.path}: invalid policy: {exc.problems[0]}", file=sys.stderr)
        else:
            print(f"{exc.path}: invalid policy", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (ImportFailed, SupportbotError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"error: cannot listen: {exc.strerror}: another program has the port; set PORT", file=sys.stderr)
            return EXIT_CONFIG
        raise


if __name__ == "__main__":
    sys.exit(main())
