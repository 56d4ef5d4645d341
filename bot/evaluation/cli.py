"""``supportbot eval CASES.jsonl``, ``supportbot eval compare A.json B.json`` and ``supportbot eval export``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import SupportbotError
from bot.insight.cli import parse_window

if TYPE_CHECKING:  # the command line imports the runner only when ``eval`` runs (supportbot --help stays light)
    from bot.evaluation.scoring import TrialResult

__all__ = ["register"]


class _Progress:
    """A progress bar on stderr (one line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.passed = 0
        self.violations = 0
        self.tty = sys.stderr.isatty()
        self._shown = -1

    def __call__(self, result: TrialResult) -> None:
        self.done += 1
        self.passed += int(result.passed)
        self.violations += len(result.violations)
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} trials, "
            f"{self.passed} passed, {self.violations} violations"
        )
        if self.tty:
            print("\r" + line, end="" if self.done < self.total else "\n", file=sys.stderr, flush=True)
        elif self.done * 10 // max(self.total, 1) != self._shown:
            self._shown = self.done * 10 // max(self.total, 1)
            print(line, file=sys.stderr, flush=True)


def _base_policy(args: argparse.Namespace, cases_path: Path) -> tuple[dict[str, Any], Path, str]:
    from bot.policy import parse_policy

    path = Path(args.policy) if args.policy else cases_path.parent / "policy.toml"
    if not path.exists():
        if args.policy:
            raise SupportbotError(f"no policy file {path}")
        return {}, cases_path.parent, "(built-in defaults)"
    text = path.read_text(encoding="utf-8")
    version = parse_policy(text, str(path)).version
    return tomllib.loads(text), path.parent, f"{path} ({version})"


def _run(args: argparse.Namespace) -> int:
    from bot.evaluation.cases import CaseError, load_cases
    from bot.evaluation.report import compare, render_compare, render_failures, render_table, summarize
    from bot.evaluation.runner import EvalConfig, Runner
    from bot.evaluation.simulator import MODELS

    if args.cases == "export":
        from bot.evaluation.export_cli import export

        return export(args)
    if args.since is not None or args.out is not None:
        raise SupportbotError("--since and --out belong to: supportbot eval export [--since 30d] [--out DIR]")
    if args.cases == "compare":
        if len(args.extra) != 2:
            raise SupportbotError("usage: supportbot eval compare A.json B.json")
        try:
            first, second = (json.loads(Path(p).read_text(encoding="utf-8")) for p in args.extra)
        except (OSError, ValueError) as exc:
            raise SupportbotError(f"cannot read a run's JSON: {exc}") from None
        print(render_compare(compare(first, second)))
        return 0
    if args.extra:
        raise SupportbotError(f"unexpected arguments: {' '.join(args.extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, stream=sys.stderr)
    cases_path = Path(args.cases)
    try:
        cases = load_cases(cases_path)
    except CaseError as exc:
        raise SupportbotError(f"{cases_path}: invalid cases:\n  " + "\n  ".join(exc.problems)) from None
    except OSError as exc:
        raise SupportbotError(f"cannot read {cases_path}: {exc.strerror}") from None
    if args.only:
        wanted = {c.strip() for c in args.only.split(",")}
        cases = [c for c in cases if c.category in wanted]
        if not cases:
            raise SupportbotError(f"no case has category {args.only!r}")
    if args.k < 1:
        raise SupportbotError("-k must be at least 1")
    base, base_dir, policy_name = _base_policy(args, cases_path)
    settings = None
    if args.model not in MODELS or (args.simulator and args.simulator not in MODELS):
        from bot.settings import load_settings

        settings = load_settings()
        if settings.moonshot_api_key is None:
            raise SupportbotError(f"--model {args.model} needs MOONSHOT_API_KEY (and KIMI_BASE_URL)")
    config = EvalConfig(
        cases_dir=cases_path.parent,
        base_policy=base,
        base_policy_dir=base_dir,
        model=args.model,
        k=args.k,
        simulator=args.simulator,
        concurrency=args.concurrency,
        step_timeout=args.timeout,
        settings=settings,
    )
    started = time.perf_counter()
    progress = _Progress(len(cases) * args.k) if not args.quiet else None
    results = asyncio.run(Runner(config, progress).run(cases))
    run = {
        "cases_file": str(cases_path),
        "model": args.model,
        "simulator": args.simulator,
        "policy": policy_name,
        "only": args.only,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    document = summarize(results, args.k, run)
    print(f"supportbot eval: {len(cases)} cases × {args.k} trials, model {args.model}, policy {policy_name}")
    print(render_table(document))
    details = render_failures(document)
    if details:
        print()
        print(details)
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    overall = document["summary"]["overall"]
    status = 0
    if args.min_pass is not None and overall["pass_hat_k"][0] < args.min_pass:
        print(f"pass^1 {overall['pass_hat_k'][0]:.3f} is below --min-pass {args.min_pass}", file=sys.stderr)
        status = 1
    if args.max_violations is not None and overall["violations"] > args.max_violations:
        print(f"{overall['violations']} policy violations (--max-violations {args.max_violations})", file=sys.stderr)
        status = 1
    return status


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``eval`` to the ``supportbot`` command line."""
    parser = commands.add_parser(
        "eval",
        help="measure drafts and policy safety on a case suite (pass^k); or: eval compare A.json B.json;"
        " or: eval export [--since 30d] [--out DIR]",
        description="Run evaluation cases through the real core, k trials each, and print pass^1..pass^k, "
        "policy violations, model calls, tokens and cost per category.",
    )
    parser.add_argument("cases", help="a JSON Lines cases file (see evals/README.md), or 'compare', or 'export'")
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("-k", type=int, default=1, help="trials per case (pass^1 .. pass^k); default 1")
    parser.add_argument(
        "--model", default="scripted", help="a model id on KIMI_BASE_URL, or 'scripted' (the default) or 'rulebreaker'"
    )
    parser.add_argument("--simulator", help="a model that plays the customer from each case's simulated_customer")
    parser.add_argument("--policy", help="the base policy (default: policy.toml next to the cases file)")
    parser.add_argument("--only", help="run only these categories (comma-separated)")
    parser.add_argument("--json", help="write the full results as JSON to this file")
    parser.add_argument("--min-pass", type=float, help="exit 1 when overall pass^1 is below this")
    parser.add_argument("--max-violations", type=int, help="exit 1 when there are more policy violations than this")
    parser.add_argument("--concurrency", type=int, default=4, help="trials run at the same time (default 4)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each draft or reply")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the bot's own messages to stderr")
    parser.add_argument(
        "--since",
        type=parse_window,
        help="export: the period whose approved and edited conversations become cases (default 30d)",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="export: the folder of the new cases.jsonl (default evals/exported)"
    )
    parser.set_defaults(handler=_run)
