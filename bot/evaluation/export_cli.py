"""``supportbot eval export [--since 30d] [--out DIR]``: the period's approved and edited
conversations written as ``DIR/cases.jsonl`` (:mod:`bot.evaluation.export`), read back with the
eval's own loader and checked for any personal data left before the command says it is done."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path

from bot.errors import SupportbotError

DEFAULT_SINCE = timedelta(days=30)
DEFAULT_OUT = Path("evals/exported")


def leaks(text: str, originals: list[str]) -> int:
    """How many of ``originals`` (ids and personal data) still appear in ``text`` as words."""
    return sum(
        1
        for original in originals
        if len(original) >= 3 and re.search(rf"(?<![\w#]){re.escape(original)}(?!\w)", text, re.IGNORECASE)
    )


def export(args: argparse.Namespace) -> int:
    from bot.dbcheck import preflight_then
    from bot.evaluation.cases import CaseError, load_cases
    from bot.evaluation.export import export_cases
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database, utcnow
    from bot.store.exports import SentConversation, sent_conversations

    if args.extra:
        raise SupportbotError("usage: supportbot eval export [--since 30d] [--out DIR]")
    since: timedelta = args.since or DEFAULT_SINCE
    target = Path(args.out) if args.out else DEFAULT_OUT
    path = target / "cases.jsonl"
    if path.exists():
        raise SupportbotError(f"{path} exists already; choose another --out (nothing was written)")
    settings = load_settings()

    async def main() -> list[SentConversation]:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
            return await sent_conversations(engine, utcnow() - since)
        finally:
            await engine.dispose()

    conversations = asyncio.run(preflight_then(settings, main()))
    if not conversations:
        print("no approved or edited replies were sent in the period: nothing to export")
        return 0
    cases, names = export_cases(conversations)
    text = "".join(
        json.dumps(case.model_dump(mode="json", by_alias=True, exclude_defaults=True), ensure_ascii=False) + "\n"
        for case in cases
    )
    left = leaks(text, names.originals())
    if left:
        raise SupportbotError(f"{left} ids or personal data could not be replaced; nothing was written")
    target.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    try:
        load_cases(path)
    except CaseError as exc:
        path.unlink()
        raise SupportbotError(f"the exported cases do not load ({exc}); nothing was written") from None
    print(f"wrote {len(cases)} cases to {path} (ids and personal data replaced by placeholders)")
    print(f"run them: supportbot eval {path}")
    return 0
