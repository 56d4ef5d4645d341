"""``supportbot report [--since 7d] [--html FILE]``: what the team learns, for the terminal and
as an HTML page with charts. The libraries are imported when the command runs, so ``supportbot --help`` stays light."""

from __future__ import annotations

import argparse
import asyncio
import re
from datetime import timedelta
from pathlib import Path

_WINDOW = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str) -> timedelta:
    """``7d``, ``24h``, ``30m``, ``2w``: the report's window; a clear error otherwise."""
    match = _WINDOW.match(text.lower())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a period: write a number and m, h, d or w (7d, 24h, 2w)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _report(args: argparse.Namespace) -> int:
    from bot.dbcheck import preflight_then
    from bot.insight.figures import gather
    from bot.insight.html import render_html
    from bot.insight.text import format_report
    from bot.settings import load_settings
    from bot.store import create_engine, upgrade_database, utcnow

    settings = load_settings()

    async def main() -> list[str]:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)  # as ``costs`` does: the figures need the newest columns
            async with engine.connect() as conn:
                report = await gather(conn, args.since, utcnow())
        finally:
            await engine.dispose()
        if args.html is not None:
            await asyncio.to_thread(Path(args.html).write_text, render_html(report), encoding="utf-8")
        return format_report(report)

    for line in asyncio.run(preflight_then(settings, main())):
        print(line)
    if args.html is not None:
        print(f"\nwrote {args.html}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="what the team learns: decision rates, timings, edit distances, cost",
        description="Approval, edit, reject and regenerate rates by category, agent, model and policy version;"
        " time to first response and to decision (p50, p90); the edit distance of sent replies; cost per"
        " resolved conversation; messages that needed no reply, conversations taken over.",
    )
    report.add_argument(
        "--since", type=parse_window, default=timedelta(days=7), help="the period to report on (default 7d)"
    )
    report.add_argument("--html", metavar="FILE", help="also write the report as an HTML page with charts")
    report.set_defaults(handler=_report)
