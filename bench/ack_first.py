"""The ack first (issue 20): does an event's ack wait behind drafting and card work?

The real ``supportbot run`` in a child process (SQLite in a temporary directory, the fake Kimi
with latency 0 and the fake Slack served by this process, as in :mod:`bench.slack_throughput`)
takes ``--n`` signed ``app_mention`` events from ``--concurrency`` closed-loop senders, in two
modes, alternated ``--runs`` times:

* drafting on: each sender posts an event, waits for its ack, then for its card in the review
  channel, then sends the next (every event is drafted and its card posted meanwhile);
* drafting off (the baseline): the same bot with ``DRAFTING_CONCURRENCY=0``, so intake runs
  alone, sent the same events at the same moments as the drafting-on run before it (its send
  times replayed: the opening burst of ``--concurrency`` events, then one event per card).

The acks of the drafting-on run are what Slack would see under that burst; the baseline is the
same intake with nothing behind it. Goal: ack p99 under 250 ms with every card posted.

The ack is timed on the wire (httpx's trace: from the request's body written to the response's
headers read), so the load generator's own queue is left out: 50 signed POSTs sent at once by
this one Python process wait for each other before they leave (against a server that answers
at once, 120-160 ms p99 on 2 shared cores). "sender's view" is from just before the POST, that
queue included.

Run from the repository root::

    python -m bench.ack_first [--runs 3] [--n 300] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench._common import fmt_ms, free_port, markdown_table, median, percentile
from bench.slack_throughput import (
    CardWatch,
    bot_environment,
    cli,
    cpu_seconds,
    customer,
    import_sample_orders,
    post_signed,
    question,
    stop_bot,
    wait_healthy,
)
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention
from tests.harness import KIMI_KEY, SLACK_TOKEN

#: The goal for the ack's p99, seconds.
SLOW = 0.25


@dataclass
class Run:
    """One run's figures."""

    drafting: bool
    acks: list[float]
    seen: list[float]  # the acks as the sender saw them
    slow: tuple[int, int]  # acks over SLOW seconds: sent in the opening second, sent later
    failed_acks: int
    events: int
    cards: int
    duplicates: int
    cards_per_second: float
    cpu_per_event: float
    load: float

    @property
    def mode(self) -> str:
        return "drafting on" if self.drafting else "drafting off (baseline)"


@dataclass
class Sent:
    """One event: when it was sent (seconds after the load began), its ack as the bot gave it
    (the request's last byte written to the response's headers read) and as the sender saw it
    (from just before the POST: with the load generator's own queue), and its card."""

    at: float
    ack: float
    seen: float
    status: int
    card: float | None


class Wire:
    """httpx's trace hook: when the request's body was written and the response's headers read."""

    def __init__(self) -> None:
        self.sent = self.answered = float("nan")

    async def __call__(self, event: str, _info: object) -> None:
        if event == "http11.send_request_body.complete":
            self.sent = time.perf_counter()
        elif event == "http11.receive_response_headers.complete":
            self.answered = time.perf_counter()


async def send(
    client: httpx.AsyncClient,
    url: str,
    slack: FakeSlack,
    watch: CardWatch,
    index: int,
    began: float,
    *,
    card_timeout: float | None,
) -> Sent:
    """One event; waits for its card too when ``card_timeout`` is given."""
    text, marker = question(index)
    arrived = watch.expect(marker)
    wire = Wire()
    sent = time.perf_counter()
    envelope = app_mention(f"<@UBOT> {text}", user=customer(index))
    status = await post_signed(client, url, slack, envelope, {"trace": wire})
    seen = time.perf_counter() - sent
    if status == 200 and card_timeout is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), card_timeout)
    return Sent(sent - began, wire.answered - wire.sent, seen, status, watch.arrivals.get(marker))


async def load(
    url: str,
    slack: FakeSlack,
    watch: CardWatch,
    indexes: range,
    concurrency: int,
    card_timeout: float | None,
    schedule: Sequence[float] = (),
) -> tuple[float, list[Sent]]:
    """Closed loop: ``concurrency`` senders, each sending its next event once the last one's card
    came. With a ``schedule`` (the send times of a closed-loop run), each event is sent at its
    time instead, whatever the acks before it. Returns when the load began, and the events."""
    results: list[Sent] = []
    pending = iter(indexes)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
        began = time.perf_counter()

        async def sender() -> None:
            for index in pending:
                results.append(await send(client, url, slack, watch, index, began, card_timeout=card_timeout))

        async def at(when: float, index: int) -> None:
            await asyncio.sleep(max(0.0, began + when - time.perf_counter()))
            results.append(await send(client, url, slack, watch, index, began, card_timeout=card_timeout))

        if schedule:
            await asyncio.gather(*(at(when, index) for when, index in zip(sorted(schedule), indexes, strict=False)))
        else:
            await asyncio.gather(*(sender() for _ in range(concurrency)))
    return began, results


async def one_run(args: argparse.Namespace, *, schedule: Sequence[float] = ()) -> tuple[Run, list[float]]:
    """A drafting-on run (closed loop), or with ``schedule`` the baseline replaying its send times
    against a bot that does not draft. Returns the figures and the send times."""
    drafting = not schedule
    with tempfile.TemporaryDirectory(prefix="supportbot-ackfirst-") as tmpdir:
        tmp = Path(tmpdir)
        async with FakeKimi(api_key=KIMI_KEY) as kimi, FakeSlack(bot_token=SLACK_TOKEN) as slack:
            watch = CardWatch(slack)
            port = free_port()
            env = bot_environment(tmp, kimi, slack, port)
            if not drafting:
                env["DRAFTING_CONCURRENCY"] = "0"
            log_path = tmp / "bot.log"
            with log_path.open("wb") as log_file:
                proc = subprocess.Popen(cli("run"), env=env, cwd=tmp, stdout=log_file, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            try:
                await wait_healthy(f"{base}/healthz", proc, args.startup_timeout)
                await import_sample_orders(tmp, env)
                url = f"{base}/slack/events"
                card_timeout = args.card_timeout if drafting else None
                await load(url, slack, watch, range(args.warmup), 1, card_timeout)
                load_average = os.getloadavg()[0]
                bot = psutil.Process(proc.pid)
                cpu = cpu_seconds(bot)
                measured = range(args.warmup, args.warmup + args.n)
                started, results = await asyncio.wait_for(
                    load(url, slack, watch, measured, args.concurrency, card_timeout, schedule), args.deadline
                )
                cpu = cpu_seconds(bot) - cpu
                if drafting:
                    await asyncio.sleep(1.0)  # a late duplicate card would land now
            except BaseException:
                print(f"bot log:\n{log_path.read_text(errors='replace')[-4000:]}", file=sys.stderr)
                raise
            finally:
                await stop_bot(proc)
    cards = [r.card for r in results if r.card is not None]
    markers = {question(i)[1] for i in measured}
    run = Run(
        drafting=drafting,
        acks=[r.ack for r in results if r.status == 200],
        seen=[r.seen for r in results if r.status == 200],
        slow=(
            sum(1 for r in results if r.ack > SLOW and r.at < 1.0),
            sum(1 for r in results if r.ack > SLOW and r.at >= 1.0),
        ),
        failed_acks=sum(1 for r in results if r.status != 200),
        events=len(results),
        cards=len(cards),
        duplicates=sum(1 for marker, count in watch.posts.items() if marker in markers and count > 1),
        cards_per_second=len(cards) / (max(cards) - started) if cards else 0.0,
        cpu_per_event=cpu / max(1, len(results)),
        load=load_average,
    )
    return run, [r.at for r in results]


def row(label: str, runs: Sequence[Run]) -> list[object]:
    """One table row: each figure is the median over ``runs``."""
    acks = [median([percentile(r.acks, p) for r in runs]) for p in (50, 90, 99, 100)]
    seen = [median([percentile(r.seen, p) for r in runs]) for p in (50, 99)]
    cards, events = median([r.cards for r in runs]), median([r.events for r in runs])
    return [
        label,
        *(fmt_ms(value) for value in acks),
        f"{cards:.0f} / {events:.0f}" if runs[0].drafting else "n/a (drafting off)",
        f"{median([r.duplicates for r in runs]):.0f}",
        f"{median([r.cards_per_second for r in runs]):.1f}" if runs[0].drafting else "n/a",
        f"{median([r.slow[0] for r in runs]):.0f} / {median([r.slow[1] for r in runs]):.0f}",
        " / ".join(fmt_ms(value) for value in seen),
        f"{median([r.failed_acks for r in runs]):.0f}",
        fmt_ms(median([r.cpu_per_event for r in runs])),
        f"{median([r.load for r in runs]):.1f}",
    ]


async def bench(args: argparse.Namespace) -> int:
    runs: list[Run] = []
    for number in range(args.runs):
        drafted, schedule = await one_run(args)
        baseline, _ = await one_run(args, schedule=schedule)
        runs += [drafted, baseline]
        for run in (drafted, baseline):
            print(f"run {number + 1} {run.mode}: ack p99 {fmt_ms(percentile(run.acks, 99))} ms", file=sys.stderr)
    headers = [
        "run",
        "ack p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cards posted / events",
        "duplicate cards",
        "cards/s",
        "acks > 250 ms: opening second / later",
        "sender's view p50 / p99 ms",
        "non-200 acks",
        "bot CPU per event ms",
        "load avg (1 min)",
    ]
    table: list[list[object]] = []
    for drafting in (True, False):
        mine = [r for r in runs if r.drafting == drafting]
        table += [row(f"{r.mode}, run {i + 1}", [r]) for i, r in enumerate(mine)]
        if len(mine) > 1:
            table.append(row(f"**{mine[0].mode}, median of {len(mine)}**", mine))
    print(
        f"## The ack first: N={args.n} events, {args.concurrency} concurrent senders, fake Kimi latency 0, "
        f"{os.cpu_count()} cores\n"
    )
    print(markdown_table(headers, table))
    complete = all(r.cards == r.events == args.n and r.failed_acks == 0 for r in runs if r.drafting)
    return 0 if complete and not any(r.duplicates for r in runs) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode, alternated (default 3)")
    parser.add_argument("--n", type=int, default=300, help="events per run (default 300)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent senders (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="sequential warm-up events, not counted")
    parser.add_argument("--card-timeout", type=float, default=30.0, help="seconds to wait for one card")
    parser.add_argument("--deadline", type=float, default=90.0, help="seconds one run's load may take")
    parser.add_argument("--startup-timeout", type=float, default=20.0, help="seconds to wait for /healthz")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.n < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--runs, --n and --concurrency must be positive, --warmup not negative")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
