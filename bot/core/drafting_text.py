"""Small text rules of drafting: when to call the on-call group, how to cut a long draft."""

from __future__ import annotations

from bot.policy import Policy


def escalation_reasons(policy: Policy, text: str, failed_drafts: int) -> str:
    """Why the on-call group is needed for this message, if at all."""
    rules = policy.escalation
    lowered = text.lower()
    reasons = [f"keyword {k!r}" for k in rules.keywords if k.lower() in lowered]
    if any(p.lower() in lowered for p in rules.human_request_phrases):
        reasons.append("the customer asks for a human")
    if failed_drafts >= rules.max_failed_drafts:
        reasons.append(f"{failed_drafts} failed drafts in a row")
    return "; ".join(reasons)


def fit(text: str, limit: int) -> str:
    """Cut a too-long draft at a paragraph (or sentence) boundary."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    for sep in ("\n\n", "\n", ". "):
        index = cut.rfind(sep)
        if index > limit // 2:
            return cut[: index + (1 if sep == ". " else 0)].rstrip()
    return cut.rstrip()
