"""The budget a model call reserves against (:class:`bot.core.budget.DraftBudget`), built for one
conversation: the worst case a call may cost (at the dearer of the model and its fallback), what
was spent since the day began in all and by this customer, and the reservations every instance's
calls hold meanwhile. Drafting's calls hold under the draft's id; the translator's hold their own."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.core.budget import DraftBudget, Reservations, Spent
from bot.kimi import KimiClient, estimate_prompt_tokens
from bot.policy import Policy
from bot.settings import Settings
from bot.store import Database, outcomes
from bot.store.conversations import ConversationState


class Budgets:
    """Builds the budget of each model call."""

    def __init__(self, settings: Settings, db: Database, kimi: KimiClient) -> None:
        self.db = db
        self.kimi = kimi
        self.fallback = settings.kimi_fallback_model
        self.reservations = Reservations()

    def for_call(self, hold: str, conversation: ConversationState, policy: Policy) -> DraftBudget:
        """The budget a model call for ``conversation`` reserves against, held as ``hold``."""
        platform, customer = conversation.thread.platform, conversation.customer_id or conversation.id
        prices, fallback = self.kimi.prices, self.fallback

        def worst_case(model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, out: int) -> int:
            prompt = estimate_prompt_tokens(messages, tools)
            # the client may move the call to the fallback model: reserve at the dearer of the two
            return max(
                prices.microusd(m, prompt_tokens=prompt, cached_tokens=0, completion_tokens=out)
                for m in {model, fallback or model}
            )

        async def read_spent(start: datetime) -> Spent:
            async with self.db.read() as conn:
                total = await outcomes.spent_since(conn, start)
                mine = await outcomes.spent_by_customer_since(conn, platform, customer, start)
            return Spent(total, mine)

        tenant = f"{platform}:{customer}"
        return DraftBudget(self.reservations, hold, tenant, policy.limits, read_spent, worst_case)
