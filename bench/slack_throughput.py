"""Slack throughput (issue 2): how fast the real bot turns signed Slack events into review cards.

What runs where:

* this process serves a fake Kimi (``tests.fakes.kimi.FakeKimi``, answer latency ``--kimi-latency``,
  0 by default) and a fake Slack (``tests.fakes.slack.FakeSlack``) on 127.0.0.1;
* the bot is the real ``supportbot run`` (``python -m bot.cli run``) in a child process, configured
  only through environment variables (SQLite in a temporary directory, ``LOG_LEVEL=WARNING``);
  a few orders are loaded first with ``supportbot orders import``.

The load is closed-loop: ``--concurrency`` K workers each send one signed ``app_mention`` event (a
new customer thread), wait until the card for it reaches the review channel, then send the next,
until ``--n`` events were sent. Every question carries a unique marker (``bm00042q``); half of the
questions name an order (the fake model then calls ``get_order_status``: two model calls per
draft), half do not (one model call). ``--warmup`` events are sent first, one at a time, and left
out of the figures.

Per event it measures:

* ack latency: the HTTP response time of the event POST (Slack wants it under 3 s);
* event-to-card latency: from just before the POST to the moment the fake Slack received the
  ``chat.postMessage`` card in the review channel containing the event's marker (a hook on the
  fake's handler stamps it);
* the split of that time: event -> first Kimi request, first Kimi request -> last Kimi answer
  (model calls plus tool runs plus waiting for the bot's Kimi concurrency slots), last Kimi answer
  -> card (the database writes and the card rendering and posting);

and over the run: cards per second (N / wall time from the first send to the last card), the bot's
peak RSS (psutil, sampled every 50 ms in a thread), the bot's and this process's CPU time, and
"bot overhead p50" = p50 of (event-to-card minus the fake Kimi latency times that event's Kimi
calls). Everything is bounded: per-card timeout, a deadline for the whole load, a bounded SIGTERM
shutdown. Nothing leaves 127.0.0.1.

Run from the repository root::

    python -m bench.slack_throughput [--n 300] [--concurrency 20] [--kimi-latency 0] [--socket-mode]

``--socket-mode`` delivers the events over a Socket Mode WebSocket instead (the bot gets
``SLACK_APP_TOKEN`` and no signing secret; ``tests.fakes.socket_mode.SocketModeSlack``); the ack
latency is then from sending the envelope to the bot's ack on the socket (the fake notices an ack
within 10 ms).

``--profile FILE`` runs the bot under cProfile (slower; inspect with ``pstats``) to see where its
CPU time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiohttp import web

from bench._common import fmt_ms, free_port, markdown_table, median, percentile
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_payloads import app_mention, event_body, sign
from tests.fakes.socket_mode import SocketModeSlack
from tests.harness import KIMI_KEY, REVIEW_CHANNEL, SIGNING_SECRET, SLACK_TOKEN, sample_orders

MARKER_RE = re.compile(r"bm\d{5}q")
MARKER_BYTES_RE = re.compile(rb"bm\d{5}q")

#: Questions naming an order (the fake model looks it up: two model calls) and questions that do not
#: (one model call). The last order id does not exist: the tool answers not_found.
ORDER_QUESTIONS = (
    "Hi, where is my order #W2611340? It was supposed to arrive by now.",
    "Can you check the status of order 40021 for me please?",
    "Has my order ORD-77 been delivered? I can't find the parcel.",
    "I can't find anything about order #W9999999, can you look it up?",
)
PLAIN_QUESTIONS = (
    "Do you ship to Canada, and how long does delivery usually take?",
    "What is your return policy for items that were already opened?",
    "How do I change the email address on my account?",
    "Do you sell gift cards, and can they be used online?",
)


def question(index: int) -> tuple[str, str]:
    """The ``index``-th question and its unique marker (never mistaken for an order id)."""
    marker = f"bm{index:05d}q"
    pool = ORDER_QUESTIONS if index % 2 == 0 else PLAIN_QUESTIONS
    return f"{pool[(index // 2) % len(pool)]} (ref {marker})", marker


class TimedKimi(FakeKimi):
    """The fake Kimi, stamping each chat completion's start and end per event marker."""

    def __init__(self, api_key: str) -> None:
        super().__init__(api_key=api_key)
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await super()._chat(request)
        finally:
            found = MARKER_BYTES_RE.search(await request.read())
            if found:
                self.spans[found.group().decode()].append((started, time.perf_counter()))


class CardWatch:
    """Hooks the fake Slack's ``chat.postMessage`` handler to stamp the arrival of each card."""

    def __init__(self, slack: FakeSlack) -> None:
        self.arrivals: dict[str, float] = {}
        self.posts: Counter[str] = Counter()  # cards posted per marker (more than 1: a duplicate card)
        self._waiters: dict[str, asyncio.Event] = {}
        original = slack.handlers["chat.postMessage"]

        def hook(params: dict[str, Any]) -> dict[str, Any]:
            now = time.perf_counter()
            result = original(params)
            if params.get("channel") == REVIEW_CHANNEL and params.get("blocks"):
                for marker in set(MARKER_RE.findall(json.dumps(params["blocks"]))):
                    self.arrivals.setdefault(marker, now)
                    self.posts[marker] += 1
                    waiter = self._waiters.get(marker)
                    if waiter is not None:
                        waiter.set()
            return result

        slack.handlers["chat.postMessage"] = hook

    def expect(self, marker: str) -> asyncio.Event:
        waiter = self._waiters.setdefault(marker, asyncio.Event())
        if marker in self.arrivals:
            waiter.set()
        return waiter


class PeakRss(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                rss = int(self.process.memory_info().rss)
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)


@dataclass
class Sample:
    marker: str
    sent: float
    acked: float
    status: int
    card: float | None

    @property
    def ack(self) -> float:
        return self.acked - self.sent

    @property
    def to_card(self) -> float:
        return math.nan if self.card is None else self.card - self.sent


def customer(index: int) -> str:
    """Each question comes from a customer of its own: the load is many customers, never one
    sender's flood (which intake's fairness buckets would rightly slow down)."""
    return f"UC{index:05d}"


def write_bench_policy(tmp: Path) -> Path:
    """The built-in policy, but no workspace bucket: the whole load comes from one workspace, far
    past its default 600 messages a minute, as a large customer's busy hour would (whose operator
    raises that limit)."""
    path = tmp / "bench-policy.toml"
    path.write_text("[fairness]\nworkspace_messages_per_minute = 0\n", encoding="utf-8")
    return path


def bot_environment(tmp: Path, kimi: FakeKimi, slack: FakeSlack, port: int) -> dict[str, str]:
    """Only what the bot needs (no inherited SLACK_/DISCORD_/KIMI_ variables, no secrets dir)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    (tmp / "no-secrets").mkdir(exist_ok=True)
    env |= {
        "MOONSHOT_API_KEY": KIMI_KEY,
        "KIMI_BASE_URL": kimi.base_url,
        "KIMI_TIMEOUT_SECONDS": "20",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        "POLICY_FILE": str(write_bench_policy(tmp)),
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        **(
            {"SLACK_APP_TOKEN": slack.app_token}
            if isinstance(slack, SocketModeSlack)
            else {"SLACK_SIGNING_SECRET": SIGNING_SECRET}
        ),
        "SLACK_API_URL": slack.base_url,
        "SLACK_REVIEW_CHANNEL": REVIEW_CHANNEL,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "SUPPORTBOT_SECRETS_DIR": str(tmp / "no-secrets"),
        "PYTHONUNBUFFERED": "1",
        # The fake Kimi has no account limits: measure the bot, not the account limiter (whose
        # tier-1 defaults would cap this load at 180 requests a minute).
        "KIMI_RPM": "1000000",
        "KIMI_TPM": "1000000000",
        "KIMI_MAX_CONCURRENCY": "1000",
    }
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot.cli", *args]


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until ``GET /healthz`` answers 200; raises if the bot exits or the timeout passes."""
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.perf_counter() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"the bot exited with status {proc.returncode} before it was healthy")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return time.perf_counter() - started
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the bot was not healthy within {timeout:.0f} s")


async def send_one(
    client: httpx.AsyncClient, url: str, slack: FakeSlack, watch: CardWatch, index: int, timeout: float
) -> Sample:
    text, marker = question(index)
    envelope = app_mention(f"<@UBOT> {text}", user=customer(index))
    arrived = watch.expect(marker)
    sent = time.perf_counter()
    if isinstance(slack, SocketModeSlack):
        status = await deliver_over_socket(slack, envelope)
    else:
        status = await post_signed(client, url, slack, envelope)
    acked = time.perf_counter()
    if status == 200:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), timeout)
    return Sample(marker, sent, acked, status, watch.arrivals.get(marker))


async def post_signed(
    client: httpx.AsyncClient,
    url: str,
    slack: FakeSlack,
    envelope: dict[str, Any],
    extensions: dict[str, Any] | None = None,
) -> int:
    """HTTP mode: POST the signed event; the ack is the response (0: no answer). ``extensions``
    go to httpx (e.g. a ``trace`` callback)."""
    slack.ingest_event(envelope)  # as SlackSender(mirror_to=...) does: the fake knows the message
    body = event_body(envelope)
    headers = sign(body, SIGNING_SECRET, content_type="application/json")
    try:
        response = await client.post(url, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError:
        return 0
    return response.status_code


async def deliver_over_socket(slack: SocketModeSlack, envelope: dict[str, Any]) -> int:
    """Socket Mode: send the envelope on the socket; the ack is the bot's reply on it (200, else 0)."""
    envelope_id = await slack.send_event(envelope)  # mirrors the message into the fake, too
    try:
        await slack.wait_ack(envelope_id, timeout=10.0)
    except AssertionError:
        return 0
    return 200


async def run_load(
    url: str,
    slack: FakeSlack,
    watch: CardWatch,
    first: int,
    n: int,
    concurrency: int,
    card_timeout: float,
    samples: list[Sample],
) -> None:
    """Send events ``first .. first+n-1`` with ``concurrency`` closed-loop workers into ``samples``."""
    indexes = iter(range(first, first + n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:

        async def worker() -> None:
            for index in indexes:
                samples.append(await send_one(client, url, slack, watch, index, card_timeout))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def import_sample_orders(tmp: Path, env: dict[str, str]) -> None:
    """Load the harness's sample orders into the bot's database with ``supportbot orders import``."""
    orders = tmp / "orders.jsonl"
    orders.write_text("".join(json.dumps(row) + "\n" for row in sample_orders()))
    imported = await asyncio.to_thread(
        subprocess.run,
        cli("orders", "import", str(orders)),
        env=env,
        cwd=tmp,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if imported.returncode != 0:
        raise RuntimeError(f"orders import failed: {imported.stderr.decode()[-2000:]}")


async def stop_bot(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> tuple[float, str]:
    """SIGTERM, then SIGKILL after ``timeout``; returns the seconds it took and how it ended."""
    started = time.perf_counter()
    if proc.poll() is not None:
        return 0.0, f"already exited ({proc.returncode})"
    proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(proc.wait, timeout)
        how = f"exit {code}"
    except subprocess.TimeoutExpired:
        proc.kill()
        await asyncio.to_thread(proc.wait, 5)
        how = "killed after SIGTERM timeout"
    return time.perf_counter() - started, how


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def bench(args: argparse.Namespace) -> int:
    timed_out = False
    with tempfile.TemporaryDirectory(prefix="supportbot-bench-") as tmpdir:
        tmp = Path(tmpdir)
        kimi = TimedKimi(api_key=KIMI_KEY)
        fake_slack = (
            SocketModeSlack(bot_token=SLACK_TOKEN, app_token="xapp-1-bench")
            if args.socket_mode
            else FakeSlack(bot_token=SLACK_TOKEN)
        )
        async with kimi, fake_slack as slack:
            kimi.latency = args.kimi_latency
            watch = CardWatch(slack)
            port = free_port()
            env = bot_environment(tmp, kimi, slack, port)
            log_path = tmp / "bot.log"
            with log_path.open("wb") as log_file:
                command = cli("run")
                if args.profile:
                    command = [sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve()), *command[1:]]
                proc = subprocess.Popen(command, env=env, cwd=tmp, stdout=log_file, stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            try:
                startup = await wait_healthy(f"{base}/healthz", proc, args.startup_timeout)
                if isinstance(slack, SocketModeSlack):
                    await slack.wait_connected(timeout=args.startup_timeout)
                await import_sample_orders(tmp, env)

                bot_proc = psutil.Process(proc.pid)
                sampler = PeakRss(proc.pid)
                sampler.start()
                url = f"{base}/slack/events"
                deadline = time.perf_counter() + args.deadline  # warm-up and load together
                warm: list[Sample] = []
                await asyncio.wait_for(
                    run_load(url, slack, watch, 0, args.warmup, 1, args.card_timeout, warm), args.deadline
                )
                idle_rss = int(bot_proc.memory_info().rss)
                bot_cpu0, own_cpu0 = cpu_seconds(bot_proc), cpu_seconds(psutil.Process())
                started = time.perf_counter()
                samples: list[Sample] = []
                try:
                    await asyncio.wait_for(
                        run_load(url, slack, watch, args.warmup, args.n, args.concurrency, args.card_timeout, samples),
                        max(1.0, deadline - time.perf_counter()),
                    )
                except TimeoutError:
                    timed_out = True
                wall = time.perf_counter() - started
                bot_cpu, own_cpu = cpu_seconds(bot_proc) - bot_cpu0, cpu_seconds(psutil.Process()) - own_cpu0
                sampler.stop()
                await asyncio.sleep(1.5)  # let in-flight bookkeeping (and any late duplicate card) land
                async with httpx.AsyncClient(timeout=5.0) as client:
                    metrics = (await client.get(f"{base}/metrics")).text
            except BaseException:
                print(f"bot log ({log_path}):\n{log_path.read_text(errors='replace')[-4000:]}", file=sys.stderr)
                raise
            finally:
                shutdown, how = await stop_bot(proc)
            report(args, samples, warm, kimi, watch, wall, sampler.peak, idle_rss, bot_cpu, own_cpu, metrics)
            print(f"\nbot startup to healthy: {startup:.2f} s; shutdown after SIGTERM: {shutdown:.2f} s ({how})")
            problems = log_path.read_text(errors="replace").count("ERROR")
            if problems:
                print(f"the bot logged {problems} ERROR line(s); tail of its log:")
                print(log_path.read_text(errors="replace")[-2000:])
        if timed_out:
            print(f"\nthe load hit the {args.deadline:.0f} s deadline: only {len(samples)} events finished")
        return 0 if not timed_out and all(s.card is not None for s in samples) else 1


def metric(metrics: str, name: str) -> int:
    found = re.search(rf"^supportbot_{name}_total (\d+(?:\.\d+)?)$", metrics, re.MULTILINE)  # prometheus: "3.0"
    return int(float(found.group(1))) if found else 0


def report(
    args: argparse.Namespace,
    samples: Sequence[Sample],
    warm: Sequence[Sample],
    kimi: TimedKimi,
    watch: CardWatch,
    wall: float,
    peak_rss: int,
    idle_rss: int,
    bot_cpu: float,
    own_cpu: float,
    metrics: str,
) -> None:
    done = [s for s in samples if s.card is not None]
    acks = [s.ack for s in samples if s.status == 200]
    to_card = [s.to_card for s in done]
    last_card = max((s.card for s in done if s.card is not None), default=math.nan)
    first_send = min((s.sent for s in samples), default=math.nan)
    span = last_card - first_send if done else math.nan
    overhead, to_kimi, in_kimi, after_kimi, calls = [], [], [], [], []
    for s in done:
        assert s.card is not None
        spans = kimi.spans.get(s.marker, [])
        calls.append(len(spans))
        overhead.append(s.to_card - args.kimi_latency * len(spans))
        if spans:
            to_kimi.append(spans[0][0] - s.sent)
            in_kimi.append(spans[-1][1] - spans[0][0])
            after_kimi.append(s.card - spans[-1][1])
    warm_cards = [s.to_card for s in warm if s.card is not None]

    print(
        f"## Slack throughput ({'Socket Mode' if args.socket_mode else 'HTTP mode'}): N={len(samples)} events, "
        f"concurrency {args.concurrency}, "
        f"fake Kimi latency {args.kimi_latency * 1000:.0f} ms, warm-up {len(warm)} (excluded)\n"
    )
    rows: list[list[object]] = [
        ["ack latency p50 / p99 (ms)", f"{fmt_ms(median(acks))} / {fmt_ms(percentile(acks, 99))}"],
        ["event-to-card p50 / p99 (ms)", f"{fmt_ms(median(to_card))} / {fmt_ms(percentile(to_card, 99))}"],
        ["cards per second", f"{len(done) / span:.1f}" if done else "n/a"],
        ["bot overhead p50 (ms)", fmt_ms(median(overhead))],
        ["bot peak RSS (MiB)", f"{peak_rss / 2**20:.1f} (after warm-up, idle: {idle_rss / 2**20:.1f})"],
        ["cards received / events sent", f"{len(done)} / {len(samples)}"],
        ["non-200 acks", str(sum(1 for s in samples if s.status != 200))],
        ["events whose card was posted more than once", str(sum(1 for count in watch.posts.values() if count > 1))],
    ]
    print(markdown_table(["figure", "value"], rows))

    print("\n### Where the event-to-card time goes (p50 / p99 ms)\n")
    split: list[list[object]] = [
        ["event POST -> first Kimi request", f"{fmt_ms(median(to_kimi))} / {fmt_ms(percentile(to_kimi, 99))}"],
        [
            "first Kimi request -> last Kimi answer",
            f"{fmt_ms(median(in_kimi))} / {fmt_ms(percentile(in_kimi, 99))}",
        ],
        ["last Kimi answer -> card at Slack", f"{fmt_ms(median(after_kimi))} / {fmt_ms(percentile(after_kimi, 99))}"],
        ["Kimi calls per event (mean)", f"{sum(calls) / len(calls):.2f}" if calls else "n/a"],
        ["peak concurrent Kimi calls seen by the fake", str(kimi.limits.max_in_flight)],
        [
            "bot CPU during the load (s, % of one core)",
            f"{bot_cpu:.1f} s, {100 * bot_cpu / wall:.0f} %" if wall else "n/a",
        ],
        ["bot CPU per card (ms)", f"{1000 * bot_cpu / len(done):.1f}" if done else "n/a"],
        ["bench process CPU (fakes + load), % of one core", f"{100 * own_cpu / wall:.0f} %" if wall else "n/a"],
        ["warm-up event-to-card p50 (ms, sequential)", fmt_ms(median(warm_cards))],
    ]
    print(markdown_table(["phase", "value"], split))
    wanted = ("events_received", "drafts_ready", "drafts_failed", "cards_posted")
    print("\nbot /metrics: " + ", ".join(f"{name}={metric(metrics, name)}" for name in wanted))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300, help="events to send (default 300)")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent senders K (default 20)")
    parser.add_argument("--kimi-latency", type=float, default=0.0, help="fake Kimi answer latency, seconds")
    parser.add_argument("--warmup", type=int, default=10, help="sequential warm-up events, not counted")
    parser.add_argument("--card-timeout", type=float, default=30.0, help="seconds to wait for one card")
    parser.add_argument(
        "--deadline", type=float, default=75.0, help="seconds the warm-up and the load may take together"
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="run the bot under cProfile and write the stats to FILE (slower)"
    )
    parser.add_argument("--startup-timeout", type=float, default=20.0, help="seconds to wait for /healthz")
    parser.add_argument("--socket-mode", action="store_true", help="deliver the events over Socket Mode")
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--n and --concurrency must be positive, --warmup not negative")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
