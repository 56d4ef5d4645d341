"""The tables and the JSON of an evaluation run, and the comparison of two runs.

Per category and overall: pass^1 .. pass^k (τ-bench: C(c, k) / C(n, k) per case, averaged over
cases), trials with a policy violation and the number of violations, model calls, prompt /
cached / completion tokens and cost (from the core's usage ledger), and the median time to the
first draft card.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from bot.evaluation.scoring import TrialResult, pass_hat_k

__all__ = ["compare", "render_compare", "render_table", "summarize"]

OVERALL = "overall"


def _group(results: list[TrialResult], k: int) -> dict[str, Any]:
    per_case: dict[str, list[TrialResult]] = defaultdict(list)
    for result in results:
        if not result.violations_only:  # counted for its violations below, not its passes
            per_case[result.case_id].append(result)
    pass_hat = []
    for j in range(1, k + 1):
        values = [pass_hat_k(sum(r.passed for r in trials), len(trials), j) for trials in per_case.values()]
        pass_hat.append(round(sum(values) / len(values), 4) if values else 0.0)
    firsts = [r.first_draft_seconds for r in results if r.first_draft_seconds is not None]
    return {
        "cases": len(per_case),
        "violations_only_cases": len({r.case_id for r in results if r.violations_only}),
        "trials": len(results),
        "pass_hat_k": pass_hat,
        "trials_with_violations": sum(1 for r in results if r.violations),
        "violations": sum(len(r.violations) for r in results),
        "model_calls": sum(r.model_calls for r in results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "cached_tokens": sum(r.cached_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "cost_usd": round(sum(r.cost_usd for r in results), 6),
        "first_draft_seconds_median": round(statistics.median(firsts), 3) if firsts else None,
    }


def summarize(results: list[TrialResult], k: int, run: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of a run (``--json``): summary, per-case pass counts, every trial."""
    categories: dict[str, list[TrialResult]] = defaultdict(list)
    for result in results:
        categories[result.category].append(result)
    per_case: dict[str, dict[str, Any]] = {}
    for result in results:
        entry = per_case.setdefault(
            result.case_id,
            {
                "category": result.category,
                "trials": 0,
                "passes": 0,
                "violations": 0,
                "failures": [],
                "violations_only": result.violations_only,
            },
        )
        entry["trials"] += 1
        entry["passes"] += int(result.passed)
        entry["violations"] += len(result.violations)
        for failure in result.failures:
            if failure not in entry["failures"]:
                entry["failures"].append(failure)
    return {
        "run": {**run, "k": k},
        "summary": {
            OVERALL: _group(results, k),
            "categories": {name: _group(group, k) for name, group in sorted(categories.items())},
        },
        "cases": per_case,
        "trials": [r.as_json() for r in results],
    }


def _fmt_tokens(value: int) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else str(value)


def render_table(document: dict[str, Any]) -> str:
    """The run as a Markdown table, one row per category and one overall."""
    k = int(document["run"]["k"])
    header = ["category", "cases", *[f"pass^{j}" for j in range(1, k + 1)], "violations", "calls", "prompt",
              "cached", "completion", "cost $", "1st draft s"]  # fmt: skip
    rows = []
    summary = document["summary"]
    for name, group in [*summary["categories"].items(), (f"**{OVERALL}**", summary[OVERALL])]:
        ttfd = group["first_draft_seconds_median"]
        rows.append(
            [
                name,
                str(group["cases"])
                + (f" (+{group['violations_only_cases']} ungated)" if group["violations_only_cases"] else ""),
                *[f"{v:.3f}" for v in group["pass_hat_k"]],
                f"{group['violations']} ({group['trials_with_violations']} trials)",
                str(group["model_calls"]),
                _fmt_tokens(group["prompt_tokens"]),
                _fmt_tokens(group["cached_tokens"]),
                _fmt_tokens(group["completion_tokens"]),
                f"{group['cost_usd']:.4f}",
                "-" if ttfd is None else f"{ttfd:.2f}",
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]
    return "\n".join(out)


def render_failures(document: dict[str, Any], limit: int = 40) -> str:
    """Cases that did not pass every trial, and every violation, one line each."""
    lines = []
    for case_id, entry in document["cases"].items():
        if entry["passes"] < entry["trials"]:
            why = "; ".join(entry["failures"][:3])
            kind = "UNGATED (needs a real model)" if entry.get("violations_only") else "FAIL"
            lines.append(f"{kind} {case_id} ({entry['passes']}/{entry['trials']}): {why}")
    seen: set[tuple[str, str]] = set()
    for trial in document["trials"]:
        for violation in trial["violations"]:
            if (trial["case"], violation) not in seen:
                seen.add((trial["case"], violation))
                lines.append(f"VIOLATION {trial['case']}: {violation}")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more (see --json)"]
    return "\n".join(lines)


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from run A to run B: per group, and the cases whose pass count moved."""
    k = min(int(a["run"]["k"]), int(b["run"]["k"]))
    groups = {}
    names = sorted(set(a["summary"]["categories"]) | set(b["summary"]["categories"]))
    for name in [*names, OVERALL]:
        left = a["summary"][OVERALL] if name == OVERALL else a["summary"]["categories"].get(name)
        right = b["summary"][OVERALL] if name == OVERALL else b["summary"]["categories"].get(name)
        groups[name] = {"a": left, "b": right}
    changed = []
    for case_id in sorted(set(a["cases"]) | set(b["cases"])):
        left, right = a["cases"].get(case_id), b["cases"].get(case_id)
        ratio_a = None if left is None else left["passes"] / left["trials"]
        ratio_b = None if right is None else right["passes"] / right["trials"]
        violations_a = 0 if left is None else left["violations"]
        violations_b = 0 if right is None else right["violations"]
        if ratio_a != ratio_b or violations_a != violations_b:
            changed.append({"case": case_id, "a": left, "b": right})
    return {"k": k, "a": a["run"], "b": b["run"], "groups": groups, "changed": changed}


def _pair(diff: dict[str, Any], index: int) -> str:
    a, b = diff["a"], diff["b"]
    if a is None or b is None:
        return "new" if a is None else "gone"
    va, vb = a["pass_hat_k"][index], b["pass_hat_k"][index]
    return f"{va:.3f} → {vb:.3f} ({vb - va:+.3f})"


def render_compare(result: dict[str, Any]) -> str:
    """The comparison as a table and a list of changed cases."""
    k = result["k"]
    label_a = f"{result['a'].get('model')} {result['a'].get('policy', '')}".strip()
    label_b = f"{result['b'].get('model')} {result['b'].get('policy', '')}".strip()
    lines = [f"A: {label_a}", f"B: {label_b}", ""]
    header = ["group", "pass^1", f"pass^{k}", "violations", "calls", "cost $"]
    rows = []
    for name, diff in result["groups"].items():
        a, b = diff["a"], diff["b"]
        both = a is not None and b is not None
        violations = f"{a['violations']} → {b['violations']}" if both else "-"
        calls = f"{a['model_calls']} → {b['model_calls']}" if both else "-"
        cost = f"{a['cost_usd']:.4f} → {b['cost_usd']:.4f}" if both else "-"
        rows.append([name, _pair(diff, 0), _pair(diff, k - 1), violations, calls, cost])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    if result["changed"]:
        lines.append("")
        lines.append("changed cases:")
        for change in result["changed"]:
            a, b = change["a"], change["b"]
            left = "absent" if a is None else f"{a['passes']}/{a['trials']} passed, {a['violations']} violations"
            right = "absent" if b is None else f"{b['passes']}/{b['trials']} passed, {b['violations']} violations"
            lines.append(f"  {change['case']}: {left} → {right}")
    else:
        lines.append("\nno case changed")
    return "\n".join(lines)
