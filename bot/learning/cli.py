"""``supportbot suggest [--since 30d] [--write]``: the corrections of the period, Kimi's proposed
policy changes and knowledge entries, printed as a diff with the conversations behind each.
Nothing changes without ``--write``; then the new policy passes ``policy check``'s validation or
nothing is written. The libraries are imported when the command runs (``supportbot --help`` stays light)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bot.insight.cli import parse_window

if TYPE_CHECKING:
    from bot.domain.lessons import Lesson
    from bot.learning.proposals import Plan, Proposals


def explain(proposals: Proposals, seen: dict[str, list[Lesson]]) -> list[str]:
    """Each proposal, why, and the conversations behind it (short id and a short quote)."""
    lines: list[str] = []
    items = [(f"set {c.key} = {json.dumps(c.value)}", c.why, c.conversations) for c in proposals.policy_changes]
    items += [(f"add knowledge {e.path}", e.why, e.conversations) for e in proposals.knowledge_entries]
    for number, (what, why, conversations) in enumerate(items, start=1):
        lines += [f"{number}. {what}", f"   why: {why}"]
        for short_id in conversations:
            for lesson in seen.get(short_id, []):
                lines.append(f"   - conversation {short_id}: {lesson.quote()}")
    return lines


def write_plan(policy_path: Path, planned: Plan) -> None:
    """Write the knowledge files and the policy, or nothing: the new policy is checked as
    ``policy check`` checks it (knowledge files included) before the policy file is replaced."""
    from bot.errors import PolicyError
    from bot.policy import check_policy
    from bot.secret_values import configured_secrets
    from bot.settings import load_settings

    folder = policy_path.parent
    existing = [path for path in planned.knowledge if (folder / path).exists()]
    if existing:
        raise PolicyError(str(policy_path), [f"{existing[0]} exists already; nothing was written"])
    written: list[Path] = []
    try:
        for path, text in planned.knowledge.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(target)
        check_policy(planned.policy_after, policy_path, configured_secrets(load_settings()))
        staged = policy_path.with_name(f".{policy_path.name}.suggest")
        staged.write_text(planned.policy_after, encoding="utf-8")
        staged.replace(policy_path)
    except BaseException:
        for target in written:
            target.unlink(missing_ok=True)
        raise


def _suggest(args: argparse.Namespace) -> int:
    from bot.dbcheck import preflight_then
    from bot.domain.lessons import group_lessons, lessons_by_short_id
    from bot.errors import ConfigError, SupportbotError
    from bot.learning.ask import ask_for_proposals
    from bot.learning.proposals import plan
    from bot.llm.setup import client_from_settings
    from bot.policy import load_policy
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database, utcnow
    from bot.store.learning import lessons

    settings = load_settings()
    if settings.moonshot_api_key is None:
        raise ConfigError("MOONSHOT_API_KEY is missing (the Kimi API key)")
    policy_path = settings.policy_file
    policy_text = policy_path.read_text(encoding="utf-8") if policy_path.exists() else ""
    model = load_policy(policy_path).models.drafting or settings.kimi_model

    async def main() -> tuple[Proposals, dict[str, list[Lesson]]] | None:
        engine = create_engine(settings.database_url)
        client = client_from_settings(settings)
        try:
            await upgrade_database(engine)
            now = utcnow()
            async with engine.connect() as conn:
                found = await lessons(conn, now - args.since)
            groups = group_lessons(found)
            if not groups:
                return None
            proposals = await ask_for_proposals(client, engine, model, groups, policy_text, now)
            return proposals, lessons_by_short_id(groups)
        finally:
            await client.aclose()
            await engine.dispose()

    answer = asyncio.run(preflight_then(settings, main()))
    if answer is None:
        print("no edits, rejections or negative feedback in the period: nothing to learn from")
        return 0
    proposals, seen = answer
    if not proposals.policy_changes and not proposals.knowledge_entries:
        print("Kimi proposes no change")
        return 0
    planned = plan(policy_text, proposals)
    for line in explain(proposals, seen):
        print(line)
    print()
    print(planned.diff(policy_path.name), end="")
    if not args.write:
        print(f"\nnothing was changed; run again with --write to apply it to {policy_path}")
        return 0
    try:
        write_plan(policy_path, planned)
    except OSError as exc:
        raise SupportbotError(f"cannot write {exc.filename}: {exc.strerror}; nothing was changed") from None
    version = load_policy(policy_path).version
    print(f"\nwrote {policy_path} (policy version {version})" + "".join(f", {p}" for p in planned.knowledge))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    suggest = commands.add_parser(
        "suggest",
        help="learn from edits: proposed policy changes and knowledge entries, as a diff",
        description="Group the period's edits, rejections with reasons and negative feedback, ask Kimi for"
        " policy changes and knowledge entries, and print them as a diff against the policy file with the"
        " conversations behind each. Nothing changes without --write, which checks the new policy as"
        " 'policy check' does and writes nothing when it fails.",
    )
    suggest.add_argument(
        "--since", type=parse_window, default=timedelta(days=30), help="the period to learn from (default 30d)"
    )
    suggest.add_argument("--write", action="store_true", help="apply the proposals to the policy file")
    suggest.set_defaults(handler=_suggest)
