"""Conversation memory (issue 4): does the prompt stay small and cache-friendly over a long thread?

One 60-turn Slack conversation runs in this process the way the integration harness runs the
bot: the real ``Supportbot`` serving HTTP on 127.0.0.1, a fake Slack and a fake Kimi, SQLite in a
temporary directory, and a policy file whose ``[memory]`` section holds the repository's defaults
(``summarize_after_turns``, ``keep_recent_turns``; override with the flags) and whose sender
bucket is off (``[fairness]``: a customer answering as fast as the desk approves would be paced,
which moves when a draft starts, not what it sends). Turn 1 is an
``app_mention``; turns 2..60 are replies in its thread. Every turn's card is approved (the
``approve_draft`` button) and the turn ends when the reply is in the thread and the card says it
was sent, so the history grows as in a real conversation (customer and support messages).

For each turn it takes the chat-completion requests the bot sent (``FakeKimi.completions``),
tells summarising requests (system message starting "Summarize the earlier part") from drafting
ones, and for the turn's first drafting request computes:

* prompt tokens, with the fake's estimator (one token per 4 bytes) over its serialised prompt:
  canonical JSON of the tools, then of the messages, exactly as the fake prices and caches it
  (``bot.evaluation.simulator.prompt_bytes``: tools first, as Kimi's chat template renders them);
* the prefix share: the byte-identical common prefix of that serialised prompt and the previous
  turn's first drafting prompt, as a share of this prompt's length (what an automatic prefix cache
  can reuse);
* the naive figure: the tokens of the same request with every turn so far verbatim (the system
  prompt, all customer and support messages, the request's newest message, the same tools)
  and no summary, i.e. what a bot without memory management would send;
* the cached tokens the fake reported (256-token blocks matched against every earlier prompt).

It also prints, turn by turn, the cache-hit share of every drafting request of the turn (the
fake's ``cached_tokens`` over its ``prompt_tokens``, cached in 1,024-byte prefix blocks), and the
share over all follow-up turns (issue 10's goal: >= 90 %), where the uncached tokens went, and
what the whole conversation cost by the bot's own usage ledger (``supportbot costs``).

It prints a table for turns 1, 5, 10, 20, ..., 60 and the figures the issue sets goals for:
turn 50 / turn 5 prompt tokens (goal <= 1.3), the naive ratio, the mean prefix share on follow-up
turns without a summary refresh and the median over all follow-up turns (goal >= 80 %).
The run is bounded (``--deadline``, 80 s by default; each wait 10 s).

Run from the repository root::

    python -m bench.memory_prefix [--turns 60]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import markdown_table, median
from bot.app import Supportbot
from bot.evaluation.simulator import estimate_tokens, prompt_bytes
from bot.llm.commands import CostLine, cost_lines
from bot.policy import MemorySection, load_policy
from tests.fakes.kimi import FakeKimi
from tests.fakes.slack import FakeSlack
from tests.harness import KIMI_KEY, SLACK_TOKEN, Harness, draft_id_of, settings_for

SUMMARY_PREFIX = "Summarize the earlier part"
SUMMARY_HEADS = ("Summary of the earlier conversation:", "Summary, continued:")
SUMMARY_WORDS = 120  # what bot.prompt.SUMMARY_INSTRUCTIONS asks the model for
SEGMENT_WORDS = 60  # and bot.prompt.CONTINUE_INSTRUCTIONS for an appended segment
SHOWN_TURNS = (1, 5, 10, 20, 30, 40, 50, 60)

#: What the customer writes, in order (cycled). Some lines name an order: the fake model then calls
#: ``get_order_status`` and the reply quotes the tool's result, as a real one would.
SCRIPT = (
    "Hi, I ordered a blue mug set last week and I'm wondering where it is. Order #W2611340.",
    "Thanks. The tracking page hasn't changed for two days, is that normal?",
    "OK. It's a birthday present, the party is on Saturday. Will it make it in time?",
    "Could you ask the carrier to deliver it to my office instead? I'm not home during the day.",
    "The office address is 12 Harbour Street, 3rd floor, reception desk.",
    "Also, can I still add gift wrapping to the order or is it too late for that?",
    "Never mind the wrapping. Can you check order #W2611340 again, has it moved at all?",
    "Right. If it doesn't arrive by Friday, what are my options?",
    "I'd rather not cancel. Would you be able to refund the shipping cost if it's late?",
    "My sister also ordered from you, order 40021, a desk chair. She says it arrived damaged.",
    "She sent photos to your email yesterday but nobody answered. Who should she talk to?",
    "Is a replacement possible, or only a refund? She'd prefer a replacement.",
    "How long do replacements usually take to ship?",
    "Please look up order 40021 and tell me when it was delivered exactly.",
    "OK, so it's within the return window then, right?",
    "Great. Does she need to keep the original box for the return pickup?",
    "Back to my mug: the tracking now says 'out for delivery'. Thanks for your patience!",
    "One more question: do you have the same mug in green? I'd like to order two more.",
    "And do you offer a discount for orders of more than three items?",
    "Perfect, thank you so much for all the help today.",
)


def is_summary(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    first = messages[0] if messages else {}
    return first.get("role") == "system" and str(first.get("content", "")).startswith(SUMMARY_PREFIX)


@dataclass
class TurnFigures:
    turn: int
    drafting_requests: int
    summary_requests: int
    tokens: int
    naive_tokens: int
    prefix_share: float  # NaN on turn 1
    cached_tokens: int
    all_prompt_tokens: int  # every request of the turn, drafting and summarising
    summary_tokens: int  # the rolling summary inside the drafting prompt
    capped_tokens: int  # the prompt tokens had the summary kept to SUMMARY_WORDS words
    drafting_prompt_tokens: int  # every drafting request of the turn (first and tool follow-ups)
    drafting_cached_tokens: int  # what the fake served from its cache (1,024-byte prefix blocks)
    summary_prompt_tokens: int
    summary_cached_tokens: int
    uncached: dict[str, float]  # drafting requests' uncached tokens by cause (see uncached_parts)
    stable_tokens: int = 0  # the system prompt and the tool definitions (the policy's share)


def cached_tokens_of(kimi: FakeKimi, body: dict[str, Any]) -> int:
    for record in kimi.requests:
        if record.body is body and isinstance(record.response, dict):
            return int((record.response.get("usage") or {}).get("cached_tokens") or 0)
    return 0


def summary_parts(messages: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """The summary's segments in the prompt: (message index, heading, segment text)."""
    parts = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "system" or not isinstance(content, str):
            continue
        for head in SUMMARY_HEADS:
            if content.startswith(head):
                parts.append((index, head, content[len(head) :].strip()))
    return parts


def summary_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(text for _, _, text in summary_parts(messages))


def capped_summary_tokens(kimi: FakeKimi, request: dict[str, Any]) -> int:
    """The request's tokens had its summary been no longer than the instructions ask.

    The fake model "summarises" by echoing its input (cut at the request's max_tokens), so its
    summaries grow far past the words a real model is told to write; this figure shows what the
    bot's layout costs with a summary of the requested size (120 words, appended segments 60).
    """
    messages = [dict(m) for m in request["messages"]]
    for n, (index, head, text) in enumerate(summary_parts(messages)):
        words = text.split()
        limit = SUMMARY_WORDS if n == 0 else SEGMENT_WORDS
        if len(words) > limit:
            messages[index]["content"] = head + "\n" + " ".join(words[:limit])
    return kimi.prompt_tokens_for(messages, request.get("tools"))


def naive_tokens(kimi: FakeKimi, request: dict[str, Any], history: list[tuple[str, str]]) -> int:
    """The request's tokens with every turn so far verbatim and no summary or facts."""
    messages = request["messages"]
    naive = [messages[0]]
    naive += [{"role": role, "content": text} for role, text in history]
    naive.append(messages[-1])
    return kimi.prompt_tokens_for(naive, request.get("tools"))


def common_prefix(a: bytes, b: bytes) -> int:
    """The length of the byte-identical prefix of ``a`` and ``b`` (a binary search on slices)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


def uncached_parts(earlier: Sequence[bytes], request: dict[str, Any], new_from: int, cached: int) -> dict[str, float]:
    """Why a drafting request's tokens were not served from the cache, in tokens by cause.

    ``rounding``: matched bytes lost in the partial 1,024-byte block where the match with the
    best earlier prompt ends; ``new``: messages that did not exist before this request (from
    index ``new_from``: the approved reply and the new message, or a tool call and its results);
    ``tail``: a closing system message after the newest customer message (facts, date, an
    instruction; the bot sends one only when something changed); ``relaid``: anything else past the match,
    content an earlier prompt had but not at this position (a summary refresh re-lays the turns).
    """
    messages, tools = request["messages"], request.get("tools")
    prompt = prompt_bytes(messages, tools)
    best = max((common_prefix(e, prompt) for e in earlier), default=0)
    ends = [len(prompt_bytes(messages[: k + 1], tools)) - 1 for k in range(len(messages))]
    last_user = max((k for k, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    closing = messages[last_user + 1] if last_user + 1 < len(messages) else {}
    tail = last_user + 1 if closing.get("role") == "system" else -1
    parts = {"rounding": best / 4 - cached, "new": 0.0, "tail": 0.0, "relaid": 0.0}
    start = len(prompt_bytes([], tools)) - 1
    for k, end in enumerate(ends):
        missed = max(0, end - max(start, best)) / 4
        parts["tail" if k == tail else "new" if k >= new_from else "relaid"] += missed
        start = end
    parts["relaid"] += max(0, len(prompt) - max(start, best)) / 4
    return parts


async def converse(
    args: argparse.Namespace, tmp: Path
) -> tuple[list[TurnFigures], MemorySection, float, list[CostLine]]:
    memory = MemorySection()
    after = args.summarize_after or memory.summarize_after_turns
    keep = args.keep_recent or memory.keep_recent_turns
    own = args.policy.read_text(encoding="utf-8") if args.policy else ""
    sections = tomllib.loads(own)
    if "memory" in sections:
        if args.summarize_after or args.keep_recent:
            raise SystemExit(f"{args.policy} has a [memory] section: edit it instead of passing the flags")
    else:
        own += f"\n[memory]\nsummarize_after_turns = {after}\nkeep_recent_turns = {keep}\n"
    if "fairness" not in sections:
        # One customer answering as fast as the desk approves: 60 messages in a minute or two, which
        # intake's sender bucket rightly paces (a draft every 5 s past the burst). Pacing changes
        # when a draft starts, not what its prompt holds, so the bench measures without it.
        own += "\n[fairness]\nsender_messages_per_minute = 0\n"
    (tmp / "policy.toml").write_text(own)
    effective = load_policy(tmp / "policy.toml").memory

    figures: list[TurnFigures] = []
    async with FakeKimi(api_key=KIMI_KEY) as kimi, FakeSlack(bot_token=SLACK_TOKEN) as slack:
        bot = Supportbot(settings_for(tmp, kimi, slack))
        await bot.start()
        harness = Harness(bot, slack, kimi, tmp)
        await harness.import_orders()
        started = time.perf_counter()
        try:
            history: list[tuple[str, str]] = []  # (role, text) as the model sees them
            previous: bytes | None = None
            root_ts = ""
            for turn in range(1, args.turns + 1):
                text = SCRIPT[(turn - 1) % len(SCRIPT)]
                before = len(kimi.completions)
                if turn == 1:
                    envelope = await harness.mention(text)
                    root_ts = envelope["event"]["ts"]
                else:
                    await harness.reply_in_thread(text, root_ts)
                history.append(("user", text))
                card = (await harness.wait_cards(turn, timeout=10))[turn - 1]
                draft_id = draft_id_of(card)
                await harness.click("approve_draft", draft_id)
                reply = (await harness.wait_replies(root_ts, turn, timeout=10))[turn - 1]
                await harness.wait_card_update(draft_id, "sent to the customer", timeout=10)
                history.append(("assistant", str(reply.params["text"])))

                requests = kimi.completions[before:]
                drafting = [body for body in requests if not is_summary(body)]
                if not drafting:
                    raise RuntimeError(f"turn {turn}: the bot sent no drafting request")
                first = drafting[0]
                uncached: dict[str, float] = {}
                if turn > 1:
                    for n, body in enumerate(drafting):
                        at = kimi.completions.index(body)
                        earlier = [prompt_bytes(b["messages"], b.get("tools")) for b in kimi.completions[:at]]
                        messages = body["messages"]
                        # The first request's new messages: what follows the previous customer message
                        # (a fact note, the reply approved last turn, the new message); a tool
                        # follow-up's: what it appended to the request before it.
                        users = [k for k, m in enumerate(messages) if m.get("role") == "user"]
                        new_from = len(drafting[n - 1]["messages"]) if n else (users[-2] + 1 if len(users) > 1 else 0)
                        for cause, tokens in uncached_parts(
                            earlier, body, new_from, cached_tokens_of(kimi, body)
                        ).items():
                            uncached[cause] = uncached.get(cause, 0.0) + tokens
                prompt = prompt_bytes(first["messages"], first.get("tools"))
                share = math.nan if previous is None else common_prefix(previous, prompt) / len(prompt)
                previous = prompt
                summary = summary_text(first["messages"])
                figures.append(
                    TurnFigures(
                        turn=turn,
                        drafting_requests=len(drafting),
                        summary_requests=len(requests) - len(drafting),
                        tokens=kimi.prompt_tokens_for(first["messages"], first.get("tools")),
                        naive_tokens=naive_tokens(kimi, first, history[:-1]),
                        prefix_share=share,
                        cached_tokens=cached_tokens_of(kimi, first),
                        all_prompt_tokens=sum(kimi.prompt_tokens_for(b["messages"], b.get("tools")) for b in requests),
                        summary_tokens=estimate_tokens(summary) if summary else 0,
                        capped_tokens=capped_summary_tokens(kimi, first),
                        drafting_prompt_tokens=sum(
                            kimi.prompt_tokens_for(b["messages"], b.get("tools")) for b in drafting
                        ),
                        drafting_cached_tokens=sum(cached_tokens_of(kimi, b) for b in drafting),
                        summary_prompt_tokens=sum(
                            kimi.prompt_tokens_for(b["messages"], b.get("tools")) for b in requests if is_summary(b)
                        ),
                        summary_cached_tokens=sum(cached_tokens_of(kimi, b) for b in requests if is_summary(b)),
                        uncached=uncached,
                        stable_tokens=kimi.prompt_tokens_for(first["messages"][:1], first.get("tools")),
                    )
                )
            costs = await cost_lines(bot.engine, days=1)  # the bot's own usage ledger, priced as in production
        finally:
            elapsed = time.perf_counter() - started
            await bot.stop()
    return figures, effective, elapsed, costs


def ratio(figures: Sequence[TurnFigures], a: int, b: int, field: str = "tokens") -> float:
    by_turn = {f.turn: f for f in figures}
    if a not in by_turn or b not in by_turn:
        return math.nan
    return float(getattr(by_turn[a], field)) / float(getattr(by_turn[b], field))


def pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f} %"


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def goal(ok: bool, text: str) -> str:
    return f"{text} ({'met' if ok else 'NOT met'})"


def report(
    figures: Sequence[TurnFigures],
    memory: MemorySection,
    elapsed: float,
    costs: Sequence[CostLine],
    policy: Path | None = None,
) -> None:
    refreshes = [f.turn for f in figures if f.summary_requests]
    print(
        f"## Memory and prefix cache: {len(figures)} turns, [memory] summarize_after_turns = "
        f"{memory.summarize_after_turns}, keep_recent_turns = {memory.keep_recent_turns} "
        "(counted in stored messages: customer and support)\n"
    )
    print(
        f"Policy: {policy or 'the built-in defaults'}; system prompt and tool definitions "
        f"{figures[0].stable_tokens} tokens.\n"
    )
    headers = [
        "turn",
        "prompt tokens",
        "naive tokens",
        "prefix share",
        "cached (fake)",
        "summary tokens",
        f"tokens, {SUMMARY_WORDS}-word summary",
        "summary refresh",
    ]
    rows = [
        [
            f.turn,
            f.tokens,
            f.naive_tokens,
            pct(f.prefix_share),
            f.cached_tokens,
            f.summary_tokens,
            f.capped_tokens,
            "yes" if f.summary_requests else "",
        ]
        for f in figures
        if f.turn in SHOWN_TURNS
    ]
    print(markdown_table(headers, rows))

    print("\n### Cache-hit share turn by turn (drafting requests; the fake caches 1,024-byte prefix blocks)\n")
    print(
        markdown_table(
            ["turn", "requests", "prompt tokens", "cached", "cache-hit share", "summary refresh"],
            [
                [
                    f.turn,
                    f.drafting_requests,
                    f.drafting_prompt_tokens,
                    f.drafting_cached_tokens,
                    pct(f.drafting_cached_tokens / f.drafting_prompt_tokens if f.drafting_prompt_tokens else math.nan),
                    "yes" if f.summary_requests else "",
                ]
                for f in figures
            ],
        )
    )

    follow = [f for f in figures if f.turn > 1]
    report_uncached(follow)
    hit_share = sum(f.drafting_cached_tokens for f in follow) / max(1, sum(f.drafting_prompt_tokens for f in follow))
    hit_share_all = sum(f.drafting_cached_tokens + f.summary_cached_tokens for f in follow) / max(
        1, sum(f.drafting_prompt_tokens + f.summary_prompt_tokens for f in follow)
    )
    steady = [f.prefix_share for f in follow if not f.summary_requests]
    refreshed = [f.prefix_share for f in follow if f.summary_requests]
    share_median = median([f.prefix_share for f in follow])
    growth = ratio(figures, 50, 5)
    first_total = sum(f.tokens for f in figures)
    naive_total = sum(f.naive_tokens for f in figures)
    all_total = sum(f.all_prompt_tokens for f in figures)
    print()
    print(
        markdown_table(
            ["figure", "value", "goal"],
            [
                ["turn 50 / turn 5 prompt tokens", f"{growth:.2f}", goal(growth <= 1.3, "<= 1.3")],
                [
                    "largest / smallest first drafting prompt, turns 5..",
                    f"{max(f.tokens for f in figures[4:]) / min(f.tokens for f in figures[4:]):.2f}"
                    if len(figures) > 4
                    else "-",
                    "",
                ],
                ["naive turn 50 / turn 5", f"{ratio(figures, 50, 5, 'naive_tokens'):.2f}", ""],
                [
                    f"turn 50 / turn 5 with a {SUMMARY_WORDS}-word summary",
                    f"{ratio(figures, 50, 5, 'capped_tokens'):.2f}",
                    "",
                ],
                [
                    "mean prefix share, follow-ups without a summary refresh",
                    pct(mean(steady)),
                    "",
                ],
                [
                    "mean prefix share, follow-ups with a summary refresh",
                    pct(mean(refreshed)),
                    "",
                ],
                ["mean prefix share, all follow-ups", pct(mean([f.prefix_share for f in follow])), ""],
                ["median prefix share, all follow-ups", pct(share_median), goal(share_median >= 0.8, ">= 80 %")],
                [
                    "cache-hit share of follow-up drafting prompt tokens (turns 2..)",
                    pct(hit_share),
                    goal(hit_share >= 0.9, ">= 90 %"),
                ],
                ["the same, summarising requests included", pct(hit_share_all), ""],
                ["summary refreshes", f"{len(refreshes)} (turns {', '.join(map(str, refreshes))})", ""],
                [
                    "first drafting prompts, all turns (tokens)",
                    f"{first_total} vs naive {naive_total} ({100 * first_total / naive_total:.0f} %)",
                    "",
                ],
                ["every request incl. tool follow-ups and summaries (tokens)", str(all_total), ""],
                [
                    "cost of the conversation, every call (the bot's usage ledger)",
                    f"{sum(c.cost_microusd for c in costs) / 1e6:.4f} USD, "
                    f"{sum(c.cached_tokens for c in costs) / max(1, sum(c.prompt_tokens for c in costs)):.1%} "
                    "of prompt tokens cached",
                    "",
                ],
                ["wall time of the conversation", f"{elapsed:.1f} s", ""],
            ],
        )
    )


def report_uncached(follow: Sequence[TurnFigures]) -> None:
    total = sum(f.drafting_prompt_tokens for f in follow) or 1
    cached = sum(f.drafting_cached_tokens for f in follow)
    part = {cause: sum(f.uncached.get(cause, 0.0) for f in follow) for cause in ("rounding", "new", "tail", "relaid")}
    print("\n### Where the follow-up drafting prompt tokens went (turns 2..)\n")
    print(
        markdown_table(
            ["part", "tokens", "share"],
            [
                ["served from the cache", cached, pct(cached / total)],
                [
                    "block rounding: matched, but in the partial 1,024-byte block",
                    round(part["rounding"]),
                    pct(part["rounding"] / total),
                ],
                [
                    "new text: the approved reply and the new message; tool calls and results",
                    round(part["new"]),
                    pct(part["new"] / total),
                ],
                [
                    "closing note: facts, date, instruction (sent only when changed)",
                    round(part["tail"]),
                    pct(part["tail"] / total),
                ],
                [
                    "re-laid: earlier content at a new position (summary refreshes)",
                    round(part["relaid"]),
                    pct(part["relaid"] / total),
                ],
                [
                    "ceiling for any layout at these prompt sizes (100 % - rounding - new text)",
                    "",
                    pct(1 - (part["rounding"] + part["new"]) / total),
                ],
            ],
        )
    )


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="supportbot-bench-") as tmpdir:
        figures, memory, elapsed, costs = await asyncio.wait_for(converse(args, Path(tmpdir)), args.deadline)
    report(figures, memory, elapsed, costs, args.policy)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=60, help="customer turns (default 60)")
    parser.add_argument("--summarize-after", type=int, default=0, help="[memory] summarize_after_turns")
    parser.add_argument("--keep-recent", type=int, default=0, help="[memory] keep_recent_turns")
    parser.add_argument("--deadline", type=float, default=80.0, help="seconds the whole run may take")
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="measure with this policy file (e.g. bench/storefront_policy.toml, or your own); "
        "its [memory] section, if any, replaces the flags",
    )
    args = parser.parse_args(argv)
    if args.turns < 1:
        parser.error("--turns must be positive")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
