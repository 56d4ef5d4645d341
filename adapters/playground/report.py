"""``/report``: the core's report (:mod:`bot.insight`) as a page, behind the playground's access
gate like every playground route; ``?since=30d`` picks the window (default 7d). The page and its
stylesheet are the ones ``supportbot report --html`` writes; no script, so the CSP holds."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from bot.insight.cli import parse_window
from bot.insight.html import STYLESHEET, render_html

if TYPE_CHECKING:
    from adapters.playground.platform import PlaygroundPlatform

STYLESHEET_PATH = "/report/report.css"


class ReportPage:
    """The report page and its stylesheet."""

    def __init__(self, platform: PlaygroundPlatform) -> None:
        self._platform = platform

    async def page(self, request: web.Request) -> web.Response:
        try:
            since = parse_window(request.query.get("since", "7d"))
        except argparse.ArgumentTypeError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        report = await self._platform.core.report(since)
        return web.Response(text=render_html(report, stylesheet_href=STYLESHEET_PATH), content_type="text/html")

    async def stylesheet(self, _request: web.Request) -> web.Response:
        css = await asyncio.to_thread(STYLESHEET.read_bytes)
        return web.Response(body=css, content_type="text/css", charset="utf-8")
