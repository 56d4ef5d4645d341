"""The report as one HTML page with its charts drawn here as SVG (no script, no chart library):
``supportbot report --html FILE`` writes it with its stylesheet inline; the bot serves it at
``/report`` with the stylesheet as a file of its own (the playground's Content-Security-Policy
allows styles only from the server, and no script is needed)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from bot.insight.figures import COUNTED, VERDICTS, Durations, Rates, Report
from bot.insight.text import COUNT_LABELS, VERDICT_LABELS, csat, duration, period, share, usd

STYLESHEET = Path(__file__).with_name("report.css")


def _bar(parts: list[tuple[str, float, str]]) -> str:
    """One horizontal bar, 100 units wide, of (css class, share, tooltip) segments."""
    x, rects = 0.0, []
    for kind, part, title in parts:
        if part <= 0:
            continue
        rects.append(
            f'<rect class="{kind}" x="{x:.3f}" y="0" width="{100 * part:.3f}" height="10">'
            f"<title>{escape(title)}</title></rect>"
        )
        x += 100 * part
    return (
        '<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-hidden="true">'
        f'<rect class="track" x="0" y="0" width="100" height="10"/>{"".join(rects)}</svg>'
    )


def _rates_chart(title: str, rows: list[Rates]) -> str:
    if not rows:
        return f'<section class="panel"><h2>{escape(title)}</h2><p class="none">No decisions.</p></section>'
    lines = []
    for r in rows:
        parts = [
            (str(v), r.share(v), f"{VERDICT_LABELS[v]}: {r.counts.get(v, 0)} of {r.decided} ({share(r.share(v))})")
            for v in VERDICTS
        ]
        lines.append(
            f'<div class="row"><span class="label" title="{escape(r.group)}">{escape(r.group)}</span>'
            f'{_bar(parts)}<span class="n">{share(r.share(VERDICTS[0]))} · {r.decided}</span></div>'
        )
    return f'<section class="panel"><h2>{escape(title)}</h2>{"".join(lines)}</section>'


def _histogram(buckets: list[tuple[str, int]]) -> str:
    most = max([n for _, n in buckets] + [1])
    total = sum(n for _, n in buckets)
    lines = [
        f'<div class="row"><span class="label">{escape(label)}</span>'
        f'{_bar([("distance", n / most, f"{label}: {n}")])}<span class="n">{n}</span></div>'
        for label, n in buckets
    ]
    return (
        f'<section class="panel"><h2>Edit distance of sent replies <small>n={total}</small></h2>'
        '<p class="hint">0 = sent as drafted, 1 = rewritten entirely (normalised character Levenshtein)</p>'
        f"{''.join(lines)}</section>"
    )


_NO_ANSWERS = '<p class="none">No answers yet.</p>'


def _feedback(report: Report) -> str:
    f = report.feedback
    rows = [
        f'<div class="row"><span class="label" title="{escape(g.group)}">{escape(g.group)}</span>'
        + _bar([("approve", g.up_share, f"thumbs up: {g.up}"), ("reject", 1 - g.up_share, f"thumbs down: {g.down}")])
        + f'<span class="n">{share(g.up_share)} · {g.answers}</span></div>'
        for g in f.by_category
    ]
    t = f.overall
    summary = f"thumbs up {t.up} · down {t.down}" + (f" ({share(t.up_share)} up)" if t.answers else "")
    return (
        '<section class="panel"><h2>Customer feedback</h2>'
        f'<p class="hint">{escape(summary)} · CSAT {escape(csat(report))}</p>'
        f"{''.join(rows) or _NO_ANSWERS}</section>"
    )


def _timing_row(name: str, d: Durations) -> str:
    return (
        f'<tr><th scope="row">{escape(name)}</th><td>{d.count}</td>'
        f"<td>{duration(d.p50)}</td><td>{duration(d.p90)}</td></tr>"
    )


def _tile(value: str, label: str) -> str:
    return f'<div class="tile"><strong>{escape(value)}</strong><span>{escape(label)}</span></div>'


def _legend() -> str:
    items = "".join(
        f'<li><svg viewBox="0 0 10 10" aria-hidden="true"><rect class="{v}" width="10" height="10"/></svg>'
        f"{VERDICT_LABELS[v]}</li>"
        for v in VERDICTS
    )
    return f'<ul class="legend">{items}</ul>'


def render_html(report: Report, *, stylesheet_href: str | None = None) -> str:
    """The page. ``stylesheet_href``: link the stylesheet there; None: inline it (a file of its own)."""
    style = (
        f'<link rel="stylesheet" href="{escape(stylesheet_href)}">'
        if stylesheet_href
        else f"<style>{STYLESHEET.read_text(encoding='utf-8')}</style>"
    )
    o = report.overall
    tiles = "".join(
        [
            _tile(str(o.decided), "drafts decided"),
            _tile(share(o.share(VERDICTS[0])) if o.decided else "–", "approved as drafted"),
            _tile(duration(report.decision.p50), "median time to decision"),
            _tile(duration(report.first_response.p50), "median first response"),
            _tile(usd(report.cost_per_resolved_microusd), "per resolved conversation"),
        ]
    )
    charts = "".join(_rates_chart(f"By {name}", rows) for name, rows in report.by.items())
    r = report.resolved
    counts = "".join(
        f'<tr><th scope="row">{escape(COUNT_LABELS[kind])}</th><td>{report.counts.get(kind, 0)}</td></tr>'
        for kind in COUNTED
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>supportbot report</title>
{style}
</head>
<body>
<header><h1>supportbot report</h1><p>{escape(period(report))}</p></header>
<main>
<section class="tiles">{tiles}</section>
<section class="rates"><div class="rates-head"><h2>Decisions</h2>{_legend()}</div>
<p class="hint">Share of decided drafts by what the agent did; the figure is the share approved as drafted ·
drafts decided.</p>
<div class="grid">{charts}</div></section>
<div class="grid">
<div class="stack">{_histogram(report.edit_distances)}{_feedback(report)}</div>
<section class="panel"><h2>Timings</h2>
<table><thead><tr><th></th><th>n</th><th>p50</th><th>p90</th></tr></thead><tbody>
{_timing_row("Time to first response", report.first_response)}
{_timing_row("Time to decision", report.decision)}
</tbody></table>
<p class="hint">{report.unanswered} conversation(s) not answered yet.</p>
<h2>Cost</h2>
<table><tbody>
<tr><th scope="row">per resolved conversation</th><td>{usd(report.cost_per_resolved_microusd)}</td></tr>
<tr><th scope="row">resolved conversations</th><td>{r.conversations}</td></tr>
<tr><th scope="row">their model calls in all</th><td>{usd(r.cost_microusd)} · {r.tokens:,} tokens</td></tr>
</tbody></table>
<h2>Without a card</h2>
<table><tbody>{counts}</tbody></table>
</section>
</div>
</main>
</body>
</html>
"""
