"""Kimi at its limits (issue 10): a burst of customer questions against an account's limits.

N questions arrive together (a Discord announcement, an outage). Each one is drafted by the real
drafting agent through the real Kimi client against the fake Kimi, which enforces the account's
limits the way Moonshot does (concurrency C, RPM over a sliding 60-second window, 429
``rate_limit_reached_error`` "... please try again after N seconds" past either) and takes
``--latency`` seconds per completion. Every question names an order, so a draft is two model calls:
``get_order_status``, then the answer.

It prints, per run: the time to the last draft against the ideal schedule (what an oracle that
knows the limits could do: the greedy schedule of the same calls under C and RPM), the 429s the
run caused, drafts failed, and the queue wait (time a call waited in the limiter) p50/p99.
``--compare`` adds a run whose limiter only caps concurrency at 8 (the old client) for contrast.

Run from the repository root (about 75 s per run at the issue's figures)::

    python -m bench.kimi_burst [--questions 80 --concurrency 4 --rpm 120 --latency 1.0] [--compare]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import time
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, SecretStr

from bench._common import markdown_table, percentile
from bot.agent import AgentLimits, DraftingAgent
from bot.errors import SupportbotError
from bot.kimi import KimiClient, Usage
from bot.llm.limiter import AccountLimiter
from tests.fakes.kimi import FakeKimi
from tools import Tool, ToolContext, ToolRegistry, ToolResult

KEY = "sk-bench"
CALLS_PER_DRAFT = 2


class _OrderArgs(BaseModel):
    order_id: str


class _OrderStatus(Tool):
    name: ClassVar[str] = "get_order_status"
    description: ClassVar[str] = "Look an order up by its id."
    Args: ClassVar[type[BaseModel]] = _OrderArgs

    async def run(self, args: BaseModel, ctx: ToolContext) -> ToolResult:
        assert isinstance(args, _OrderArgs)
        return ToolResult({"order_id": args.order_id, "status": "shipped", "eta": "Friday"}, "shipped")


def ideal_schedule(drafts: int, calls: int, concurrency: int, rpm: int, latency: float, window: float) -> float:
    """When the last call of the last draft ends if calls start as early as C and RPM allow
    (a draft's calls run one after another)."""
    ready: list[tuple[float, int, int]] = [(0.0, d, 0) for d in range(drafts)]  # (ready at, draft, call)
    heapq.heapify(ready)
    running: list[float] = []  # end times
    starts: list[float] = []
    last = 0.0
    while ready:
        at, draft, call = heapq.heappop(ready)
        t = max(at, starts[-1] if starts else 0.0)  # starts never go back in time
        while True:
            running = [e for e in running if e > t]
            if len(running) >= concurrency:
                t = max(t, min(running))
                continue
            recent = [s for s in starts if s > t - window]
            if len(recent) >= rpm:
                t = max(t, min(recent) + window)
                continue
            break
        starts.append(t)
        running.append(t + latency)
        last = max(last, t + latency)
        if call + 1 < calls:
            heapq.heappush(ready, (t + latency, draft, call + 1))
    return last


@dataclass
class RunResult:
    label: str
    last_draft: float
    ideal: float
    rate_limited: int
    failed: int
    wait_p50: float
    wait_p99: float
    peak: int


async def run(
    label: str,
    *,
    questions: int,
    concurrency: int,
    rpm: int,
    latency: float,
    window: float,
    limiter: AccountLimiter,
) -> RunResult:
    async with FakeKimi(api_key=KEY) as kimi:
        kimi.limits.max_concurrency, kimi.limits.rpm, kimi.limits.limit_window = concurrency, rpm, window
        kimi.latency = latency
        client = KimiClient(kimi.base_url, SecretStr(KEY), limiter=limiter, max_retries=4)
        agent = DraftingAgent(client)
        tools = ToolRegistry([_OrderStatus()])
        limits = AgentLimits(max_tool_steps=4, tool_timeout_seconds=5, thinking=False, max_output_tokens=1024)
        ended: list[float] = []
        failed = 0
        started = time.monotonic()

        async def draft(n: int) -> None:
            nonlocal failed
            messages = [
                {"role": "system", "content": "You draft replies for the support team of Example Shop."},
                {"role": "user", "content": f"Hi, where is my order #W{2611340 + n}? The site is down."},
            ]

            def ignore(_model: str, _usage: Usage) -> None:
                return None

            try:
                await agent.draft(
                    messages,
                    model="kimi-k2.5",
                    fallback_model=None,
                    limits=limits,
                    context=ToolContext(conversation_id=f"c{n}"),
                    tools=tools,
                    on_usage=ignore,
                )
            except SupportbotError:
                failed += 1
            ended.append(time.monotonic() - started)

        try:
            await asyncio.gather(*(draft(n) for n in range(questions)))
        finally:
            await client.aclose()
        waits = limiter.stats.waits
        return RunResult(
            label,
            max(ended),
            ideal_schedule(questions, CALLS_PER_DRAFT, concurrency, rpm, latency, window),
            kimi.limits.rate_limited,
            failed,
            percentile(waits, 50),
            percentile(waits, 99),
            kimi.limits.max_in_flight,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rpm", type=int, default=120)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per completion")
    parser.add_argument("--window", type=float, default=60.0, help="the RPM window in seconds")
    parser.add_argument("--compare", action="store_true", help="also run with only a concurrency cap of 8")
    args = parser.parse_args()
    common = {
        "questions": args.questions,
        "concurrency": args.concurrency,
        "rpm": args.rpm,
        "latency": args.latency,
        "window": args.window,
    }
    results = []
    if args.compare:
        blind = AccountLimiter(max_concurrency=8, rpm=1_000_000, tpm=1_000_000_000, window=args.window)
        results.append(await run("concurrency cap 8 only", limiter=blind, **common))  # type: ignore[arg-type]
    limiter = AccountLimiter(max_concurrency=args.concurrency, rpm=args.rpm, tpm=1_800_000, window=args.window)
    results.append(await run("account limiter", limiter=limiter, **common))  # type: ignore[arg-type]
    print(
        f"{args.questions} questions x {CALLS_PER_DRAFT} calls, account C={args.concurrency}, "
        f"RPM={args.rpm} per {args.window:g} s, {args.latency:g} s per completion\n"
    )
    rows = [
        (
            r.label,
            f"{r.last_draft:.1f}",
            f"{r.ideal:.1f}",
            f"{(r.last_draft / r.ideal - 1) * 100:+.1f} %",
            r.rate_limited,
            r.failed,
            f"{r.wait_p50:.1f}",
            f"{r.wait_p99:.1f}",
            r.peak,
        )
        for r in results
    ]
    print(
        markdown_table(
            [
                "run",
                "last draft s",
                "ideal s",
                "vs ideal",
                "429s",
                "drafts failed",
                "queue wait p50 s",
                "p99 s",
                "peak in flight",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
