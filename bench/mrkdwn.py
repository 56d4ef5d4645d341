"""Markdown → Slack mrkdwn on pathological inputs (issue 17): milliseconds per size, ours against
markdown-to-mrkdwn (the library used before) when it is installed; and, at the largest size, the
two other passes every draft goes through: the verification pass's link check and the Discord
desk's escaping.

Each input repeats one pattern that makes a backtracking regex rescan the rest of the line (an
unclosed link ``[a](``, an image, brackets, emphasis that never closes, many short lines, many
tables, unclosed fences, a heading with a long run of blanks) up to the size, plus an ordinary
reply. The library is run only at the smallest sizes, under a per-call time limit: at 3,000
characters it already takes seconds.

    python -m bench.mrkdwn [--sizes 3000,10000,40000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable

from adapters.discord.markup import literal
from adapters.slack.mrkdwn import to_mrkdwn
from bot.verification import link_flags

PATTERNS: dict[str, str] = {
    "ordinary reply": "Hi **Kim**, your order `#W1` shipped: [track it](https://ups.example/t?n=1).\n- a\n- b\n\n",
    "unclosed link [a](": "[a](",
    "unclosed image ![a](": "![a](",
    "brackets [[[": "[",
    "emphasis **a": "**a ",
    "strike-bold ~**a": " ~**a",
    "short lines": "a\n",
    "tables": "|a|\n|-|\n\n",
    "unclosed fences": "```a\n",
    "heading blanks": "# a" + " " * 200 + "b\n",
    "%% markers": "%%BOLDITALIC_START%%",
}
LIBRARY_LIMIT_SECONDS = 5.0


def _sample(pattern: str, size: int) -> str:
    return (pattern * (size // len(pattern) + 1))[:size]


def _ms(convert: Callable[[str], str], text: str) -> float:
    started = time.perf_counter()
    convert(text)
    return (time.perf_counter() - started) * 1000


def _library_ms(text: str) -> float:
    from markdown_to_mrkdwn import SlackMarkdownConverter

    return _ms(SlackMarkdownConverter().convert, text)


def _library_bounded(text: str) -> str:
    """The library's time, or '> N s' when it runs past the limit (run in a child process, so
    a runaway regex is killed rather than waited for)."""
    try:
        import markdown_to_mrkdwn  # noqa: F401
    except ImportError:
        return "not installed"
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply_async(_library_ms, (text,))
        try:
            return f"{result.get(LIBRARY_LIMIT_SECONDS):.1f}"
        except multiprocessing.TimeoutError:
            pool.terminate()
            return f"> {LIBRARY_LIMIT_SECONDS:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3000,10000,40000", help="comma-separated input sizes in characters")
    parser.add_argument("--library", action="store_true", help="also time markdown-to-mrkdwn at the smallest size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    largest = max(sizes)
    head = "| input | " + " | ".join(f"{n:,} ch (ms)" for n in sizes) + " |"
    head += f" link check {largest:,} ch (ms) | Discord escape {largest:,} ch (ms) |"
    if args.library:
        head += f" library at {sizes[0]:,} ch (ms) |"
    print(head)
    print("|---" * (len(sizes) + 3 + args.library) + "|")
    for name, pattern in PATTERNS.items():
        row = [f"{min(_ms(to_mrkdwn, _sample(pattern, n)) for _ in range(3)):.1f}" for n in sizes]
        for other in (lambda text: "".join(link_flags(text)), literal):
            row.append(f"{min(_ms(other, _sample(pattern, largest)) for _ in range(3)):.1f}")
        if args.library:
            row.append(_library_bounded(_sample(pattern, sizes[0])))
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
