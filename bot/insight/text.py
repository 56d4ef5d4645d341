"""The report as terminal text (``supportbot report``), and the small formatters the HTML
page shares: durations, money, shares."""

from __future__ import annotations

from bot.insight.figures import COUNTED, VERDICTS, Durations, Rates, Report

#: How each count is named on both outputs.
COUNT_LABELS = {
    "no_reply": "no reply needed (no card)",
    "take_over": "conversations taken over by an agent",
    "answered_by_hand": "answered by hand in the thread",
}
VERDICT_LABELS = {"approve": "approved", "edit": "edited", "reject": "rejected", "regenerate": "regenerated"}


def duration(seconds: float | None) -> str:
    """``0.4s``, ``42s``, ``3m 20s``, ``2h 05m``; ``–`` when nothing was measured."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def usd(microusd: int | None) -> str:
    return "–" if microusd is None else f"${microusd / 1e6:.4f}"


def share(value: float) -> str:
    return f"{value:.0%}"


def period(report: Report) -> str:
    days = (report.until - report.since).total_seconds() / 86400
    span = f"{days:g} days" if days >= 1 else duration((report.until - report.since).total_seconds())
    return f"{report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} UTC ({span})"


def _rates_table(title: str, rows: list[Rates]) -> list[str]:
    width = max([len(title), *(len(r.group) for r in rows)])
    head = f"{title:<{width}}  {'decided':>7}" + "".join(f"  {VERDICT_LABELS[v]:>11}" for v in VERDICTS)
    lines = [head]
    for r in rows:
        lines.append(f"{r.group:<{width}}  {r.decided:>7}" + "".join(f"  {share(r.share(v)):>11}" for v in VERDICTS))
    if not rows:
        lines.append("(no decisions)")
    return lines


def _timing(name: str, d: Durations) -> str:
    return f"{name:<24} n={d.count:<5} p50 {duration(d.p50):>8}   p90 {duration(d.p90):>8}"


def format_report(report: Report) -> list[str]:
    """The report, one line per list item."""
    o = report.overall
    lines = [f"supportbot report: {period(report)}", ""]
    if o.decided:
        shares = ", ".join(f"{VERDICT_LABELS[v]} {share(o.share(v))}" for v in VERDICTS)
        lines.append(f"{o.decided} drafts decided: {shares}")
    else:
        lines.append("No draft was decided in this period.")
    for name, rows in report.by.items():
        lines += ["", *_rates_table(f"by {name}", rows)]
    unanswered = f"  ({report.unanswered} not answered yet)" if report.unanswered else ""
    lines += [
        "",
        _timing("time to first response", report.first_response) + unanswered,
        _timing("time to decision", report.decision),
        "",
        "edit distance of sent replies (0 = sent as drafted, 1 = all rewritten),"
        f" n={sum(n for _, n in report.edit_distances)}",
    ]
    most = max([n for _, n in report.edit_distances] + [1])
    for label, n in report.edit_distances:
        lines.append(f"  {label:<10} {n:>5}  {'#' * round(20 * n / most)}".rstrip())
    r = report.resolved
    tokens = report.tokens_per_resolved
    lines += [
        "",
        f"cost per resolved conversation: {usd(report.cost_per_resolved_microusd)}"
        f" ({r.conversations} resolved, {usd(r.cost_microusd)} in all"
        + (f", {tokens:,} tokens each on average)" if tokens is not None else ")"),
        "",
        *_feedback(report),
        "",
        *(f"{COUNT_LABELS[kind]}: {report.counts.get(kind, 0)}" for kind in COUNTED),
    ]
    return lines


def csat(report: Report) -> str:
    f = report.feedback
    return "–" if f.csat_mean is None else f"{f.csat_mean:.1f} of 5 (n={len(f.csat)})"


def _feedback(report: Report) -> list[str]:
    f = report.feedback
    t = f.overall
    lines = [
        f"customer feedback: thumbs up {t.up}, down {t.down}"
        + (f" ({share(t.up_share)} up)" if t.answers else "")
        + f"; CSAT {csat(report)}"
    ]
    if f.by_category:
        width = max(len("by category"), *(len(g.group) for g in f.by_category))
        lines.append(f"  {'by category':<{width}}  {'answers':>7}  {'up':>5}")
        lines += [f"  {g.group:<{width}}  {g.answers:>7}  {share(g.up_share):>5}" for g in f.by_category]
    return lines
